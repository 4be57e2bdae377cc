"""Checks a run makes before it builds anything: data, annotations, classes, evaluator files and weights.

Without them a missing ``data/coco``, a class list that matches no annotation, or an evaluator scoring against
another dataset's ground truth surfaces as a traceback minutes (or an epoch) into a run, or not at all.
:class:`pit_det.runner.CheckedRunner` calls :func:`check_train` and :func:`check_test`.
"""

from __future__ import annotations

import json
import os
import os.path as osp
from dataclasses import dataclass, field

from mmengine.logging import print_log

from .model import check_model, check_structure  # noqa: F401  (the runner's and the tools' entry)

COCO_LAYOUT = """expected COCO layout (data_root, default data/coco/):
    data/coco/annotations/instances_train2017.json
    data/coco/annotations/instances_val2017.json
    data/coco/train2017/*.jpg
    data/coco/val2017/*.jpg
Link or copy COCO 2017 there (e.g. `ln -s /datasets/coco data/coco`), or point the config elsewhere with
--cfg-options train_dataloader.dataset.data_root=DIR val_dataloader.dataset.data_root=DIR \
test_dataloader.dataset.data_root=DIR val_evaluator.ann_file=DIR/annotations/instances_val2017.json \
test_evaluator.ann_file=DIR/annotations/instances_val2017.json"""


class PreflightError(RuntimeError):
    """A run cannot start (missing data, classes, evaluator files, weights, options); the message lists every
    problem and what to do."""


@dataclass
class Findings:
    data_problems: list[str] = field(default_factory=list)  # missing or broken data: the layout hint applies
    config_problems: list[str] = field(default_factory=list)  # classes, evaluator files, weights

    def raise_if_any(self, hint: str = COCO_LAYOUT) -> None:
        problems = self.data_problems + self.config_problems
        if problems:
            raise PreflightError(
                '\n'.join(['cannot start:'] + [f'  - {p}' for p in problems] + ([hint] if self.data_problems else []))
            )


def _dataset(loader_cfg) -> dict | None:
    if not loader_cfg:
        return None
    from ..data.coco import unwrap_dataset

    return unwrap_dataset(loader_cfg.get('dataset', {}))


def _under_root(dataset: dict, path: str | None) -> str | None:
    if path is None:
        return None
    root = dataset.get('data_root', '') or ''
    return path if osp.isabs(path) else osp.join(root, path)


def _config_classes(dataset: dict) -> tuple[str, ...] | None:
    """The classes a dataset config selects: its ``metainfo.classes``, else its type's default (COCO's 80)."""
    classes = (dataset.get('metainfo') or {}).get('classes')
    if classes is not None:
        return tuple(classes)
    from mmdet.registry import DATASETS

    dataset_type = DATASETS.get(dataset.get('type', '')) if isinstance(dataset.get('type'), str) else None
    default = getattr(dataset_type, 'METAINFO', {}).get('classes')
    return tuple(default) if default is not None else None


def _load_annotations(path: str, cache: dict) -> dict | str:
    """The parsed COCO file, or a problem text when it is not one."""
    if path not in cache:
        try:
            with open(path) as f:
                ann = json.load(f)
            if not isinstance(ann, dict) or not isinstance(ann.get('images'), list):
                raise ValueError('no "images" list')
        except (OSError, ValueError) as exc:
            cache[path] = f'annotations {path} are not a COCO json file ({exc})'
            return cache[path]
        cache[path] = ann
    return cache[path]


def _content_problem(ann: dict, path: str) -> str | None:
    """What mmdet's ``CocoDataset`` and ``CocoMetric`` would stop on, mid-run, in a parsed COCO file: the dataset
    command's check (:func:`pit_det.data.coco.check_coco`) and every annotation's ``area``."""
    from ..data.coco import DatasetError, check_coco, missing_area

    if 'annotations' not in ann:  # an image-info file (COCO's test-dev) lists images only
        return None
    try:
        check_coco(ann, path)
    except DatasetError as exc:
        return str(exc)
    missing = missing_area(ann)
    if missing:
        return (
            f'{path}: {len(missing)} annotations have no "area", e.g. annotation {missing[0]}, and mmdet\'s '
            'CocoDataset and CocoMetric read it (the run would stop at the first evaluation): give each its '
            "mask's or box's area, or write the config with pit-det-dataset-config, which reads a copy with the "
            "box's area"
        )
    return None


def _missing_names(folder: str, names: list[str]) -> list[str]:
    """The names (paths relative to ``folder``) that do not exist there."""
    try:
        present = set(os.listdir(folder))
    except OSError:
        present = set()
    return [n for n in names if n not in present and not osp.exists(osp.join(folder, n))]


