"""The end-to-end demo: synthetic data -> train from scratch -> COCO evaluation -> a picture of predictions.

Runs anywhere (CPU, no downloads) through the same mmengine Runner that ``mim train``/``mim test`` use.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .data import make_synthetic_coco

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / 'configs' / 'demo' / 'deformable-detr_pit-ti_synthetic_cpu.py'


def load_demo_config(data_root: str | Path, work_dir: str | Path, max_epochs: int | None = None,
                     config: str | Path = DEMO_CONFIG):
    """The demo config with its data root, work dir and (optionally) epoch count replaced."""
    from mmengine.config import Config

    if not Path(config).is_file():
        raise FileNotFoundError(f'{config} not found: the demo runs from a checkout of pit-det (configs/ is not '
                                'part of the installed package).')
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


def run_demo(work_dir: str | Path = 'work_dirs/demo', data_root: str | Path = 'data/synthetic',
             max_epochs: int | None = None, seed: int = 0) -> dict:
    """Generate the data, train, evaluate, draw; returns the metrics and the paths written."""
    from mmdet.registry import RUNNERS
    from mmdet.utils import register_all_modules

    from .infer import draw_detections

    register_all_modules()
    work_dir, data_root = Path(work_dir), Path(data_root)
    print(f'[1/4] generating synthetic COCO data in {data_root}', flush=True)
    make_synthetic_coco(data_root, seed=seed)
    cfg = load_demo_config(data_root, work_dir, max_epochs)
    cfg.randomness = dict(seed=seed)
    print(f'[2/4] training {DEMO_CONFIG.relative_to(REPO)} for {cfg.train_cfg.max_epochs} epochs '
          f'(logs and checkpoints in {work_dir})', flush=True)
    start = time.time()
    runner = RUNNERS.build(cfg)
    runner.train()
    train_s = time.time() - start
    checkpoint = work_dir / f'epoch_{cfg.train_cfg.max_epochs}.pth'
    print('[3/4] evaluating on the validation set (COCO bbox, pycocotools)', flush=True)
    metrics = {k: float(v) for k, v in runner.test().items()}
    image = _most_varied_val_image(data_root)
    picture = work_dir / 'predictions.png'
    print(f'[4/4] drawing predictions on {image}', flush=True)
    config_dump = work_dir / 'demo_config.py'
    cfg.dump(str(config_dump))
    count = draw_detections(config_dump, checkpoint, image, picture)
    result = dict(metrics=metrics, train_seconds=round(train_s, 1), checkpoint=str(checkpoint),
                  picture=str(picture), detections_drawn=count, config=str(config_dump))
    (work_dir / 'metrics.json').write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/synthetic')
    parser.add_argument('--epochs', type=int, default=None, help='override the config (default: its max_epochs)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    result = run_demo(args.work_dir, args.data_root, args.epochs, args.seed)
    m = result['metrics']
    print(f"\nval bbox mAP {m.get('coco/bbox_mAP', float('nan')):.3f}, "
          f"mAP_50 {m.get('coco/bbox_mAP_50', float('nan')):.3f} after {result['train_seconds']:.0f} s of training")
    print(f"checkpoint: {result['checkpoint']}\nmetrics:    {Path(args.work_dir) / 'metrics.json'}\n"
          f"picture:    {result['picture']} ({result['detections_drawn']} detections drawn)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
