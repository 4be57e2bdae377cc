"""A detector config for your own COCO-format dataset: a short delta over a config of ours, written from the
annotation file itself.

The four places a config must agree on (the datasets' ``metainfo.classes``, ``bbox_head.num_classes``, the datasets'
files and folders, the evaluators' ``ann_file``) are written from the annotation file (:mod:`pit_det.data.coco`), in
the file's category order (mmdet numbers labels in that order), so they cannot disagree; every string is written as a
literal that reaches Python as itself (:func:`config_literal`). A schedule suited to the set's size is chosen and
explained in the written file's comments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .coco import CocoSet, DatasetError

MARKER = '# Written by pit-det-dataset-config.'  # the first line of every config it writes


@dataclass
class Schedule:
    epochs: int
    val_interval: int
    step: int
    why: str


@dataclass(frozen=True)
class Recipe:
    """What a base config's COCO schedule says: its epochs and where the learning rate drops (Deformable DETR: 50,
    40; DINO: 12, 11)."""

    epochs: int = 50
    step_fraction: float = 0.8

    @classmethod
    def of(cls, base_cfg) -> Recipe:
        epochs = (base_cfg.get('train_cfg') or {}).get('max_epochs')
        steps = [
            s for s in base_cfg.get('param_scheduler') or [] if s.get('type') == 'MultiStepLR' and s.get('milestones')
        ]
        if not epochs:
            return cls()
        return cls(int(epochs), steps[0]['milestones'][0] / epochs if steps else cls.step_fraction)


def schedule_for(num_images: int, fine_tune: bool, epochs: int | None = None, recipe: Recipe = Recipe()) -> Schedule:
    """Epochs for a set of ``num_images`` training images: about 25,000 images seen at least for a 50-epoch recipe
    (what a small set needs to converge from ImageNet weights with Deformable DETR), proportionally fewer for a
    shorter one (DINO's 12 epochs: 6,000), at least 12 epochs, at most 50; half as many when fine-tuning a detector.
    The learning rate drops where the recipe's does."""
    if epochs is None:
        images = round(25_000 * recipe.epochs / 50)
        epochs = min(50, max(12, math.ceil(images / max(num_images, 1))))
        why = (
            f'{num_images} training images: {epochs} epochs (about {images:,} images seen for a recipe of '
            f'{recipe.epochs} epochs on COCO, at least 12, at most 50)'
        )
        if fine_tune:
            epochs = max(6, epochs // 2)
            why += f', halved to {epochs} because training starts from a detector (load_from)'
    else:
        why = f'{epochs} epochs, as asked (--epochs)'
    step = min(epochs, max(1, round(epochs * recipe.step_fraction)))
    return Schedule(
        epochs,
        max(1, epochs // 10),
        step,
        why + f'; the learning rate drops 10x after epoch {step} '
        f"({recipe.step_fraction:.0%}, where the recipe's drops)",
    )


def config_literal(value: str) -> str:
    """A Python string literal that reaches Python as exactly ``value`` through ``Config.fromfile``, whatever
    ``value`` holds.

    mmengine rewrites a config's text before Python parses it (``{{$ENV:default}}``, ``{{ _base_.x }}``,
    ``{{ fileDirname }}``) and reads it with universal newlines, so a brace, quote, backslash, carriage return or
    newline written as itself could end the string and make the rest of a name code. The literal keeps printable
    characters (``str.isprintable``: letters of any script, digits, punctuation, the space) and writes every other
    one, and every brace, quote and backslash, as an escape: its text holds no ``{{``, no ``}}``, no quote but its
    own two, no backslash but an escape's and no line break.
    """
    escaped = []
    for char in value:
        code = ord(char)
        if char.isprintable() and char not in '{}\'"\\':
            escaped.append(char)
        else:
            escaped.append(
                f'\\x{code:02x}' if code < 0x100 else f'\\u{code:04x}' if code < 0x10000 else f'\\U{code:08x}'
            )
    return "'" + ''.join(escaped) + "'"


def read_base(base: Path):
    """The ``--base`` config, read by mmengine.

    Raises:
        DatasetError: the file is not a config mmengine can read (binary, a checkpoint, a syntax error, a config
            that fails when run), naming it and mmengine's reason, or not a detector config with a ``bbox_head``.
    """
    from mmengine.config import Config

    if base.suffix not in ('.py', '.json', '.yaml', '.yml'):
        kind = f'a {base.suffix} file' if base.suffix else 'a file without a suffix'
        raise DatasetError(
            f'--base {base}: give a config (.py, or a config name such as pit_s_deformable_detr), not {kind}'
        )
    try:
        cfg = Config.fromfile(str(base))
    except Exception as exc:  # a config is a program: reading one can raise anything it raises
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
        raise DatasetError(
            f'--base {base} is not a config mmengine can read ({type(exc).__name__}: {reason}): give '
            'a config of pit-det by name (e.g. pit_s_deformable_detr) or a .py config that mim train '
            'reads'
        ) from None
    if 'bbox_head' not in cfg.get('model', {}):
        raise DatasetError(f'--base {base}: not a detector config with a bbox_head')
    return cfg


def head_name(cfg) -> str:
    """The detector family of a config, as its comments name it."""
    return 'DINO' if 'DINO' in str(cfg.model.get('type')) else 'Deformable DETR'


def write_config(
    out: Path,
    base_cfg,
    train: CocoSet,
    train_images: Path,
    val: CocoSet,
    val_images: Path,
    load_from: str | None = None,
    epochs: int | None = None,
) -> dict:
    """The delta config over ``base_cfg`` (from :func:`read_base`) for this dataset; returns what was chosen."""
    from ..outputs import write_text

    if val.classes != train.classes:
        raise DatasetError(
            f'{val.path} has other categories than {train.path} ({val.classes[:5]} against '
            f'{train.classes[:5]}): train and validation must share one list, in one order'
        )
    base = Path(base_cfg.filename)
    classes = train.classes
    train_ann, val_ann = train.path.resolve(), val.path.resolve()  # the config works from any folder
    plan = schedule_for(train.num_images, bool(load_from), epochs, Recipe.of(base_cfg))
    queries = base_cfg.model.get('num_queries', 300)
    max_per_img = base_cfg.model.get('test_cfg', {}).get('max_per_img', 100)
    lines = [
        MARKER,
        # names and paths in comments as literals too: mmengine rewrites comments as it does code
        f'# {config_literal(out.name)}: a {head_name(base_cfg)} for the dataset of {config_literal(train.path.name)}.',
        f'# Training: {config_literal(str(train.path))} ({train.num_images} images, {train.num_boxes} boxes); '
        f'validation and test: {config_literal(str(val.path))} ({val.num_images} images, {val.num_boxes} boxes).',
        f'# Classes: the {len(classes)} categories of the file, in its order (mmdet numbers the labels in that order).',
        f'_base_ = {config_literal(str(base))}',
        '',
        f'classes = ({", ".join(config_literal(c) for c in classes)},)',
        'metainfo = dict(classes=classes)',
    ]
    if queries * len(classes) < max_per_img:
        lines += [
            f'# at most num_queries x num_classes = {queries} x {len(classes)} detections per image exist',
            f'model = dict(bbox_head=dict(num_classes={len(classes)}), test_cfg=dict(max_per_img='
            f'{queries * len(classes)}))',
        ]
    else:
        lines.append(
            f'model = dict(bbox_head=dict(num_classes={len(classes)}))  # every classification branch follows it'
        )
    lines += [
        '',
        'train_dataloader = dict(dataset=dict(',
        f"    data_root='', ann_file={config_literal(str(train_ann))},",
        f'    data_prefix=dict(img={config_literal(str(train_images) + "/")}),',
        '    metainfo=metainfo))',
        'val_dataloader = dict(dataset=dict(',
        f"    data_root='', ann_file={config_literal(str(val_ann))},",
        f'    data_prefix=dict(img={config_literal(str(val_images) + "/")}),',
        '    metainfo=metainfo))',
        'test_dataloader = val_dataloader',
        f'val_evaluator = dict(ann_file={config_literal(str(val_ann))})',
        'test_evaluator = val_evaluator',
        '',
        f'# {plan.why[0].upper() + plan.why[1:]}.',
        f'train_cfg = dict(max_epochs={plan.epochs}, val_interval={plan.val_interval})',
        f'param_scheduler = [dict(type="MultiStepLR", begin=0, end={plan.epochs}, by_epoch=True, '
        f'milestones=[{plan.step}], gamma=0.1)]',
        f'default_hooks = dict(checkpoint=dict(interval={plan.val_interval}, save_best="auto", max_keep_ckpts=3))',
    ]
    if load_from:
        lines += [
            '',
            '# fine-tuning: every weight of this detector but its classification branches (another class set:',
            '# they keep their initialisation, and the log says which)',
            f'load_from = {config_literal(str(load_from))}',
        ]
    import textwrap

    wrapped = [
        wrapped
        for line in lines
        for wrapped in (
            textwrap.wrap(line, 118, subsequent_indent='# ', break_on_hyphens=False)
            if line.startswith('# ')
            else [line]
        )
    ]
    write_text(out, '\n'.join(wrapped) + '\n')
    return dict(classes=classes, schedule=plan)