def check_dataset(loader_cfg, role: str, findings: Findings, cache: dict) -> dict | None:
    """Annotation file, image folder, every listed image, a non-empty set, and classes that exist in the data.

    Returns:
        The (unwrapped) dataset config, or None without one.
    """
    dataset = _dataset(loader_cfg)
    if dataset is None:
        return None
    ann_path = _under_root(dataset, dataset.get('ann_file'))
    img_dir = _under_root(dataset, (dataset.get('data_prefix') or {}).get('img'))
    if ann_path and not osp.isfile(ann_path):
        findings.data_problems.append(f'{role} annotations not found: {ann_path}')
    if img_dir is not None and not osp.isdir(img_dir):
        findings.data_problems.append(f'{role} images not found: {img_dir}')
    if not ann_path or not osp.isfile(ann_path) or not ann_path.endswith('.json'):
        return dataset
    ann = _load_annotations(ann_path, cache)
    if isinstance(ann, str):
        findings.data_problems.append(ann)
        return dataset
    problem = _content_problem(ann, ann_path)
    if problem:
        findings.config_problems.append(f'{role}: {problem}')
        return dataset
    if not ann['images']:
        findings.data_problems.append(f'{role} annotations {ann_path} list no images: the {role} set would be empty')
        return dataset
    if img_dir is not None and osp.isdir(img_dir):
        missing = _missing_names(img_dir, [str(img.get('file_name', '')) for img in ann['images']])
        if missing:
            findings.data_problems.append(
                f'{role}: {len(missing)} of the {len(ann["images"])} images listed in {ann_path} '
                f'are not in {img_dir}, e.g. {", ".join(missing[:3])}'
            )
    _check_classes(dataset, ann, ann_path, role, findings)
    return dataset


def _names(items: list, limit: int) -> str:
    return ', '.join(map(str, items[:limit])) + (', ...' if len(items) > limit else '')


def _check_classes(dataset: dict, ann: dict, ann_path: str, role: str, findings: Findings) -> None:
    """The config's classes must all be categories of the file: mmdet numbers labels by the classes it finds."""
    wanted = _config_classes(dataset)
    present = [c.get('name') for c in ann.get('categories', []) if isinstance(c, dict)]
    if wanted is None or 'categories' not in ann:
        return
    loader = {'training': 'train_dataloader', 'validation': 'val_dataloader', 'test': 'test_dataloader'}[role]
    missing = [c for c in wanted if c not in set(present)]
    advice = (
        f"Set the dataset's classes to the annotation file's names, e.g. --cfg-options "
        f'"{loader}.dataset.metainfo.classes={tuple(present[:3])}" (all of them, for every loader) and '
        'model.bbox_head.num_classes to their number, or in the config dataset=dict(metainfo=dict(classes=...)).'
    )
    if len(missing) == len(wanted):
        findings.config_problems.append(
            f"{role}: none of the config's {len(wanted)} classes ({_names(wanted, 6)}) is a category of {ann_path} "
            f'({_names(present, 6)}): every image would have no ground truth. {advice}'
        )
    elif missing:
        findings.config_problems.append(
            f"{role}: {len(missing)} of the config's {len(wanted)} classes are not categories of {ann_path}: "
            f'{_names(missing, 8)}. mmdet numbers the labels by the classes it finds in the file, so every class after '
            f'a missing one would train and be scored as another (and evaluation would fail). {advice}'
        )
    left_out = [c for c in present if c not in set(wanted)]
    if left_out and not missing:
        print_log(
            f"{role}: {len(left_out)} categories of {ann_path} are not among the config's classes and are "
            f'ignored: {_names(left_out, 8)}',
            logger='current',
            level=30,
        )


def check_num_classes(model_cfg, dataset: dict | None, role: str, findings: Findings) -> None:
    """The head classifies as many classes as the dataset has (every classification branch, refine and two-stage
    included, is built with ``bbox_head.num_classes``): fewer ends in an index error mid-run, more trains phantom
    classes that never have a ground truth."""
    head = (model_cfg or {}).get('bbox_head') or {}
    classes = _config_classes(dataset) if dataset else None
    if classes is None or 'num_classes' not in head or head['num_classes'] == len(classes):
        return
    findings.config_problems.append(
        f'{role}: model.bbox_head.num_classes is {head["num_classes"]} but the dataset has {len(classes)} classes '
        f'({_names(list(classes), 6)}): set --cfg-options model.bbox_head.num_classes={len(classes)} (every '
        "classification branch follows it, and DINO's denoising label embedding), or change the datasets' "
        'metainfo.classes'
    )


