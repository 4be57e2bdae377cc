"""The end-to-end demo: synthetic data -> train from scratch -> COCO evaluation -> a picture of predictions.

Runs anywhere (CPU, no downloads) through the same mmengine Runner that ``mim train``/``mim test`` use.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from .configs import config_root
from .data import make_synthetic_coco

DEMO_CONFIG = config_root() / 'demo' / 'deformable-detr_pit-ti_synthetic_cpu.py'


def load_demo_config(
    data_root: str | Path, work_dir: str | Path, max_epochs: int | None = None, config: str | Path = DEMO_CONFIG
):
    """The demo config with its data root, work dir and (optionally) epoch count replaced."""
    from mmengine.config import Config

    if not Path(config).is_file():
        raise FileNotFoundError(
            f'{config} not found: reinstall pit-det (its wheel carries the configs under pit_det/.mim/configs).'
        )
    cfg = Config.fromfile(str(config))
    root = str(Path(data_root)) + '/'
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = root
    cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = root + 'annotations/val.json'
    cfg.work_dir = str(work_dir)
    if max_epochs is not None:
        cfg.train_cfg.max_epochs = max_epochs
        cfg.train_cfg.val_interval = min(cfg.train_cfg.val_interval, max_epochs)
        cfg.default_hooks.checkpoint.interval = min(cfg.default_hooks.checkpoint.interval, max_epochs)
    return cfg


def _most_varied_val_image(data_root: Path) -> Path:
    """The first validation image holding the most distinct classes: the most telling picture."""
    ann = json.loads((data_root / 'annotations' / 'val.json').read_text())
    classes = {img['id']: set() for img in ann['images']}
    for a in ann['annotations']:
        classes[a['image_id']].add(a['category_id'])
    best = max(ann['images'], key=lambda img: (len(classes[img['id']]), -img['id']))
    return data_root / 'val' / best['file_name']


def best_checkpoint(runner) -> tuple[Path, int]:
    """The checkpoint that scored best at validation (mmengine's ``save_best``) and its epoch; the last epoch's
    checkpoint when no validation ran."""
    best = runner.message_hub.get_info('best_ckpt')
    if best:
        match = re.search(r'epoch_(\d+)\.pth$', best)
        return Path(best), int(match.group(1)) if match else runner.epoch
    return Path(runner.work_dir) / f'epoch_{runner.epoch}.pth', runner.epoch


def check_folders(**folders: str | Path) -> None:
    """Raise ``ValueError`` naming the option (``data_root`` -> ``--data-root``) of any folder that is a file."""
    for option, folder in folders.items():
        if Path(folder).exists() and not Path(folder).is_dir():
            raise ValueError(
                f'--{option.replace("_", "-")} {folder} is a file: give a folder (new, or one this command made before)'
            )


def run_demo(
    work_dir: str | Path = 'work_dirs/demo',
    data_root: str | Path = 'data/synthetic',
    max_epochs: int | None = None,
    seed: int = 0,
) -> dict:
    """Generate the data, train, evaluate and draw with the best checkpoint; returns the metrics and paths."""
    if max_epochs is not None and max_epochs < 1:
        raise ValueError(f'epochs must be at least 1, got {max_epochs}')
    check_folders(data_root=data_root, work_dir=work_dir)
    from mmdet.registry import RUNNERS
    from mmdet.utils import register_all_modules

    from .draw import draw_detections

    register_all_modules()
    work_dir, data_root = Path(work_dir), Path(data_root)
    print(f'[1/4] generating synthetic COCO data in {data_root}', flush=True)
    make_synthetic_coco(data_root, seed=seed)
    cfg = load_demo_config(data_root, work_dir, max_epochs)
    cfg.randomness = dict(seed=seed)
    print(
        f'[2/4] training {DEMO_CONFIG.relative_to(DEMO_CONFIG.parents[2])} for {cfg.train_cfg.max_epochs} epochs '
        f'(logs and checkpoints in {work_dir})',
        flush=True,
    )
    start = time.time()
    runner = RUNNERS.build(cfg)
    runner.train()
    train_s = time.time() - start
    checkpoint, epoch = best_checkpoint(runner)
    print(
        f'[3/4] evaluating the best checkpoint ({checkpoint.name}, epoch {epoch}) on the validation set '
        '(COCO bbox, pycocotools)',
        flush=True,
    )
    runner.load_checkpoint(str(checkpoint))
    metrics = {k: float(v) for k, v in runner.test().items()}
    image = _most_varied_val_image(data_root)
    picture = work_dir / 'predictions.png'
    print(f'[4/4] drawing predictions on {image}', flush=True)
    config_dump = work_dir / 'demo_config.py'
    cfg.dump(str(config_dump))
    count = draw_detections(config_dump, checkpoint, image, picture, force=True)  # the demo's own picture
    result = dict(
        metrics=metrics,
        train_seconds=round(train_s, 1),
        checkpoint=str(checkpoint),
        epoch=epoch,
        picture=str(picture),
        detections_drawn=count,
        config=str(config_dump),
    )
    (work_dir / 'metrics.json').write_text(json.dumps(result, indent=2))
    return result
