"""COCO detection annotation files: read and checked for what mmdet's ``CocoDataset`` and ``CocoMetric`` and
pycocotools read (:func:`check_coco`, the one check of the dataset command, the preflight and the COCO evaluation),
missing areas supplied in a copy, a seeded train/validation split, and the dataset config inside mmdet's dataset
wrappers (:func:`unwrap_dataset`).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path


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


def is_finite_number(value) -> bool:
    """A finite int or float (JSON ``true``/``false`` are not numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_box(box) -> bool:
    """A COCO box ``[x, y, width, height]``: four finite numbers (the sizes' signs are checked apart)."""
    return isinstance(box, list) and len(box) == 4 and all(is_finite_number(v) for v in box)


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
        if (
            not isinstance(cat, dict)
            or not integer(cat.get('id'))
            or not isinstance(cat.get('name'), str)
            or not cat['name']
        ):
            raise DatasetError(f'{where("category", i, cat)}: a category needs an integer "id" and a "name"')
        if not _unicode(cat['name']):
            raise DatasetError(
                f'{where("category", i, cat)}: its name is not valid Unicode (it holds a lone '
                'surrogate, \\ud800-\\udfff): rename the category'
            )
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
            raise DatasetError(
                f'{where("image", i, img)}: an image needs its "width" and "height" in pixels, '
                "positive integers (mmdet's CocoDataset reads both)"
            )
        if img['id'] in images:
            raise DatasetError(f'{where("image", i, img)}: its id is used by another image')
        images.add(img['id'])
    annotation_ids = set()
    for i, ann in enumerate(data['annotations']):
        if not isinstance(ann, dict):
            raise DatasetError(f'{where("annotation", i, ann)}: not an object')
        if not integer(ann.get('id')) or ann['id'] in annotation_ids:
            raise DatasetError(
                f'{where("annotation", i, ann)}: an annotation needs an integer "id" of its own '
                '(pycocotools and mmdet index annotations by id)'
            )
        annotation_ids.add(ann['id'])
        box = ann.get('bbox')
        if not is_box(box) or box[2] < 0 or box[3] < 0:
            raise DatasetError(
                f'{where("annotation", i, ann)}: "bbox" must be [x, y, width, height], four finite '
                'numbers with a width and height of at least 0 (not corners x1, y1, x2, y2)'
            )
        if 'area' in ann and not is_finite_number(ann['area']):
            raise DatasetError(
                f'{where("annotation", i, ann)}: "area" must be a finite number (the box\'s or the '
                "mask's area in pixels)"
            )
        if ann.get('image_id') not in images:
            raise DatasetError(
                f'{where("annotation", i, ann)}: image_id {ann.get("image_id")!r} is not an id of "images"'
            )
        if ann.get('category_id') not in ids:
            raise DatasetError(
                f'{where("annotation", i, ann)}: category_id {ann.get("category_id")!r} is not an id '
                f'of "categories" ({sorted(ids)[:10]})'
            )


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
        part = dict(
            coco.data,
            images=[img for img in coco.data['images'] if keep(img['id'])],
            annotations=[a for a in coco.data['annotations'] if keep(a['image_id'])],
        )
        parts.append(write_coco(CocoSet(coco.path, part), path))
    return parts[0], parts[1]


COPY_MARK = 'pit_det_copy_of'  # a top-level key of the annotation files pit-det writes (COCO readers ignore it)


def write_coco(coco: CocoSet, path: Path) -> CocoSet:
    """``coco``'s annotations written to ``path`` (atomically), marked as a copy of ``coco.path`` (:func:`is_copy`);
    the set as read from there."""
    from ..outputs import write_text

    data = {COPY_MARK: str(coco.path), **coco.data}  # first, so that is_copy reads a few bytes of a large file
    write_text(path, json.dumps(data))
    return CocoSet(Path(path).resolve(), data)


def is_copy(path: str | Path) -> bool:
    """Whether ``path`` is an annotation file :func:`write_coco` wrote (an earlier run's copy, replaced without
    asking); any other file is the user's."""
    try:
        with open(path, 'rb') as f:
            return f.read(len(COPY_MARK) + 3) == f'{{"{COPY_MARK}"'.encode()
    except OSError:
        return False


def unwrap_dataset(dataset: dict) -> dict:
    """The dataset config inside mmdet's wrappers (``RepeatDataset``, ``ClassBalancedDataset``,
    ``MultiImageMixDataset``: each holds its set under ``dataset``), down to the one that reads an ``ann_file``."""
    while 'dataset' in dataset and 'ann_file' not in dataset:
        dataset = dataset['dataset']
    return dataset
