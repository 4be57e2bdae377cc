"""How fast each head learns: the two CPU demos (Deformable DETR and DINO, the same PiT-Ti, widths, queries, data and
batch) trained side by side on one generated set, validated after every epoch.

The claim it tests: DINO reaches Deformable DETR's final box AP in half the epochs (both see the same images, in the
same number; each head keeps its own recipe's learning rate, scaled alike). :func:`run_convergence` writes the AP per
epoch of both, what the claim comes to, and a plot.

Two budgets (:data:`BUDGETS`): ``same``, both heads for the same epochs at a constant learning rate (the heads
compared, not their schedules); ``dataset-config``, each head the config ``pit-det-dataset-config`` writes for the
generated set over its demo (the epochs it chooses for the set's size and its learning-rate step): what a user of that
command trains.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..configs import config_root
from ..outputs import save_figure, write_text

HEADS = {
    'Deformable DETR': config_root() / 'demo' / 'deformable-detr_pit-ti_synthetic_cpu.py',
    'DINO': config_root() / 'demo' / 'dino-4scale_pit-ti_synthetic_cpu.py',
}
REPORT_FILES = ('convergence.json', 'convergence.png')
BUDGETS = ('same', 'dataset-config')
WRITTEN = 'dataset_config.py'  # the written config, in each head's folder of the out dir


def _record_hook(curve: list[dict], start: float):
    from mmengine.hooks import Hook

    class RecordValidation(Hook):
        """Appends each validation's COCO box AP, the epoch and the training time so far to ``curve``."""

        priority = 'LOWEST'

        def after_val_epoch(self, runner, metrics=None) -> None:
            metrics = metrics or {}
            curve.append(
                dict(
                    epoch=runner.epoch,
                    bbox_mAP=float(metrics.get('coco/bbox_mAP', float('nan'))),
                    bbox_mAP_50=float(metrics.get('coco/bbox_mAP_50', float('nan'))),
                    seconds=round(time.time() - start, 1),
                )
            )

    return RecordValidation()


def train_curve(config: str | Path, data_root: str | Path, work_dir: str | Path, epochs: int, seed: int) -> list[dict]:
    """Train ``config`` (a demo config) for ``epochs`` on ``data_root``, validating after every epoch; returns the
    AP of each validation (``epoch``, ``bbox_mAP``, ``bbox_mAP_50``, ``seconds`` of training and validation so far)."""
    from ..demo import load_demo_config

    cfg = load_demo_config(data_root, work_dir, epochs, config=config)
    cfg.param_scheduler = []  # both heads at a constant lr for all epochs: the study compares heads, not schedules
    return _validated_every_epoch(cfg, seed)


def written_config(head: str, data_root: str | Path, folder: str | Path) -> Path:
    """Write ``folder/dataset_config.py``: what ``pit-det-dataset-config`` writes for the generated set in
    ``data_root`` over the ``head`` demo (:data:`HEADS`), with the schedule it chooses for the set's size."""
    from ..data.coco import read_coco
    from ..data.dataset_config import read_base, write_config

    root, out = Path(data_root).resolve(), Path(folder) / WRITTEN
    out.parent.mkdir(parents=True, exist_ok=True)
    train, val = (read_coco(root / 'annotations' / f'{part}.json') for part in ('train', 'val'))
    write_config(out, read_base(HEADS[head]), train, root / 'train', val, root / 'val')
    return out