def check_evaluator(evaluator_cfg, dataset: dict | None, role: str, findings: Findings) -> None:
    """The evaluator's annotation file exists and is the dataset's own (never another set's ground truth)."""
    evaluators = evaluator_cfg if isinstance(evaluator_cfg, (list, tuple)) else [evaluator_cfg or {}]
    dataset_ann = _under_root(dataset, dataset.get('ann_file')) if dataset else None
    for evaluator in evaluators:
        ann = evaluator.get('ann_file')
        if not ann:
            continue
        if not osp.isfile(ann):
            findings.data_problems.append(f'{role} evaluator annotations not found: {ann}')
        elif dataset_ann and osp.isfile(dataset_ann) and osp.realpath(ann) != osp.realpath(dataset_ann):
            key = 'val_evaluator' if role == 'validation' else 'test_evaluator'
            findings.config_problems.append(
                f'{role}: the evaluator scores against {ann} but the dataset reads {dataset_ann}: the metrics would '
                f"compare predictions with another set's ground truth. Point both at the same file, e.g. "
                f'--cfg-options {key}.ann_file={dataset_ann}'
            )


def check_weights(model_cfg, findings: Findings) -> None:
    """The backbone's pretrained weights can be loaded: a local file exists, a hub tag or URL (``torchvision://``
    included) is cached or downloadable. Nothing is downloaded here."""
    init_cfg = (model_cfg or {}).get('backbone', {}).get('init_cfg')
    if not init_cfg or init_cfg.get('type') != 'Pretrained' or not init_cfg.get('checkpoint'):
        return
    from ..checkpoint.sources import unavailable_reason

    problem = unavailable_reason(str(init_cfg['checkpoint']))
    if problem:
        findings.config_problems.append(problem)


def check_train(cfg) -> None:
    """Everything a training run reads: train (and val) data, the number of classes, evaluator files, backbone
    weights.

    Raises:
        PreflightError: listing every problem found.
    """
    findings, cache = Findings(), {}
    dataset = check_dataset(cfg.get('train_dataloader'), 'training', findings, cache)
    check_num_classes(cfg.get('model'), dataset, 'training', findings)
    if cfg.get('val_cfg') is not None:
        dataset = check_dataset(cfg.get('val_dataloader'), 'validation', findings, cache)
        check_evaluator(cfg.get('val_evaluator'), dataset, 'validation', findings)
    check_weights(cfg.get('model'), findings)  # init_weights() runs before load_from: needed even then
    findings.raise_if_any(cfg.get('missing_data_hint') or COCO_LAYOUT)
    suggestion = lr_scaling_advice(cfg)
    if suggestion:
        print_log(suggestion, logger='current', level=30)


def lr_scaling_advice(cfg, world_size: int | None = None) -> str | None:
    """Advice to scale the learning rate when this run's total batch is not the one the config's lr was set for
    (``auto_scale_lr.base_batch_size``) and ``--auto-scale-lr`` is off: DETR heads trained on a small set with a
    batch far below the recipe's and its lr are the usual 'AP stays at 0'."""
    from mmengine.dist import get_world_size

    scale = cfg.get('auto_scale_lr') or {}
    base, per_gpu = scale.get('base_batch_size'), (cfg.get('train_dataloader') or {}).get('batch_size')
    if not base or not per_gpu or scale.get('enable', False):
        return None
    world_size = world_size or get_world_size()
    total = world_size * per_gpu
    if total == base:
        return None
    lr = ((cfg.get('optim_wrapper') or {}).get('optimizer') or {}).get('lr')
    scaled = f' ({lr:g} -> {lr * total / base:g})' if isinstance(lr, (int, float)) else ''
    return (
        f"this run's total batch is {total} ({world_size} x {per_gpu}) but the config's learning rate is set for "
        f'{base} (auto_scale_lr.base_batch_size): add --auto-scale-lr to scale it linearly{scaled}, or set '
        'optim_wrapper.optimizer.lr yourself'
    )


def check_test(cfg) -> None:
    """Everything a test run reads: test data, the number of classes and the evaluator's file.

    Raises:
        PreflightError: listing every problem found.
    """
    findings = Findings()
    dataset = check_dataset(cfg.get('test_dataloader'), 'test', findings, {})
    check_num_classes(cfg.get('model'), dataset, 'test', findings)
    check_evaluator(cfg.get('test_evaluator'), dataset, 'test', findings)
    findings.raise_if_any(cfg.get('missing_data_hint') or COCO_LAYOUT)
