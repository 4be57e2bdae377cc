"""A whole Deformable DETR or DINO as one ONNX graph, for any image size, checked against mmdet's ``predict``.

The graph takes ``image``: float32 ``(N, 3, H, W)``, RGB, 0-255, any batch N and any size H x W (the spatial axes are
dynamic: it is traced at one size, and every shape after the input is computed from the input's); it normalises
inside and returns ``boxes`` ``(N, K, 4)`` (x1, y1, x2, y2 in input pixels), ``scores`` ``(N, K)`` and ``labels``
``(N, K)`` int64, best first: for each image, what mmdet's ``predict`` returns for it at its own size (a batch holds
images of one size: a runtime path runs each image alone, cropped to its size, as mmdet's ``predict`` does a batch of
one).

Nothing is patched: the detector traces as it is, in its export mode
(:meth:`~pit_det.models.detectors.PitDetDetector.export_mode`: the deformable attention in its graph form, mmcv's
``grid_sample`` formulation, standard ONNX at opset >= 16, with the levels cut by tensors). Its every size follows the
input's in either mode (mmdet's ``torch._shape_as_tensor`` for the levels' shapes, the detector's own reference points
and proposals, PiT's position embedding resized to its input). A wrapper module runs its backbone, neck, transformer
and head as the detector does; only the last step, mmdet's per-image post-processing (a Python loop over images,
which tracing would unroll into a fixed batch), is written here batched, the same operations on a batch axis. An
mmdet ``DeformableDETR`` or ``DINO`` config is exported as pit-det's class of it (the same weights and numbers).
Export uses torch's TorchScript exporter (``dynamo=False``): the dynamo exporter stops on a data-dependent access
inside mmdet's transformer.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.detectors import DETR_TYPES, PIT_DET_TYPES
from ..models.utils import image_sample
from ..outputs import atomic_write
from .extras import require
from .metadata import EXPORT_METADATA, weights_digest

SUPPORTED = DETR_TYPES
GRAPH_OUTPUTS = ('boxes', 'scores', 'labels')


class ExportError(ValueError):
    """A request the exporter cannot honour; the message says why and what to do."""


class DetectorGraph(nn.Module):
    """``image (N, 3, H, W) RGB 0-255 -> boxes, scores, labels`` through a Deformable DETR or a DINO, batched (DINO
    along its test path: the matching queries only, no denoising queries).

    The head's post-processing is mmdet's ``DETRHead._predict_by_feat_single`` for sigmoid classifiers (Deformable
    DETR's focal loss) without rescaling: the top ``max_per_img`` of all query-class scores, boxes from cx, cy, w, h
    to corners in pixels, clamped to the image.
    """

    def __init__(self, detector: nn.Module, height: int, width: int) -> None:
        super().__init__()
        if not detector.bbox_head.loss_cls.use_sigmoid:
            raise ExportError(
                'the exporter knows DETR heads with sigmoid scores (focal loss), as in '
                "mmdet's and this package's configs; this head uses softmax"
            )
        self.detector = detector
        preprocessor = detector.data_preprocessor
        self.register_buffer('mean', preprocessor.mean.detach().clone().view(1, 3, 1, 1))
        self.register_buffer('std', preprocessor.std.detach().clone().view(1, 3, 1, 1))
        # one sample stands for every image of the batch: all share one size, so the transformer builds no masks
        self.samples = [image_sample(height, width)]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from mmdet.structures.bbox import bbox_cxcywh_to_xyxy

        detector = self.detector
        features = detector.extract_feat((image - self.mean) / self.std)
        head_inputs = detector.forward_transformer(features, self.samples)
        all_scores, all_boxes = detector.bbox_head(head_inputs['hidden_states'], head_inputs['references'])
        scores, boxes = all_scores[-1].sigmoid(), all_boxes[-1]  # (N, Q, C), (N, Q, 4): the last decoder layer
        num_classes = scores.shape[-1]
        top = detector.bbox_head.test_cfg.get('max_per_img', scores.shape[1])
        scores, index = scores.flatten(1).topk(top, dim=1)
        boxes = torch.gather(boxes, 1, (index // num_classes).unsqueeze(-1).expand(-1, -1, 4))
        size = torch._shape_as_tensor(image)[[3, 2, 3, 2]].to(boxes.dtype)  # w, h, w, h of this input, traced
        boxes = torch.minimum((bbox_cxcywh_to_xyxy(boxes) * size).clamp(min=0), size)
        return boxes, scores, index % num_classes


def reference_predict(model: nn.Module, image: torch.Tensor) -> list[np.ndarray]:
    """mmdet's own ``predict`` on ``image`` ``(N, 3, H, W)`` RGB 0-255, image by image, stacked as the graph's
    ``boxes``, ``scores``, ``labels``."""
    preprocessor = model.data_preprocessor
    mean, std = preprocessor.mean.view(1, 3, 1, 1), preprocessor.std.view(1, 3, 1, 1)
    outputs = []
    with torch.no_grad():
        for one in image:
            sample = image_sample(*image.shape[-2:])
            instances = model.predict((one[None] - mean) / std, [sample], rescale=False)[0].pred_instances
            outputs.append((instances.bboxes.numpy(), instances.scores.numpy(), instances.labels.numpy()))
    return [np.stack(parts) for parts in zip(*outputs, strict=True)]


def build_exportable(config, checkpoint: str | Path):
    """The detector of ``config`` (a path, or an mmengine ``Config`` its caller has read: its ``filename`` is what the
    export records) with ``checkpoint`` loaded, in eval mode, knowing what it was built from."""
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from ..models.detectors import build_detector

    if isinstance(config, Config):
        cfg = config
    elif Path(config).is_file():
        cfg = Config.fromfile(str(config))
    else:
        raise ExportError(f'config not found: {config}')
    config_path = cfg.filename
    register_all_modules()
    if cfg.model.get('type') not in SUPPORTED:
        raise ExportError(
            f'{config_path}: a {cfg.model.get("type")} detector; the exporter knows Deformable DETR (plain, '
            f'refine and two-stage) and DINO: {", ".join(SUPPORTED)}'
        )
    cfg.model.type = PIT_DET_TYPES.get(cfg.model.type, cfg.model.type)  # the class that has an export mode
    model = build_detector(cfg, checkpoint)
    # the config's own class list first: mmdet names COCO's classes for a checkpoint that records none
    classes = (cfg.get('test_dataloader', {}).get('dataset', {}).get('metainfo') or {}).get('classes') or (
        model.dataset_meta or {}
    ).get('classes')
    model.export_origin = dict(
        config=str(config_path), checkpoint=str(checkpoint), classes=list(classes) if classes else None
    )
    return model


def level_shapes(model: nn.Module, height: int, width: int) -> list[tuple[int, int]]:
    """The (height, width) of each feature level the encoder sees for a ``height x width`` input."""
    with torch.no_grad():
        features = model.extract_feat(torch.zeros(1, 3, height, width))
    return [tuple(int(v) for v in f.shape[-2:]) for f in features]


MIN_SIDE = 32  # the smallest input side of any detector here (four levels down to 1 px at stride 32)


def min_side(model: nn.Module) -> int:
    """The smallest input side ``model`` takes: :data:`MIN_SIDE`, or the backbone's patch if larger."""
    return max(MIN_SIDE, getattr(model.backbone, 'patch_size', 1))


def shape_problem(model: nn.Module, height: int, width: int, levels: list[tuple[int, int]] | None = None) -> str | None:
    """Why ``model`` cannot run a ``height x width`` input (the same in mmdet's ``predict`` as in the graph), or
    None: a side under the backbone's smallest input, or a two-stage detector whose ``num_queries`` proposals are
    picked (``topk``) among fewer encoder positions than that (``levels``: :func:`level_shapes` of the size, when
    the caller has them)."""
    if min(height, width) < min_side(model):
        return f'this detector needs at least {min_side(model)} px per side'
    if getattr(model, 'as_two_stage', False):
        levels = levels or level_shapes(model, height, width)
        positions = sum(h * w for h, w in levels)
        if positions < model.num_queries:
            return (
                f"the two-stage detector picks its {model.num_queries} queries among the encoder's positions, "
                f'and this size has {positions} (levels {", ".join(f"{h}x{w}" for h, w in levels)})'
            )
    return None


def check_shape(model: nn.Module, height: int, width: int) -> None:
    """Raise unless ``model`` runs a ``height x width`` input (:func:`shape_problem`).

    Raises:
        ExportError: naming the reason and the smallest square size that works.
    """
    problem = shape_problem(model, height, width)
    if problem:
        side = next((s for s in range(32, 2049, 8) if shape_problem(model, s, s) is None), None)
        hint = f': give a larger --size, e.g. {side}x{side}' if side else ''
        raise ExportError(f'shape {height}x{width}: {problem}{hint}')


def one_pixel_size(model: nn.Module, max_side: int = 512) -> tuple[int, int] | None:
    """The smallest ``h x 4h`` input (1:4) whose coarsest level is one pixel high and that ``model`` runs; None if no
    ``h`` up to ``max_side / 4`` gives one. Shape arithmetic of a traced graph goes wrong first at such a size."""
    for height in (h for h in range(32, max_side // 4 + 1, 8) if h >= min_side(model)):  # a side it takes
        levels = level_shapes(model, height, 4 * height)
        if min(levels)[0] == 1 and shape_problem(model, height, 4 * height, levels) is None:
            return height, 4 * height
    return None


def metadata(model: nn.Module, height: int, width: int) -> dict[str, str]:
    """What the file records of its origin (:data:`~pit_det.deploy.metadata.EXPORT_METADATA`): the config and checkpoint
    it was exported from (``model.export_origin``, set by :func:`build_exportable`), the sha256 of the weights, the
    classes and the input size. A detector that runs the file checks the weights and the number of classes against
    its own."""
    origin = getattr(model, 'export_origin', {})
    values = (
        origin.get('config', ''),
        origin.get('checkpoint', ''),
        weights_digest(model),
        str(model.bbox_head.num_classes),
        json.dumps(origin.get('classes')),
        f'{height}x{width}',
    )
    return dict(zip(EXPORT_METADATA, values, strict=True))


def check_opset(opset: int) -> None:
    """Raise :class:`ExportError` for an opset without ``GridSample`` (the deformable attention's graph form)."""
    if opset < 16:
        raise ExportError(f'--opset {opset}: GridSample needs opset >= 16')


def export(model: nn.Module, height: int, width: int, out: str | Path, opset: int = 17) -> Path:
    """Write ``model`` as ONNX at ``height x width`` (:func:`write_onnx`) after checking the opset and that the
    detector runs that size (:func:`check_shape`)."""
    check_opset(opset)
    check_shape(model, height, width)
    return write_onnx(model, height, width, out, opset)


def write_onnx(model: nn.Module, height: int, width: int, out: str | Path, opset: int) -> Path:
    """Trace ``model`` in its export mode at ``height x width`` into ONNX, with its origin in the metadata
    (:func:`metadata`), and check the file with ``onnx.checker``. Nothing is left at ``out`` if any step fails."""
    onnx, _ = require('onnx', 'onnxruntime', purpose='ONNX export needs')
    graph = DetectorGraph(model, height, width).eval()
    props = metadata(model, height, width)
    axes = {'image': {0: 'batch', 2: 'height', 3: 'width'}, **{name: {0: 'batch'} for name in GRAPH_OUTPUTS}}

    def write(tmp: Path) -> None:
        model.export_mode(True)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter('ignore')  # the tracer's notes on mmdet's Python-level shape checks
                torch.onnx.export(
                    graph,
                    (torch.rand(2, 3, height, width) * 255,),
                    str(tmp),
                    opset_version=opset,
                    input_names=['image'],
                    output_names=list(GRAPH_OUTPUTS),
                    dynamic_axes=axes,
                    dynamo=False,
                )
        finally:
            model.export_mode(False)
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, props)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))

    return atomic_write(out, write)