def train_written_curve(config: str | Path, work_dir: str | Path, seed: int) -> tuple[list[dict], dict]:
    """Train a config :func:`written_config` wrote as it stands (its epochs, its learning-rate step), validating after
    every epoch; returns the curve (as :func:`train_curve`) and the schedule (``epochs``, ``lr_step``)."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(config))
    cfg.work_dir = str(work_dir)
    schedule = dict(epochs=cfg.train_cfg.max_epochs, lr_step=cfg.param_scheduler[0]['milestones'][0])
    return _validated_every_epoch(cfg, seed), schedule


def _validated_every_epoch(cfg, seed: int) -> list[dict]:
    from mmdet.registry import RUNNERS

    epochs = cfg.train_cfg.max_epochs
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=epochs, max_keep_ckpts=1)  # the last only
    cfg.randomness = dict(seed=seed)
    curve: list[dict] = []
    runner = RUNNERS.build(cfg)
    runner.register_hook(_record_hook(curve, time.time()))
    runner.train()
    return curve


def epochs_to_reach(curve: list[dict], target: float) -> int | None:
    """The first epoch whose AP is at least ``target``; None if none is."""
    return next((point['epoch'] for point in curve if point['bbox_mAP'] >= target), None)


def verdict(curves: dict[str, list[dict]]) -> dict:
    """What the claim comes to: Deformable DETR's final AP, the epoch DINO first reaches it, and whether that is
    within half the epochs."""
    ddetr, dino = curves['Deformable DETR'], curves['DINO']
    target = ddetr[-1]['bbox_mAP']
    reached = epochs_to_reach(dino, target)
    epochs = ddetr[-1]['epoch']
    return dict(
        deformable_detr_final_ap=target,
        dino_final_ap=dino[-1]['bbox_mAP'],
        epochs=epochs,
        dino_epoch_reaching_it=reached,
        holds=reached is not None and reached <= epochs / 2,
    )


def plot(curves: dict[str, list[dict]], path: Path, title: str, images_per_epoch: int) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot([p['epoch'] for p in curve], [p['bbox_mAP'] for p in curve], marker='o', ms=3, label=name)
    ax.set_xlabel(f'epoch ({images_per_epoch} images each)')
    ax.set_ylabel('val box AP (COCO, pycocotools)')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path, dpi=120)


def run_convergence(
    out_dir: str | Path,
    data_root: str | Path,
    epochs: int | None,
    seed: int,
    num_train: int = 256,
    num_val: int = 32,
    budget: str = 'same',
) -> dict:
    """Generate the set (``seed``; the demo's sizes by default) in ``data_root``, train both demos into
    ``out_dir/<head>`` (``budget`` ``same``: ``epochs`` each; ``dataset-config``: each the config
    :func:`written_config` writes there), and write :data:`REPORT_FILES`; returns what ``convergence.json`` holds."""
    if budget not in BUDGETS:
        raise ValueError(f'--budget {budget}: use one of {", ".join(BUDGETS)}')
    if (epochs is None) != (budget == 'dataset-config'):
        raise ValueError('--epochs goes with --budget same (the written config chooses its own)')
    from mmdet.utils import register_all_modules

    from ..data import make_synthetic_coco
    from ..demo import check_folders
    from ..ops.ms_deform_attn import cpu_isa, cpu_model_and_flags

    check_folders(out_dir=out_dir, data_root=data_root)
    register_all_modules()
    out_dir, data_root = Path(out_dir), Path(data_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    make_synthetic_coco(data_root, num_train=num_train, num_val=num_val, seed=seed)
    curves, schedules = {}, {}
    for name, config in HEADS.items():
        if budget == 'same':
            print(f'training {config.name} for {epochs} epochs', flush=True)
            curves[name] = train_curve(config, data_root, out_dir / config.stem, epochs, seed)
            schedules[name] = dict(epochs=epochs, lr_step=None)
        else:
            written = written_config(name, data_root, out_dir / config.stem)
            print(f'training {written}, as pit-det-dataset-config wrote it over {config.name}', flush=True)
            curves[name], schedules[name] = train_written_curve(written, out_dir / config.stem, seed)
    import torch

    machine = f'{cpu_model_and_flags()[0]}, {cpu_isa()[0]}, {torch.get_num_threads()} threads'
    result = dict(
        seed=seed,
        budget=budget,
        epochs=epochs,
        schedules=schedules,
        train_images=num_train,
        val_images=num_val,
        data_root=str(data_root),
        machine=machine,
        date=time.strftime('%Y-%m-%d'),
        configs={k: str(v.relative_to(config_root().parent)) for k, v in HEADS.items()},
        curves=curves,
        verdict=verdict(curves),
    )
    write_text(out_dir / 'convergence.json', json.dumps(result, indent=2))
    plot(
        curves,
        out_dir / 'convergence.png',
        f'PiT-Ti demos, synthetic set seed {seed}; {machine}, {result["date"]}',
        num_train,
    )
    return result
