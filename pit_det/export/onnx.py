"""A whole Deformable DETR as one ONNX graph, checked in onnxruntime against torch.

The graph takes ``image``: float32 ``(1, 3, H, W)``, RGB, 0-255, at the shape it was exported for; it normalises
inside, runs the detector's own ``predict`` and returns ``boxes`` ``(1, K, 4)`` (x1, y1, x2, y2 in input pixels),
``scores`` ``(1, K)`` and ``labels`` ``(1, K)`` int64, best first: what mmdet's ``predict`` returns for that input.

Nothing in mmdet is patched: a wrapper module holds the detector, and the fused CPU deformable attention is swapped
for mmcv's pure-PyTorch op, whose ``grid_sample`` is standard ONNX (opset >= 16). Export uses torch's TorchScript
exporter (``dynamo=False``): the dynamo exporter stops on a data-dependent access inside mmdet's post-processing.
The batch is fixed at 1: mmdet's ``predict`` handles images one by one in Python lists, which tracing unrolls.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

SUPPORTED = ('DeformableDETR', 'FastDeformableDETR')


class ExportError(ValueError):
    """A request the exporter cannot honour; the message says why and what to do."""


def require_runtime():
    """``(onnx, onnxruntime)``, or an error naming the extra that brings them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ExportError(f'ONNX export needs onnx and onnxruntime ({exc}): pip install "pit-det[export]"') from None
    return onnx, onnxruntime


class DetectorGraph(nn.Module):
    """``image (1, 3, H, W) RGB 0-255 -> boxes, scores, labels`` around a Deformable DETR's ``predict``."""

    def __init__(self, detector: nn.Module, height: int, width: int) -> None:
        super().__init__()
        from mmdet.structures import DetDataSample
        self.detector = detector
        preprocessor = detector.data_preprocessor
        self.register_buffer('mean', preprocessor.mean.detach().clone().view(1, 3, 1, 1))
        self.register_buffer('std', preprocessor.std.detach().clone().view(1, 3, 1, 1))
        shape = (height, width)
        self.samples = [DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, batch_input_shape=shape,
                                                    pad_shape=shape, scale_factor=(1.0, 1.0)))]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        result = self.detector.predict((image - self.mean) / self.std, self.samples, rescale=False)[0]
        instances = result.pred_instances
        return instances.bboxes[None], instances.scores[None], instances.labels[None].long()


def build(config: str | Path, checkpoint: str | Path):
    """The detector of ``config`` with ``checkpoint`` loaded, in eval mode."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint

    if not Path(config).is_file():
        raise ExportError(f'config not found: {config}')
    register_all_modules()
    cfg = Config.fromfile(str(config))
    if cfg.model.get('type') not in SUPPORTED:
        raise ExportError(f'{config}: a {cfg.model.get("type")} detector; the exporter knows Deformable DETR '
                          f'({", ".join(SUPPORTED)}: plain, refine and two-stage)')
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    load_checkpoint(model, str(checkpoint), map_location='cpu')
    return model.eval()


def check_shape(model: nn.Module, height: int, width: int) -> None:
    patch = getattr(model.backbone, 'patch_size', 1)
    if height < max(32, patch) or width < max(32, patch):
        raise ExportError(f'shape {height}x{width}: this detector needs at least {max(32, patch)} px per side')


def export(model: nn.Module, height: int, width: int, out: str | Path, opset: int = 17) -> Path:
    """Write ``model`` as ONNX at ``height x width`` and check the file with ``onnx.checker``."""
    from ..ops import use_fused_cpu_deform_attn
    onnx, _ = require_runtime()
    if opset < 16:
        raise ExportError(f'opset {opset}: GridSample needs opset >= 16')
    check_shape(model, height, width)
    use_fused_cpu_deform_attn(model, enable=False)
    graph = DetectorGraph(model, height, width).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the tracer's notes on mmdet's Python-level shape checks
            torch.onnx.export(graph, (torch.rand(1, 3, height, width) * 255,), str(out), opset_version=opset,
                              input_names=['image'], output_names=['boxes', 'scores', 'labels'], dynamo=False)
    finally:
        use_fused_cpu_deform_attn(model, enable=True)
    onnx.checker.check_model(onnx.load(str(out)))
    return out


@dataclass
class Comparison:
    topk: int
    max_box_diff_px: float
    max_score_diff: float
    labels_equal: bool
    torch_ms: float
    onnxruntime_ms: float

    @property
    def ok(self) -> bool:
        return self.max_box_diff_px <= 0.05 and self.max_score_diff <= 1e-4 and self.labels_equal


def load_image(path: str | Path, height: int, width: int) -> torch.Tensor:
    """An image file as the graph's input: RGB, 0-255, resized to ``height x width``, ``(1, 3, H, W)`` float32."""
    import mmcv
    img = mmcv.imread(str(path), channel_order='rgb')
    if img is None:
        raise ExportError(f'image {path} cannot be read')
    img = mmcv.imresize(img, (width, height))
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()


def compare(model: nn.Module, onnx_path: str | Path, image: torch.Tensor, topk: int = 20) -> Comparison:
    """Run the file in onnxruntime and the model in torch (fused op, as deployed) on ``image``; compare the top-k."""
    _, ort = require_runtime()
    height, width = image.shape[-2:]
    graph = DetectorGraph(model, height, width).eval()
    with torch.no_grad():
        start = time.perf_counter()
        expected = [t.numpy() for t in graph(image)]
        torch_ms = (time.perf_counter() - start) * 1000
    session = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    start = time.perf_counter()
    got = session.run(['boxes', 'scores', 'labels'], {'image': image.numpy()})
    ort_ms = (time.perf_counter() - start) * 1000
    k = min(topk, expected[1].shape[1])
    return Comparison(topk=k, max_box_diff_px=float(np.abs(got[0][:, :k] - expected[0][:, :k]).max()),
                      max_score_diff=float(np.abs(got[1][:, :k] - expected[1][:, :k]).max()),
                      labels_equal=bool(np.array_equal(got[2][:, :k], expected[2][:, :k])),
                      torch_ms=torch_ms, onnxruntime_ms=ort_ms)
