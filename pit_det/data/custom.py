"""A detector config for your own COCO-format dataset: read the annotation files, check them, write a short delta.

The four places a config must agree on (the datasets' ``metainfo.classes``, ``bbox_head.num_classes``, the datasets'
files and folders, the evaluators' ``ann_file``) are written from the annotation file itself, in the file's category
order (mmdet numbers labels in that order), so they cannot disagree. A schedule suited to the set's size is chosen
and explained in the written file's comments.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

MARKER = '# Written by pit-det-dataset-config.'  # the first line of every config it writes


class DatasetError(ValueError):
    """An annotation file that is not COCO detection format, or a request that cannot be honoured; the message names
    the file and the first bad entry."""


@dataclass
class CocoSet:
    path: Path
    data: dict

    @property
    def classes(self) -> list[str]:
        return [c['name'] for c in self.data['categories']]

    @property
    def num_boxes(self) -> int:
        return len(self.data['annotations'])

    @property
    def num_images(self) -> int:
        return len(self.data['images'])


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _unicode(text) -> bool:
    """A non-empty str that is valid Unicode (JSON's ``\\ud800`` escapes make lone surrogates, which no file, log
    or terminal can hold)."""
    if not isinstance(text, str) or not text:
        return False
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        return False
    return True


def check_coco(data, path: str | Path) -> None:
    """``data`` (the parsed annotation file ``path``) is COCO detection format as mmdet's ``CocoDataset`` and
    ``CocoMetric`` and pycocotools read it. The one check of the dataset command, the preflight and the COCO
    evaluation; a missing ``area`` is allowed here (:func:`missing_area` finds it, :func:`fill_missing_area`
    supplies it).

    Raises:
        DatasetError: naming the file and the first entry that is not: no ``images``, ``annotations`` or
            ``categories`` list, no category, a category without an integer id and a name of valid Unicode, a
            duplicate id or name, an image without an integer id, a file name and a positive integer width and
            height, a duplicate image id, an annotation without an id or with the id of another, a box that is not
            four finite numbers with a non-negative width and height, an ``area`` that is not a finite number, or an
            image or category id that resolves to nothing.
    """
    if not isinstance(data, dict):
        raise DatasetError(f'{path} is not a COCO annotation file: a JSON {type(data).__name__}, not an object')
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data.get(key), list):
            raise DatasetError(f'{path} is not COCO detection format: no "{key}" list')
    if not data['categories']:
        raise DatasetError(f'{path} has no categories: a detector needs at least one class')

    def where(kind: str, i: int, entry) -> str:
        return f'{path}, {kind} {i} ({json.dumps(entry)[:120]})'

    def integer(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)
    ids, names = set(), set()
    for i, cat in enumerate(data['categories']):
        if not isinstance(cat, dict) or not integer(cat.get('id')) or not isinstance(cat.get('name'), str) \
                or not cat['name']:
            raise DatasetError(f'{where("category", i, cat)}: a category needs an integer "id" and a "name"')
        if not _unicode(cat['name']):
            raise DatasetError(f'{where("category", i, cat)}: its name is not valid Unicode (it holds a lone '
                               'surrogate, \\ud800-\\udfff): rename the category')
        if cat['id'] in ids or cat['name'] in names:
            raise DatasetError(f'{where("category", i, cat)}: its id or name is used by another category')
        ids.add(cat['id'])
        names.add(cat['name'])
    images = set()
    for i, img in enumerate(data['images']):
        if not isinstance(img, dict) or not integer(img.get('id')) or not isinstance(img.get('file_name'), str):
            raise DatasetError(f'{where("image", i, img)}: an image needs an integer "id" and a "file_name"')
        if not _unicode(img['file_name']):
            raise DatasetError(f'{where("image", i, img)}: its file_name is empty or not valid Unicode')
        if not all(integer(img.get(side)) and img[side] > 0 for side in ('width', 'height')):
            raise DatasetError(f'{where("image", i, img)}: an image needs its "width" and "height" in pixels, '
                               'positive integers (mmdet\'s CocoDataset reads both)')
        if img['id'] in images:
            raise DatasetError(f'{where("image", i, img)}: its id is used by another image')
        images.add(img['id'])
    annotation_ids = set()
    for i, ann in enumerate(data['annotations']):
        if not isinstance(ann, dict):
            raise DatasetError(f'{where("annotation", i, ann)}: not an object')
        if not integer(ann.get('id')) or ann['id'] in annotation_ids:
            raise DatasetError(f'{where("annotation", i, ann)}: an annotation needs an integer "id" of its own '
                               '(pycocotools and mmdet index annotations by id)')
        annotation_ids.add(ann['id'])
        box = ann.get('bbox')
        if not (isinstance(box, list) and len(box) == 4 and all(_finite(v) for v in box)) or box[2] < 0 or box[3] < 0:
            raise DatasetError(f'{where("annotation", i, ann)}: "bbox" must be [x, y, width, height], four finite '
                               'numbers with a width and height of at least 0 (not corners x1, y1, x2, y2)')
        if 'area' in ann and not _finite(ann['area']):
            raise DatasetError(f'{where("annotation", i, ann)}: "area" must be a finite number (the box\'s or the '
                               'mask\'s area in pixels)')
        if ann.get('image_id') not in images:
            raise DatasetError(f'{where("annotation", i, ann)}: image_id {ann.get("image_id")!r} is not an id of '
                               '"images"')
        if ann.get('category_id') not in ids:
            raise DatasetError(f'{where("annotation", i, ann)}: category_id {ann.get("category_id")!r} is not an id '
                               f'of "categories" ({sorted(ids)[:10]})')


def read_coco(path: str | Path) -> CocoSet:
    """A COCO detection annotation file, checked by :func:`check_coco`.

    Raises:
        DatasetError: the file is missing, not JSON, or not COCO detection format (naming the first bad entry).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f'annotation file {path} not found')
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f'{path} is not JSON ({exc})') from None
    check_coco(data, path)
    return CocoSet(path, data)


