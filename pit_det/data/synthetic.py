"""A deterministic synthetic COCO-format detection set: coloured shapes on a textured background.

Each image holds 1-3 non-overlapping shapes of three classes (square, disc, triangle), each class with its own
hue band, on a noisy background. Small enough to learn from scratch on a laptop CPU in minutes, yet with real
boxes, scales and classes, so COCO AP measures something.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ('square', 'disc', 'triangle')
_BASE_COLOURS = np.array([[220, 60, 50], [60, 180, 70], [60, 90, 220]], dtype=np.float64)


def _draw_image(rng: np.random.Generator, size: int, max_objects: int) -> tuple[Image.Image, list]:
    background = rng.integers(90, 170, size=3)
    pixels = np.clip(background + rng.normal(0, 12, size=(size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    boxes: list[tuple[float, float, float, float, int]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            side = float(rng.uniform(0.2, 0.45) * size)
            x0, y0 = rng.uniform(0, size - side, size=2)
            box = (x0, y0, x0 + side, y0 + side)
            if all(box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3] for b in boxes):
                break
        else:
            continue
        label = int(rng.integers(0, len(SHAPES)))
        colour = tuple(int(c) for c in np.clip(_BASE_COLOURS[label] + rng.normal(0, 15, 3), 0, 255))
        if SHAPES[label] == 'square':
            draw.rectangle(box, fill=colour)
        elif SHAPES[label] == 'disc':
            draw.ellipse(box, fill=colour)
        else:
            draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) / 2, box[1])], fill=colour)
        boxes.append((*box, label))
    return image, boxes


def make_synthetic_coco(root: str | Path, num_train: int = 256, num_val: int = 32, size: int = 128,
                        max_objects: int = 3, seed: int = 0) -> Path:
    """Write ``root/{train,val}/*.png`` and ``root/annotations/{train,val}.json`` (COCO format).

    The same arguments always give the same files, so a re-run rewrites identical files.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    if size < 32:
        raise ValueError(f'size must be at least 32 pixels, got {size}')
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    categories = [dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(SHAPES)]
    for split, count in (('train', num_train), ('val', num_val)):
        (root / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            image, boxes = _draw_image(rng, size, max_objects)
            name = f'{index:06d}.png'
            image.save(root / split / name)
            images.append(dict(id=index + 1, file_name=name, width=size, height=size))
            for x0, y0, x1, y1, label in boxes:
                w, h = x1 - x0, y1 - y0
                annotations.append(dict(id=len(annotations) + 1, image_id=index + 1, category_id=label + 1,
                                        bbox=[round(x0, 2), round(y0, 2), round(w, 2), round(h, 2)],
                                        area=round(w * h, 2), iscrowd=0))
        ann_file = root / 'annotations' / f'{split}.json'
        ann_file.write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return root
