"""Draw a detector's predictions on an image (used by ``tools/infer.py`` and the demo)."""
from __future__ import annotations

from pathlib import Path

import mmcv
import numpy as np


def draw_detections(config: str | Path, checkpoint: str | Path, image: str | Path, out: str | Path,
                    score_thr: float = 0.3, device: str = 'cpu', min_side: int = 512) -> int:
    """Run ``config`` with ``checkpoint`` on ``image`` and write the picture with boxes to ``out``.

    Images whose short side is below ``min_side`` are drawn enlarged (boxes scaled alike) so labels stay legible.

    Returns:
        The number of detections drawn (score >= ``score_thr``).
    """
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS

    for path, what in ((config, 'config'), (checkpoint, 'checkpoint'), (image, 'image')):
        if not Path(path).is_file():
            raise FileNotFoundError(f'{what} not found: {path}')
    model = init_detector(str(config), str(checkpoint), device=device)
    result = inference_detector(model, str(image))
    visualizer = VISUALIZERS.build(dict(type='DetLocalVisualizer', name=f'pit_det_{Path(out).stem}'))
    visualizer.dataset_meta = model.dataset_meta
    img = mmcv.imconvert(mmcv.imread(str(image)), 'bgr', 'rgb')
    scale = max(1.0, min_side / min(img.shape[:2]))
    if scale > 1:
        img = mmcv.imrescale(img, scale, interpolation='nearest')
        result.pred_instances.bboxes = result.pred_instances.bboxes * scale
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    visualizer.add_datasample('prediction', img, data_sample=result, draw_gt=False, pred_score_thr=score_thr,
                              out_file=str(out))
    return int(np.sum(result.pred_instances.scores.cpu().numpy() >= score_thr))