def missing_area(data: dict) -> list[int]:
    """The indices of the annotations without ``area``, which mmdet's ``CocoDataset`` (it drops boxes of area 0)
    and COCO's small/medium/large split read."""
    return [i for i, ann in enumerate(data['annotations']) if 'area' not in ann]


def fill_missing_area(data: dict) -> int:
    """Give each annotation without ``area`` its box's width x height, in ``data`` (the caller's copy, never the
    user's file); returns how many were filled. COCO's own files give the mask area instead."""
    missing = missing_area(data)
    for i in missing:
        box = data['annotations'][i]['bbox']
        data['annotations'][i]['area'] = float(box[2] * box[3])
    return len(missing)


def split(coco: CocoSet, fraction: float, seed: int, train_out: Path, val_out: Path) -> tuple[CocoSet, CocoSet]:
    """Write ``train_out`` and ``val_out``: a seeded ``fraction`` of the images (with their annotations) for
    validation, the rest for training; every image is kept, with boxes or without. The input is only read."""
    if not 0 < fraction < 1:
        raise DatasetError(f'--val-split {fraction}: give a fraction between 0 and 1, e.g. 0.2')
    ids = sorted(img['id'] for img in coco.data['images'])
    random.Random(seed).shuffle(ids)
    count = max(1, round(len(ids) * fraction))
    if count >= len(ids):
        raise DatasetError(f'{coco.path} has {len(ids)} images: too few to split off {fraction:.0%} for validation')
    val = set(ids[:count])
    parts = []
    for path, keep in ((train_out, lambda i: i not in val), (val_out, lambda i: i in val)):
        part = dict(coco.data, images=[img for img in coco.data['images'] if keep(img['id'])],
                    annotations=[a for a in coco.data['annotations'] if keep(a['image_id'])])
        parts.append(write_coco(CocoSet(coco.path, part), path))
    return parts[0], parts[1]


def write_coco(coco: CocoSet, path: Path) -> CocoSet:
    """``coco``'s annotations written to ``path`` (atomically); the set as read from there."""
    from ..outputs import write_text
    write_text(path, json.dumps(coco.data))
    return CocoSet(Path(path).resolve(), coco.data)


@dataclass
class Schedule:
    epochs: int
    val_interval: int
    step: int
    why: str


