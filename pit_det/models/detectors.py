"""Deformable DETR whose deformable attention runs the fused CPU kernel on CPU tensors."""
from __future__ import annotations

from pathlib import Path

import torch
from mmdet.models.detectors import DeformableDETR
from mmdet.registry import MODELS
from mmengine.logging import print_log
from mmengine.structures import InstanceData
from torch import nn

from ..ops import use_fused_cpu_deform_attn
from .utils import EXPORT_METADATA, onnxruntime_session, weights_digest
from .fit import CheckpointMismatchError, fit_detector_checkpoint
from .sources import CheckpointReadError

CPU_DEFORM_ATTN = ('fused', 'mmcv')
INFERENCE_PATHS = ('eager', 'bf16', 'compile', 'onnxruntime')


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


def exported_metadata(path: str | Path) -> dict[str, str]:
    """The pit-det metadata of an exported ONNX file (:data:`~pit_det.models.utils.EXPORT_METADATA`).

    Raises:
        FileNotFoundError: no such file.
        CheckpointReadError: not an ONNX file, or one without pit-det's metadata (exported by another tool).
    """
    import onnx
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'ONNX file not found: {path}')
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a file of another format
        raise CheckpointReadError(f'{path} is not an ONNX file ({type(exc).__name__}): give the .onnx file written '
                                  'by pit-det-export-onnx') from None
    meta = {p.key: p.value for p in proto.metadata_props if p.key in EXPORT_METADATA}
    if set(meta) != set(EXPORT_METADATA):
        raise CheckpointReadError(f'{path} does not say what it was exported from (no pit-det metadata: another '
                                  'exporter or an older pit-det): export it again with pit-det-export-onnx CONFIG '
                                  'CHECKPOINT OUT.onnx --shape HxW')
    return meta


def check_exported(meta: dict[str, str], path: str | Path, model: nn.Module) -> None:
    """Refuse an exported file whose number of classes or weights differ from ``model``'s.

    Raises:
        CheckpointMismatchError: naming both sides and the export command.
    """
    again = f'export this checkpoint with pit-det-export-onnx CONFIG CHECKPOINT {path} --shape HxW'
    num_classes = model.bbox_head.num_classes
    if meta['pit_det.num_classes'] != str(num_classes):
        raise CheckpointMismatchError(
            f'{path} was exported from a detector of {meta["pit_det.num_classes"]} classes ({meta["pit_det.config"]}), '
            f'this one has {num_classes}: {again}')
    if meta['pit_det.weights_sha256'] != weights_digest(model):
        raise CheckpointMismatchError(
            f'{path} was exported from other weights ({meta["pit_det.checkpoint"]}, config {meta["pit_det.config"]}) '
            f'than this detector holds: {again}')


def open_exported(path: str | Path, model: nn.Module):
    """An onnxruntime session of the exported file ``path``, after checking it was exported from ``model``."""
    check_exported(exported_metadata(path), path, model)
    return onnxruntime_session(path)


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
            :meth:`predict`), ``'compile'`` (``torch.compile`` of the backbone, in place) or ``'onnxruntime'`` with
            ``onnx_file=`` a file from ``pit-det-export-onnx`` (its input shape must be the test images' shape; a file
            exported from other weights or classes is refused).
            E.g. ``mim test ... --cfg-options model.inference.path=bf16``. Training is always eager.
        **kwargs: everything ``DeformableDETR`` takes.
    """

    def __init__(self, *args, cpu_deform_attn: str = 'fused', inference: dict | None = None, **kwargs) -> None:
        if cpu_deform_attn not in CPU_DEFORM_ATTN:
            raise ValueError(f'cpu_deform_attn must be one of {CPU_DEFORM_ATTN}, got {cpu_deform_attn!r}')
        self.inference = {'path': 'eager', **(inference or {})}
        if self.inference['path'] not in INFERENCE_PATHS:
            raise ValueError(f'inference path must be one of {INFERENCE_PATHS}, got {self.inference["path"]!r}')
        if (self.inference['path'] == 'onnxruntime') != ('onnx_file' in self.inference):
            raise ValueError("inference: onnx_file=FILE goes with path='onnxruntime' (and only with it)")
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
        if path == 'onnxruntime':
            return self._predict_onnxruntime(batch_inputs, batch_data_samples, rescale)
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

    def _predict_onnxruntime(self, batch_inputs, batch_data_samples, rescale: bool):
        """Run the exported graph (which normalises itself) on the de-normalised RGB batch."""
        if self._session is None:
            self._session = open_exported(self.inference['onnx_file'], self)
        expected = tuple(self._session.get_inputs()[0].shape[-2:])
        if tuple(batch_inputs.shape[-2:]) != expected:
            raise ValueError(f'{self.inference["onnx_file"]} takes {expected[0]}x{expected[1]} images, this batch is '
                             f'{batch_inputs.shape[-2]}x{batch_inputs.shape[-1]}: export at the test pipeline\'s '
                             'size (pit-det-export-onnx --shape)')
        preprocessor = self.data_preprocessor
        images = (batch_inputs.float() * preprocessor.std + preprocessor.mean).cpu().numpy()
        boxes, scores, labels = self._session.run(None, {'image': images})
        for i, sample in enumerate(batch_data_samples):
            instances = InstanceData(bboxes=torch.from_numpy(boxes[i]), scores=torch.from_numpy(scores[i]),
                                     labels=torch.from_numpy(labels[i]))
            if rescale:
                instances.bboxes /= instances.bboxes.new_tensor(sample.metainfo['scale_factor']).repeat((1, 2))
            sample.pred_instances = instances
        return batch_data_samples

    def get_proposal_pos_embed(self, proposals, num_pos_feats=None, temperature=10000):
        """mmdet's two-stage proposal embedding, sized to ``embed_dims`` (mmdet fixes it at 4 x 128 = 512 = 2 x 256).

        Identical for the standard 256 dims; makes two-stage work with narrower transformers such as the demo's.
        """
        return DeformableDETR.get_proposal_pos_embed(proposals, num_pos_feats or self.embed_dims // 2, temperature)