@dataclass
class Comparison:
    runtime: str
    size: tuple[int, int]
    batch: int
    topk: int
    max_box_diff_px: float
    max_score_diff: float
    labels_equal: bool
    torch_ms: float
    runtime_ms: float

    @property
    def ok(self) -> bool:
        return self.max_box_diff_px <= 0.05 and self.max_score_diff <= 1e-4 and self.labels_equal

    def __str__(self) -> str:
        head = (
            f'{self.runtime} vs mmdet predict at {self.size[0]}x{self.size[1]} (batch of {self.batch}), top '
            f'{self.topk}: '
        )
        tail = f'; one run: mmdet {self.torch_ms:.0f} ms, {self.runtime} {self.runtime_ms:.0f} ms'
        if 'int8' in self.runtime:  # a check of the float graph does not apply: INT8 changes the numbers by design
            return (
                f'{head}max score diff {self.max_score_diff:.2e}, labels '
                f'{"identical" if self.labels_equal else "differ"} (INT8 changes the numbers by design: measure its '
                f'accuracy with mim test){tail}'
            )
        return (
            f'{head}max box diff {self.max_box_diff_px:.2e} px (<= 0.05), max score diff '
            f'{self.max_score_diff:.2e} (<= 1e-4), labels {"identical" if self.labels_equal else "DIFFER"}{tail}'
        )