def schedule_for(num_images: int, fine_tune: bool, epochs: int | None = None) -> Schedule:
    """Epochs for a set of ``num_images`` training images: about 25,000 images seen at least (what a small set needs
    to converge from ImageNet weights), 50 at most (COCO's schedule); half as many when fine-tuning a detector."""
    if epochs is None:
        epochs = min(50, max(12, math.ceil(25_000 / max(num_images, 1))))
        why = (f'{num_images} training images: {epochs} epochs (about 25,000 images seen, at least 12, at most '
               'COCO\'s 50)')
        if fine_tune:
            epochs = max(6, epochs // 2)
            why += f', halved to {epochs} because training starts from a detector (load_from)'
    else:
        why = f'{epochs} epochs, as asked (--epochs)'
    step = max(1, round(epochs * 0.8))
    return Schedule(epochs, max(1, epochs // 10), step, why + f'; the learning rate drops 10x after epoch {step} '
                    '(80%, as mmdet\'s 40 of 50)')


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
            escaped.append(f'\\x{code:02x}' if code < 0x100 else f'\\u{code:04x}' if code < 0x10000 else
                           f'\\U{code:08x}')
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
        raise DatasetError(f'--base {base}: give a config (.py, or a config name such as pit_s_deformable_detr), not '
                           f'{kind}')
    try:
        cfg = Config.fromfile(str(base))
    except Exception as exc:  # a config is a program: reading one can raise anything it raises
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
        raise DatasetError(f'--base {base} is not a config mmengine can read ({type(exc).__name__}: {reason}): give '
                           'a config of pit-det by name (e.g. pit_s_deformable_detr) or a .py config that mim train '
                           'reads') from None
    if 'bbox_head' not in cfg.get('model', {}):
        raise DatasetError(f'--base {base}: not a detector config with a bbox_head')
    return cfg


def write_config(out: Path, base_cfg, train: CocoSet, train_images: Path, val: CocoSet, val_images: Path,
                 load_from: str | None = None, epochs: int | None = None) -> dict:
    """The delta config over ``base_cfg`` (from :func:`read_base`) for this dataset; returns what was chosen."""
    from ..outputs import write_text
    if val.classes != train.classes:
        raise DatasetError(f'{val.path} has other categories than {train.path} ({val.classes[:5]} against '
                           f'{train.classes[:5]}): train and validation must share one list, in one order')
    base = Path(base_cfg.filename)
    classes = train.classes
    train_ann, val_ann = train.path.resolve(), val.path.resolve()  # the config works from any folder
    plan = schedule_for(train.num_images, bool(load_from), epochs)
    queries = base_cfg.model.get('num_queries', 300)
    max_per_img = base_cfg.model.get('test_cfg', {}).get('max_per_img', 100)
    lines = [
        MARKER,
        # names and paths in comments as literals too: mmengine rewrites comments as it does code
        f'# {config_literal(out.name)}: a Deformable DETR for the dataset of {config_literal(train.path.name)}.',
        f'# Training: {config_literal(str(train.path))} ({train.num_images} images, {train.num_boxes} boxes); '
        f'validation and test: {config_literal(str(val.path))} ({val.num_images} images, {val.num_boxes} boxes).',
        f'# Classes: the {len(classes)} categories of the file, in its order (mmdet numbers the labels in that order).',
        f"_base_ = {config_literal(str(base))}",
        '',
        f'classes = ({", ".join(config_literal(c) for c in classes)},)',
        'metainfo = dict(classes=classes)',
    ]
    if queries * len(classes) < max_per_img:
        lines += [f'# at most num_queries x num_classes = {queries} x {len(classes)} detections per image exist',
                  f'model = dict(bbox_head=dict(num_classes={len(classes)}), test_cfg=dict(max_per_img='
                  f'{queries * len(classes)}))']
    else:
        lines.append(f'model = dict(bbox_head=dict(num_classes={len(classes)}))  # every classification branch follows it')
    lines += [
        '',
        'train_dataloader = dict(dataset=dict(',
        f"    data_root='', ann_file={config_literal(str(train_ann))},",
        f"    data_prefix=dict(img={config_literal(str(train_images) + '/')}),",
        '    metainfo=metainfo))',
        'val_dataloader = dict(dataset=dict(',
        f"    data_root='', ann_file={config_literal(str(val_ann))},",
        f"    data_prefix=dict(img={config_literal(str(val_images) + '/')}),",
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
        lines += ['', '# fine-tuning: every weight of this detector but its classification branches (another class set:',
                  '# they keep their initialisation, and the log says which)',
                  f'load_from = {config_literal(str(load_from))}']
    import textwrap
    wrapped = [wrapped for line in lines for wrapped in (
        textwrap.wrap(line, 118, subsequent_indent='# ', break_on_hyphens=False) if line.startswith('# ') else [line])]
    write_text(out, '\n'.join(wrapped) + '\n')
    return dict(classes=classes, schedule=plan)
