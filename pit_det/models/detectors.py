"""pit-det's detectors: Deformable DETR and DINO with the fused CPU kernel, the inference paths and checked
checkpoints (what :class:`PitDetDetector` adds to either), and the one builder of a detector from a config and a
checkpoint (:func:`build_detector`)."""
from __future__ import annotations

from pathlib import Path

from mmdet.models.detectors import DINO, DeformableDETR
from mmdet.registry import MODELS

from ..checkpoint.matching import FitsDetectorCheckpoints
from ..ops import use_fused_cpu_deform_attn
from .inference import InferenceOptions, RunsInferencePaths

CPU_DEFORM_ATTN = ('fused', 'mmcv')
# the detectors pit-det's tools (export, the sampling analysis) take: mmdet's multi-scale deformable DETRs and ours
DETR_TYPES = ('DeformableDETR', 'FastDeformableDETR', 'DINO', 'FastDINO')


def check_cpu_deform_attn(value: str, option: str = 'model.cpu_deform_attn') -> None:
    """Raise ``ValueError`` naming ``option`` unless ``value`` is one of :data:`CPU_DEFORM_ATTN`."""
    if value not in CPU_DEFORM_ATTN:
        raise ValueError(f'{option}={value!r}: use one of {", ".join(CPU_DEFORM_ATTN)}')


def build_detector(config, checkpoint: str | Path | None = None, device: str = 'cpu', cfg_options: dict | None = None):
    """The detector of ``config`` (a path or an mmengine ``Config``) through mmdet's ``init_detector``, in eval mode
    on ``device``, its ``cfg`` attached: ``checkpoint`` loaded (with its classes as ``dataset_meta``), or random
    weights without one. The backbone's pretrained ``init_cfg`` is dropped either way (the checkpoint holds every
    weight; random weights are what was asked for). The one builder of the export, the benchmark and drawing.

    Raises:
        FileNotFoundError: no such config.
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
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='checkpoint is None')  # random weights: mmdet names COCO's classes
        model = init_detector(config, None if checkpoint is None else str(checkpoint), device=device)
    if checkpoint is not None and isinstance(model, FitsDetectorCheckpoints):
        model.refuse_for_testing(checkpoint)
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
        use_fused_cpu_deform_attn(self, enable=cpu_deform_attn == 'fused')
        self.check_loaded_checkpoints()


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