def load_image(path: str | Path, height: int, width: int) -> torch.Tensor:
    """An image file as the graph's input: RGB, 0-255, resized to ``height x width``, ``(1, 3, H, W)`` float32."""
    import mmcv

    img = mmcv.imread(str(path), channel_order='rgb')
    if img is None:
        raise ExportError(f'image {path} cannot be read')
    img = mmcv.imresize(img, (width, height))
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()


TIE = 1e-6  # scores closer than this are one score: their order is the float rounding's, in either runtime


def _max_box_diff(got: tuple, expected: tuple, k: int) -> float:
    """The largest box difference over each image's top ``k``, each detection set against mmdet's of the same rank
    or, where scores tie (within :data:`TIE`), against the closest of mmdet's detections of the same label and score:
    two runtimes may order tied detections either way."""
    worst = 0.0
    for n in range(len(got[0])):
        for i in range(k):
            ties = np.flatnonzero((np.abs(expected[1][n] - got[1][n, i]) <= TIE) & (expected[2][n] == got[2][n, i]))
            rows = np.union1d(ties, [i])
            worst = max(worst, float(np.abs(expected[0][n, rows] - got[0][n, i]).max(-1).min()))
    return worst


def compare(model: nn.Module, runtime, image: torch.Tensor, topk: int = 20) -> Comparison:
    """Run the exported graph (``runtime``: a :class:`~pit_det.deploy.runtimes.Runtime`, or the path of an ONNX file
    for onnxruntime) on the batch ``image`` ``(N, 3, H, W)`` at once, and mmdet's ``predict`` (fused op, as
    deployed) image by image; compare the top-k of every image."""
    from .runtimes import Runtime

    if not isinstance(runtime, Runtime):
        runtime = Runtime('onnxruntime', runtime)
    start = time.perf_counter()
    expected = reference_predict(model, image)
    torch_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    got = runtime(image.numpy())
    runtime_ms = (time.perf_counter() - start) * 1000
    if got[0].shape != expected[0].shape:
        raise ExportError(f'{runtime.path} returned boxes of shape {got[0].shape}, mmdet {expected[0].shape}')
    k = min(topk, expected[1].shape[1])
    name = runtime.runtime + (f' {runtime.precision}' if runtime.runtime != 'onnxruntime' else '')
    return Comparison(
        runtime=name,
        size=tuple(image.shape[-2:]),
        batch=image.shape[0],
        topk=k,
        max_box_diff_px=_max_box_diff(got, expected, k),
        max_score_diff=float(np.abs(got[1][:, :k] - expected[1][:, :k]).max()),
        labels_equal=bool(np.array_equal(got[2][:, :k], expected[2][:, :k])),
        torch_ms=torch_ms,
        runtime_ms=runtime_ms,
    )
