"""pit-det's detectors: Deformable DETR with the fused CPU kernel, the inference paths and checked checkpoints, and
the one builder of a detector from a config and a checkpoint (:func:`build_detector`)."""
from __future__ import annotations

from pathlib import Path

from mmdet.models.detectors import DeformableDETR
from mmdet.registry import MODELS

from ..checkpoint.matching import FitsDetectorCheckpoints
from ..ops import use_fused_cpu_deform_attn
from .inference import InferenceOptions, RunsInferencePaths

CPU_DEFORM_ATTN = ('fused', 'mmcv')


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
        model.refuse_other_classes(checkpoint)
    return model


@MODELS.register_module()
class FastDeformableDETR(RunsInferencePaths, FitsDetectorCheckpoints, DeformableDETR):
    """mmdet's ``DeformableDETR`` with a choice of CPU deformable attention (identical on CUDA), the inference paths
    of :mod:`pit_det.models.inference`, and checkpoints checked as they load
    (:class:`~pit_det.checkpoint.matching.FitsDetectorCheckpoints`). Also lets two-stage models use ``embed_dims``
    other than 256 (see :meth:`get_proposal_pos_embed`).

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
        **kwargs: everything ``DeformableDETR`` takes.
    """

    def __init__(self, *args, cpu_deform_attn: str = 'fused', inference: dict | None = None, **kwargs) -> None:
        check_cpu_deform_attn(cpu_deform_attn)
        options = InferenceOptions.parse(inference)  # before anything is built
        super().__init__(*args, **kwargs)
        self.set_inference(options)
        use_fused_cpu_deform_attn(self, enable=cpu_deform_attn == 'fused')
        self.check_loaded_checkpoints()

    def get_proposal_pos_embed(self, proposals, num_pos_feats=None, temperature=10000):
        """mmdet's two-stage proposal embedding, sized to ``embed_dims`` (mmdet fixes it at 4 x 128 = 512 = 2 x 256).

        Identical for the standard 256 dims; makes two-stage work with narrower transformers such as the demo's.
        """
        return DeformableDETR.get_proposal_pos_embed(proposals, num_pos_feats or self.embed_dims // 2, temperature)
