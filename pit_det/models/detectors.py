"""pit-det's detectors: Deformable DETR and DINO with the fused CPU kernel, the inference paths, checked
checkpoints and an export mode (what :class:`PitDetDetector` adds to either), and the one builder of a detector from a
config and a checkpoint (:func:`build_detector`)."""

from __future__ import annotations

from pathlib import Path

import torch
from mmdet.models.detectors import DINO, DeformableDETR
from mmdet.models.layers import DeformableDetrTransformerEncoder
from mmdet.registry import MODELS
from torch import Tensor

from ..checkpoint.matching import FitsDetectorCheckpoints
from ..ops import CPU_DEFORM_ATTN, GRAPH, set_cpu_deform_attn
from .inference import InferenceOptions, RunsInferencePaths

# the detectors pit-det's tools (export, the sampling analysis) take: mmdet's multi-scale deformable DETRs and ours
DETR_TYPES = ('DeformableDETR', 'FastDeformableDETR', 'DINO', 'FastDINO')
# mmdet's class -> pit-det's (the same model, with its options and an export mode)
PIT_DET_TYPES = {'DeformableDETR': 'FastDeformableDETR', 'DINO': 'FastDINO'}


def check_cpu_deform_attn(value: str, option: str = 'model.cpu_deform_attn') -> None:
    """Raise ``ValueError`` naming ``option`` unless ``value`` is one of :data:`CPU_DEFORM_ATTN`."""
    if value not in CPU_DEFORM_ATTN:
        raise ValueError(f'{option}={value!r}: use one of {", ".join(CPU_DEFORM_ATTN)}')


