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


def read_coco(path: str | Path) -> CocoSet:
    """A COCO detection annotation file, checked.

    Raises:
        DatasetError: naming the file and the first entry that is not COCO detection format: no ``images``,
            ``annotations`` or ``categories`` list, no category, a category without an integer id and a name, a
            duplicate id or name, an image without an integer id and a file name, a box that is not four finite
            numbers with a non-negative width and height, or an image or category id that resolves to nothing.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f'annotation file {path} not found')
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f'{path} is not JSON ({exc})') from None
    if not isinstance(data, dict):
        raise DatasetError(f'{path} is not a COCO annotation file: a JSON {type(data).__name__}, not an object')
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data.get(key), list):
            raise DatasetError(f'{path} is not COCO detection format: no "{key}" list')
    if not data['categories']:
        raise DatasetError(f'{path} has no categories: a detector needs at least one class')

    def where(kind: str, i: int, entry) -> str:
        return f'{path}, {kind} {i} ({json.dumps(entry)[:120]})'
    ids, names = set(), set()
    for i, cat in enumerate(data['categories']):
        if not isinstance(cat, dict) or not isinstance(cat.get('id'), int) or isinstance(cat.get('id'), bool) \
                or not isinstance(cat.get('name'), str) or not cat['name']:
            raise DatasetError(f'{where("category", i, cat)}: a category needs an integer "id" and a "name"')
        if cat['id'] in ids or cat['name'] in names:
            raise DatasetError(f'{where("category", i, cat)}: its id or name is used by another category')
        ids.add(cat['id'])
        names.add(cat['name'])
    images = set()
    for i, img in enumerate(data['images']):
        if not isinstance(img, dict) or not isinstance(img.get('id'), int) or isinstance(img.get('id'), bool) \
                or not isinstance(img.get('file_name'), str):
            raise DatasetError(f'{where("image", i, img)}: an image needs an integer "id" and a "file_name"')
        images.add(img['id'])
    for i, ann in enumerate(data['annotations']):
        if not isinstance(ann, dict):
            raise DatasetError(f'{where("annotation", i, ann)}: not an object')
        box = ann.get('bbox')
        if not (isinstance(box, list) and len(box) == 4 and all(_finite(v) for v in box)) or box[2] < 0 or box[3] < 0:
            raise DatasetError(f'{where("annotation", i, ann)}: "bbox" must be [x, y, width, height], four finite '
                               'numbers with a width and height of at least 0 (not corners x1, y1, x2, y2)')
        if ann.get('image_id') not in images:
            raise DatasetError(f'{where("annotation", i, ann)}: image_id {ann.get("image_id")!r} is not an id of '
                               '"images"')
        if ann.get('category_id') not in ids:
            raise DatasetError(f'{where("annotation", i, ann)}: category_id {ann.get("category_id")!r} is not an id '
                               f'of "categories" ({sorted(ids)[:10]})')
    return CocoSet(path, data)


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
    from ..outputs import write_text
    parts = []
    for path, keep in ((train_out, lambda i: i not in val), (val_out, lambda i: i in val)):
        part = dict(coco.data, images=[img for img in coco.data['images'] if keep(img['id'])],
                    annotations=[a for a in coco.data['annotations'] if keep(a['image_id'])])
        write_text(path, json.dumps(part))
        parts.append(CocoSet(Path(path).resolve(), part))
    return parts[0], parts[1]


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


def _py(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def write_config(out: Path, base: Path, train: CocoSet, train_images: Path, val: CocoSet, val_images: Path,
                 load_from: str | None = None, epochs: int | None = None) -> dict:
    """The delta config over ``base`` for this dataset; returns what was chosen."""
    from mmengine.config import Config

    from ..outputs import write_text
    if val.classes != train.classes:
        raise DatasetError(f'{val.path} has other categories than {train.path} ({val.classes[:5]} against '
                           f'{train.classes[:5]}): train and validation must share one list, in one order')
    base_cfg = Config.fromfile(str(base))
    if 'bbox_head' not in base_cfg.get('model', {}):
        raise DatasetError(f'--base {base}: not a detector config with a bbox_head')
    classes = train.classes
    train_ann, val_ann = train.path.resolve(), val.path.resolve()  # the config works from any folder
    plan = schedule_for(train.num_images, bool(load_from), epochs)
    queries = base_cfg.model.get('num_queries', 300)
    max_per_img = base_cfg.model.get('test_cfg', {}).get('max_per_img', 100)
    lines = [
        MARKER,
        f'# {out.name}: a Deformable DETR for the dataset of {train.path.name}.',
        f'# Training: {train.path} ({train.num_images} images, {train.num_boxes} boxes); validation and test: '
        f'{val.path} ({val.num_images} images, {val.num_boxes} boxes).',
        f'# Classes: the {len(classes)} categories of the file, in its order (mmdet numbers the labels in that order).',
        f"_base_ = {_py(str(base))}",
        '',
        f'classes = ({", ".join(_py(c) for c in classes)},)',
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
        f"    data_root='', ann_file={_py(str(train_ann))}, data_prefix=dict(img={_py(str(train_images) + '/')}),",
        '    metainfo=metainfo))',
        'val_dataloader = dict(dataset=dict(',
        f"    data_root='', ann_file={_py(str(val_ann))}, data_prefix=dict(img={_py(str(val_images) + '/')}),",
        '    metainfo=metainfo))',
        'test_dataloader = val_dataloader',
        f'val_evaluator = dict(ann_file={_py(str(val_ann))})',
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
                  '# they keep their initialisation, and the log says which)', f'load_from = {_py(str(load_from))}']
    import textwrap
    wrapped = [wrapped for line in lines for wrapped in (
        textwrap.wrap(line, 118, subsequent_indent='# ', break_on_hyphens=False) if line.startswith('# ') else [line])]
    write_text(out, '\n'.join(wrapped) + '\n')
    return dict(classes=classes, schedule=plan)
