"""Deformable DETR whose deformable attention runs the fused CPU kernel on CPU tensors."""
from __future__ import annotations

from pathlib import Path

import torch
from mmdet.models.detectors import DeformableDETR
from mmdet.registry import MODELS
from mmengine.logging import print_log
from mmengine.structures import InstanceData

from ..ops import use_fused_cpu_deform_attn
from .fit import CheckpointMismatchError, fit_detector_checkpoint
from .runtimes import RUNTIMES, open_exported, openvino_precision

CPU_DEFORM_ATTN = ('fused', 'mmcv')
INFERENCE_PATHS = ('eager', 'bf16', 'compile', *RUNTIMES)


def runtime_options(inference: dict) -> tuple[str | None, str | None]:
    """``(model_file, precision)`` of an ``inference`` dict (``onnx_file`` is the older name of ``model_file``)."""
    return inference.get('model_file', inference.get('onnx_file')), inference.get('precision')


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
    if checkpoint is not None and isinstance(model, FastDeformableDETR):
        model.refuse_other_classes(checkpoint)
    return model


@MODELS.register_module()
class FastDeformableDETR(DeformableDETR):
    """mmdet's ``DeformableDETR`` with a choice of CPU deformable attention; identical on CUDA.

    Also lets two-stage models use ``embed_dims`` other than 256 (see :meth:`get_proposal_pos_embed`), and refuses
    checkpoints that do not fit it (``load_from``, ``--resume``, ``mim test``, inference): see
    :func:`pit_det.models.fit.fit_detector_checkpoint`.

    Args:
        cpu_deform_attn: ``'fused'`` (pit_det's C++ kernel, default) or ``'mmcv'`` (mmcv's pure-PyTorch
            fallback). Both give the same numbers; the fused one is several times faster on CPU.
        inference: how ``predict`` (``mim test``, inference) runs: ``dict(path='eager')`` (default), ``'bf16'``
            (backbone, neck and encoder under bf16 autocast; decoder, head and boxes in float32: see
            :meth:`predict`), ``'compile'`` (``torch.compile`` of the backbone, in place), or an exported graph
            (:mod:`pit_det.models.runtimes`) with ``model_file=`` a file from ``pit-det-export-onnx``:
            ``'onnxruntime'`` (an ONNX file), ``'openvino'`` (ONNX or OpenVINO IR; ``precision='f32'``/``'bf16'``,
            default OpenVINO's choice for the CPU) or ``'openvino-int8'`` (an INT8 IR). Each image runs at its own
            size; a file exported from other weights or classes is refused.
            E.g. ``mim test ... --cfg-options model.inference.path=bf16``. Training is always eager.
        **kwargs: everything ``DeformableDETR`` takes.
    """

    def __init__(self, *args, cpu_deform_attn: str = 'fused', inference: dict | None = None, **kwargs) -> None:
        if cpu_deform_attn not in CPU_DEFORM_ATTN:
            raise ValueError(f'cpu_deform_attn must be one of {CPU_DEFORM_ATTN}, got {cpu_deform_attn!r}')
        self.inference = {'path': 'eager', **(inference or {})}
        if self.inference['path'] not in INFERENCE_PATHS:
            raise ValueError(f'inference path must be one of {INFERENCE_PATHS}, got {self.inference["path"]!r}')
        model_file, precision = runtime_options(self.inference)
        if (self.inference['path'] in RUNTIMES) != bool(model_file):
            raise ValueError(f"inference: model_file=FILE goes with path={' or '.join(map(repr, RUNTIMES))} (and "
                             'only with them)')
        if precision and not self.inference['path'].startswith('openvino'):
            raise ValueError("inference: precision= goes with the OpenVINO paths ('openvino', 'openvino-int8')")
        if precision:
            self.inference['precision'] = openvino_precision(precision)
        super().__init__(*args, **kwargs)
        self._compiled, self._session, self._bf16 = False, None, False
        self.class_layers_differ: list[str] = []
        self.checkpoint_num_classes: int | None = None
        use_fused_cpu_deform_attn(self, enable=cpu_deform_attn == 'fused')
        self._register_load_state_dict_pre_hook(self._check_fit_on_load)

    def _check_fit_on_load(self, state_dict: dict, prefix: str, *args) -> None:
        tolerated = fit_detector_checkpoint(self, state_dict, prefix)
        self.class_layers_differ = tolerated  # fine-tuning tolerates them; testing and inference do not
        bias = state_dict.get(f'{prefix}bbox_head.cls_branches.0.bias')
        self.checkpoint_num_classes = int(bias.shape[0]) if bias is not None else None
        if tolerated:
            print_log(f'classification layers differ in size (another class set; they keep their initialisation): '
                      f'{"; ".join(tolerated)}', logger='current', level=30)

    def refuse_other_classes(self, checkpoint: str | Path) -> None:
        """Raise unless the last loaded checkpoint's classification layers have this model's number of classes:
        a test or an inference with another class set would score every class as another.

        Raises:
            CheckpointMismatchError: naming both numbers and the option to set.
        """
        if not self.class_layers_differ:
            return
        theirs = self.checkpoint_num_classes
        raise CheckpointMismatchError(
            f'{checkpoint} classifies {theirs} classes, this config {self.bbox_head.num_classes} '
            f'({self.class_layers_differ[0]}): test and infer with the config it was trained with, or set '
            f'model.bbox_head.num_classes={theirs} and the datasets\' metainfo.classes to its classes')

    def predict(self, batch_inputs, batch_data_samples, rescale: bool = True):
        """mmdet's ``predict`` along the ``inference`` path, with boxes and scores returned in float32 even under
        bf16/fp16 autocast (mmdet's metrics and visualiser convert them to numpy, which has no bfloat16).

        The bf16 path runs the backbone, the neck and the encoder (nearly all the work: thousands of tokens) under
        bf16 autocast and the rest in float32: the decoder's 300 queries, the reference points, the proposals and the
        boxes. bf16 keeps 8 bits of mantissa, so a normalised coordinate near 0.5 moves in steps of 1/512, 1.3 px
        at 666 px; the whole model under autocast lost 0.011 mAP on the demo, this split keeps the boxes exact.
        """
        path = self.inference['path']
        if path in RUNTIMES:
            return self._predict_runtime(batch_inputs, batch_data_samples, rescale)
        if path == 'compile' and not self._compiled:
            self.backbone.compile()  # in place: parameter names, and so checkpoints, stay as they are
            self._compiled = True
        self._bf16 = path == 'bf16'
        try:
            results = super().predict(batch_inputs, batch_data_samples, rescale)
        finally:
            self._bf16 = False
        for result in results:
            result.pred_instances.bboxes = result.pred_instances.bboxes.float()
            result.pred_instances.scores = result.pred_instances.scores.float()
        return results

    def extract_feat(self, batch_inputs):
        if not self._bf16:
            return super().extract_feat(batch_inputs)
        with torch.autocast(batch_inputs.device.type, dtype=torch.bfloat16):
            feats = super().extract_feat(batch_inputs)
        return tuple(feat.float() for feat in feats)

    def forward_encoder(self, feat, *args, **kwargs):
        if not self._bf16:
            return super().forward_encoder(feat, *args, **kwargs)
        with torch.autocast(feat.device.type, dtype=torch.bfloat16):
            outputs = super().forward_encoder(feat, *args, **kwargs)
        return {**outputs, 'memory': outputs['memory'].float()}

    def _predict_runtime(self, batch_inputs, batch_data_samples, rescale: bool):
        """Run the exported graph (which normalises itself) on each de-normalised RGB image, cropped to its own size
        (``img_shape``): what mmdet's ``predict`` computes for a batch of one."""
        if self._session is None:
            model_file, precision = runtime_options(self.inference)
            self._session = open_exported(self.inference['path'], model_file, self, precision)
            print_log(f'inference: {self.inference["path"]} runs {model_file} in {self._session.precision}',
                      logger='current')
        preprocessor = self.data_preprocessor
        images = (batch_inputs.float() * preprocessor.std + preprocessor.mean).cpu().numpy()
        for image, sample in zip(images, batch_data_samples):
            height, width = sample.metainfo['img_shape'][:2]
            boxes, scores, labels = (torch.from_numpy(out[0]) for out in self._session(image[None, :, :height, :width]))
            instances = InstanceData(bboxes=boxes, scores=scores, labels=labels)
            if rescale:
                instances.bboxes /= instances.bboxes.new_tensor(sample.metainfo['scale_factor']).repeat((1, 2))
            sample.pred_instances = instances
        return batch_data_samples

    def get_proposal_pos_embed(self, proposals, num_pos_feats=None, temperature=10000):
        """mmdet's two-stage proposal embedding, sized to ``embed_dims`` (mmdet fixes it at 4 x 128 = 512 = 2 x 256).

        Identical for the standard 256 dims; makes two-stage work with narrower transformers such as the demo's.
        """
        return DeformableDETR.get_proposal_pos_embed(proposals, num_pos_feats or self.embed_dims // 2, temperature)