def level_grid(height: Tensor | int, width: Tensor | int, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """``(x, y)`` of every position of a ``height x width`` level, each ``(height, width)`` float32, from 0.

    mmdet writes each side as ``torch.linspace(a, a + n - 1, n)``; ``arange(n)`` gives the same numbers exactly (the
    step is 1), and a traced graph of it holds at every size, where an exported ``linspace`` divides by ``n - 1``
    (NaN for a level one pixel high or wide: any side under 80 px with PiT's strides)."""
    ys = torch.arange(height, dtype=torch.float32, device=device)
    xs = torch.arange(width, dtype=torch.float32, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
    return grid_x, grid_y


class PitDetEncoder(DeformableDetrTransformerEncoder):
    """mmdet's Deformable DETR encoder (the same layers and weights) whose reference points are built by
    :func:`level_grid`: the same numbers, and a graph that follows its input's size."""

    @staticmethod
    def get_encoder_reference_points(spatial_shapes: Tensor, valid_ratios: Tensor, device) -> Tensor:
        """mmdet's reference points ``(bs, sum(h * w), levels, 2)``: each position's centre, normalised to the
        valid part of its level, then scaled to every level's."""
        points = []
        for level, (height, width) in enumerate(spatial_shapes):
            x, y = level_grid(height, width, device)
            x = (x.reshape(-1)[None] + 0.5) / (valid_ratios[:, None, level, 0] * width)
            y = (y.reshape(-1)[None] + 0.5) / (valid_ratios[:, None, level, 1] * height)
            points.append(torch.stack((x, y), -1))
        return torch.cat(points, 1)[:, :, None] * valid_ratios[:, None]


def build_detector(
    config,
    checkpoint: str | Path | None = None,
    device: str = 'cpu',
    cfg_options: dict | None = None,
    inference: InferenceOptions | None = None,
):
    """The detector of ``config`` (a path or an mmengine ``Config``) through mmdet's ``init_detector``, in eval mode
    on ``device``, its ``cfg`` attached: ``checkpoint`` loaded (with its classes as ``dataset_meta``), or random
    weights without one. The backbone's pretrained ``init_cfg`` is dropped either way (the checkpoint holds every
    weight; random weights are what was asked for). ``inference``: options already parsed, for its inference path
    (:meth:`RunsInferencePaths.set_inference`). The one builder of the export, the benchmark and drawing.

    Raises:
        FileNotFoundError: no such config.
        ValueError: an inference path other than eager for mmdet's own detector class (before it is built).
        CheckpointMismatchError: the checkpoint does not fit, or classifies another number of classes.
    """
    import warnings

    from mmdet.apis import init_detector
    from mmengine.config import Config

    if not isinstance(config, Config):
        if not Path(config).is_file():
            raise FileNotFoundError(f'config not found: {config}')
        config = Config.fromfile(str(config))
    if cfg_options:
        config.merge_from_dict(cfg_options)
    config.model.backbone.init_cfg = None
    detector_class = MODELS.get(config.model.type)
    runs_paths = isinstance(detector_class, type) and issubclass(detector_class, RunsInferencePaths)
    if inference not in (None, InferenceOptions()) and not runs_paths:  # mmdet's own detectors run eager only
        raise ValueError(
            f"{config.model.type} runs eager only: the other inference paths are pit-det's detectors' "
            '(FastDeformableDETR, FastDINO)'
        )
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='checkpoint is None')  # random weights: mmdet names COCO's classes
        model = init_detector(config, None if checkpoint is None else str(checkpoint), device=device)
    if checkpoint is not None and isinstance(model, FitsDetectorCheckpoints):
        model.refuse_for_testing(checkpoint)
    if isinstance(model, RunsInferencePaths) and inference is not None:
        model.set_inference(inference)
    return model


class PitDetDetector(RunsInferencePaths, FitsDetectorCheckpoints):
    """What every pit-det detector adds to its mmdet class (put it first in the bases): a choice of CPU deformable
    attention (identical on CUDA), the inference paths of :mod:`pit_det.models.inference`, and checkpoints checked as
    they load (:class:`~pit_det.checkpoint.matching.FitsDetectorCheckpoints`).

    Args:
        cpu_deform_attn: ``'fused'`` (pit_det's C++ kernel, default) or ``'mmcv'`` (mmcv's pure-PyTorch
            fallback). Both give the same numbers; the fused one is several times faster on CPU.
        inference: how ``predict`` (``mim test``, inference) runs: ``dict(path='eager')`` (default), ``'bf16'``
            (backbone, neck and encoder under bf16 autocast; decoder, head and boxes in float32), ``'compile'``
            (``torch.compile`` of the backbone, in place), or an exported graph (:mod:`pit_det.deploy.runtimes`) with
            ``model_file=`` a file from ``pit-det-export-onnx``: ``'onnxruntime'`` (an ONNX file), ``'openvino'``
            (ONNX or OpenVINO IR; ``precision='f32'``/``'bf16'``, default OpenVINO's choice for the CPU) or
            ``'openvino-int8'`` (an INT8 IR). Each image runs at its own size; a file exported from other weights or
            classes is refused. E.g. ``mim test ... --cfg-options model.inference.path=bf16``. Training is always
            eager.
        **kwargs: everything the mmdet detector takes.
    """

    def __init__(self, *args, cpu_deform_attn: str = 'fused', inference: dict | None = None, **kwargs) -> None:
        check_cpu_deform_attn(cpu_deform_attn)
        options = InferenceOptions.parse(inference)  # before anything is built
        super().__init__(*args, **kwargs)
        self.set_inference(options)
        self.cpu_deform_attn = cpu_deform_attn
        set_cpu_deform_attn(self, cpu_deform_attn)
        self.check_loaded_checkpoints()

    def _init_layers(self) -> None:
        """mmdet's layers, the encoder as :class:`PitDetEncoder` holding the very parameters mmdet built for its own
        (built on the meta device: nothing initialised twice, nothing drawn from the random stream)."""
        encoder_cfg = self.encoder
        super()._init_layers()
        with torch.device('meta'):
            encoder = PitDetEncoder(**encoder_cfg)
        encoder.load_state_dict(self.encoder.state_dict(keep_vars=True), assign=True)
        if any(t.is_meta for t in (*encoder.parameters(), *encoder.buffers())):  # a tensor outside the state dict
            raise RuntimeError("PitDetEncoder holds a tensor that mmdet's encoder state dict does not carry")
        self.encoder = encoder

    def export_mode(self, enable: bool = True) -> None:
        """Switch the detector into the form a graph exporter traces (``enable``), or back to how it was built.

        Every input size follows from the traced input's in either form (reference points and proposals from
        :func:`level_grid`, PiT's position embedding resized to its input); export mode adds the deformable
        attention's graph form on the CPU (``pit_det.ops.deform_attn_graph``: standard ONNX, levels cut by tensors).
        """
        set_cpu_deform_attn(self, GRAPH if enable else self.cpu_deform_attn)

    def gen_encoder_output_proposals(self, memory: Tensor, memory_mask: Tensor | None, spatial_shapes: Tensor):
        """mmdet's two-stage proposals (one box per encoder position: its centre, 0.05 * 2^level wide and high,
        in inverse-sigmoid space; ``inf`` where padded or near a border) and the memory they are scored from, with
        the grid from :func:`level_grid`: the same numbers, and a graph that follows its input's size."""
        bs = memory.size(0)
        proposals, start = [], 0
        for level, (height, width) in enumerate(spatial_shapes):
            if memory_mask is not None:
                mask = memory_mask[:, start : start + height * width].view(bs, height, width)
                valid = torch.stack([(~mask[:, 0, :]).sum(1), (~mask[:, :, 0]).sum(1)], -1)  # (w, h) per image
                scale = valid.view(bs, 1, 1, 2)
            else:
                scale = torch.stack([width, height]).view(1, 1, 1, 2)
            grid = torch.stack(level_grid(height, width, memory.device), -1)
            grid = (grid.unsqueeze(0).expand(bs, -1, -1, -1) + 0.5) / scale
            wh = torch.ones_like(grid) * 0.05 * (2.0**level)
            proposals.append(torch.cat((grid, wh), -1).view(bs, -1, 4))
            start += height * width
        proposals = torch.cat(proposals, 1)
        valid = ((proposals > 0.01) & (proposals < 0.99)).sum(-1, keepdim=True) == proposals.shape[-1]
        proposals = torch.log(proposals / (1 - proposals))
        if memory_mask is not None:
            proposals = proposals.masked_fill(memory_mask.unsqueeze(-1), float('inf'))
            memory = memory.masked_fill(memory_mask.unsqueeze(-1), 0.0)
        proposals = proposals.masked_fill(~valid, float('inf'))
        memory = self.memory_trans_norm(self.memory_trans_fc(memory.masked_fill(~valid, 0.0)))
        return memory, proposals


@MODELS.register_module()
class FastDeformableDETR(PitDetDetector, DeformableDETR):
    """mmdet's ``DeformableDETR`` with pit-det's options (:class:`PitDetDetector`: ``cpu_deform_attn``,
    ``inference``, checked checkpoints). Also lets two-stage models use ``embed_dims`` other than 256 (see
    :meth:`get_proposal_pos_embed`)."""

    def get_proposal_pos_embed(self, proposals, num_pos_feats=None, temperature=10000):
        """mmdet's two-stage proposal embedding, sized to ``embed_dims`` (mmdet fixes it at 4 x 128 = 512 = 2 x 256).

        Identical for the standard 256 dims; makes two-stage work with narrower transformers such as the demo's.
        """
        return DeformableDETR.get_proposal_pos_embed(proposals, num_pos_feats or self.embed_dims // 2, temperature)


@MODELS.register_module()
class FastDINO(PitDetDetector, DINO):
    """mmdet's ``DINO`` (contrastive denoising, mixed query selection, look forward twice) with pit-det's options
    (:class:`PitDetDetector`: ``cpu_deform_attn``, ``inference``, checked checkpoints; the denoising label embedding
    counts as a classification layer). Also lets the decoder use ``embed_dims`` other than 256 (see
    :meth:`_init_layers`)."""

    def _init_layers(self) -> None:
        """mmdet's layers; the decoder's query-position MLP takes the 512 features mmdet's sine encoding of a box
        gives (4 coordinates x 128), which mmdet sizes as ``2 * embed_dims``: the same layer for the standard 256
        dims, and one that fits narrower transformers such as the convergence study's."""
        from mmdet.models.layers.transformer.utils import MLP

        super()._init_layers()
        sine_features = 4 * 128  # mmdet's coordinate_to_encoding(num_feats=128) of (cx, cy, w, h)
        if self.decoder.ref_point_head.layers[0].in_features != sine_features:
            self.decoder.ref_point_head = MLP(sine_features, self.embed_dims, self.embed_dims, 2)
