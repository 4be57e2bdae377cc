"""Draw a detector's predictions on an image (used by ``pit-det-infer`` and the demo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import IMAGE_SUFFIXES
from .models.inference import InferenceOptions
from .outputs import check_file_output

MAX_DRAWN_SIDE = (
    4096  # the long side of the largest picture drawn; the detector sees the image as its config resizes it
)


def check_request(
    config: str | Path,
    checkpoint: str | Path,
    image: str | Path,
    out: str | Path,
    device: str = 'cpu',
    force: bool = False,
    inputs: tuple = (),
) -> np.ndarray:
    """Everything :func:`draw_detections` needs, checked before a model is built; returns the image (BGR).

    Raises:
        FileNotFoundError: the config, checkpoint or image does not exist.
        ValueError: ``out`` is a folder or not a picture format, one of the inputs (``inputs``: more
            ``(what, path)``), or an existing file and not ``force``; the image is empty or not an image; the device
            is not available.
    """
    import mmcv
    import torch

    for path, what in ((config, 'config'), (checkpoint, 'checkpoint'), (image, 'image')):
        if not Path(path).is_file():
            raise FileNotFoundError(f'{what} not found: {path}')
    out = Path(out)
    if out.is_dir() or out.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f'--out {out}: give a picture file name ending in one of {", ".join(IMAGE_SUFFIXES)}')
    check_file_output(
        out,
        [('input image', image), ('config', config), ('checkpoint', checkpoint), *inputs],
        option='--out',
        force=force,
    )
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f'--device {device}: no CUDA GPU is visible to torch; use --device cpu')
    if Path(image).stat().st_size == 0:
        raise ValueError(f'image {image} is empty (0 bytes)')
    img = mmcv.imread(str(image))
    if img is None or img.size == 0:
        raise ValueError(f'image {image} cannot be decoded: not an image file (or a format OpenCV cannot read)')
    return img


def draw_detections(
    config: str | Path,
    checkpoint: str | Path,
    image: str | Path,
    out: str | Path,
    score_thr: float = 0.3,
    device: str = 'cpu',
    min_side: int = 512,
    inference: InferenceOptions | None = None,
    force: bool = False,
) -> int:
    """Run ``config`` with ``checkpoint`` on ``image`` and write the picture with boxes to ``out``.

    Images whose short side is below ``min_side`` are drawn enlarged (boxes scaled alike) so labels stay legible;
    images whose long side is above :data:`MAX_DRAWN_SIDE` are drawn reduced to it (a 10000x10000 photo took 10 GB
    of memory to draw at its own size).
    ``config``: a path, or an mmengine ``Config`` read from one (its ``filename`` is checked as an input).
    ``inference``: the detector's inference path, parsed (:meth:`InferenceOptions.parse`), e.g. ``path='bf16'``.
    ``force``: replace an existing ``out`` (never an input).

    Returns:
        The number of detections drawn (score >= ``score_thr``).
    """
    import mmcv
    from mmdet.apis import inference_detector
    from mmdet.registry import VISUALIZERS

    from .models.detectors import build_detector

    model_file = inference.model_file if inference else None
    path = getattr(config, 'filename', config)
    bgr = check_request(path, checkpoint, image, out, device, force, (('exported model file', model_file),))
    model = build_detector(config, checkpoint, device=device, inference=inference)
    result = inference_detector(model, bgr)
    visualizer = VISUALIZERS.build(dict(type='DetLocalVisualizer', name=f'pit_det_{Path(out).stem}'))
    visualizer.dataset_meta = model.dataset_meta
    img = mmcv.imconvert(bgr, 'bgr', 'rgb')
    scale = max(1.0, min_side / min(img.shape[:2]))
    scale = min(scale, MAX_DRAWN_SIDE / max(img.shape[:2]))
    if scale != 1:
        img = mmcv.imrescale(img, scale, interpolation='nearest' if scale > 1 else 'area')
        result.pred_instances.bboxes = result.pred_instances.bboxes * scale
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    visualizer.add_datasample(
        'prediction', img, data_sample=result, draw_gt=False, pred_score_thr=score_thr, out_file=str(out)
    )
    return int(np.sum(result.pred_instances.scores.cpu().numpy() >= score_thr))
