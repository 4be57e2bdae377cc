"""Deformable DETR whose deformable attention runs the fused CPU kernel on CPU tensors."""
from __future__ import annotations

from mmdet.models.detectors import DeformableDETR
from mmdet.registry import MODELS
from mmengine.logging import print_log

from ..ops import use_fused_cpu_deform_attn
from .weights import check_detector_fit

CPU_DEFORM_ATTN = ('fused', 'mmcv')


@MODELS.register_module()
class FastDeformableDETR(DeformableDETR):
    """mmdet's ``DeformableDETR`` with a choice of CPU deformable attention; identical on CUDA.

    Also lets two-stage models use ``embed_dims`` other than 256 (see :meth:`get_proposal_pos_embed`), and refuses
    checkpoints that do not fit it (``load_from``, ``--resume``, ``mim test``, inference): see
    :func:`pit_det.models.weights.check_detector_fit`.

    Args:
        cpu_deform_attn: ``'fused'`` (pit_det's C++ kernel, default) or ``'mmcv'`` (mmcv's pure-PyTorch
            fallback). Both give the same numbers; the fused one is several times faster on CPU.
        **kwargs: everything ``DeformableDETR`` takes.
    """

    def __init__(self, *args, cpu_deform_attn: str = 'fused', **kwargs) -> None:
        if cpu_deform_attn not in CPU_DEFORM_ATTN:
            raise ValueError(f'cpu_deform_attn must be one of {CPU_DEFORM_ATTN}, got {cpu_deform_attn!r}')
        super().__init__(*args, **kwargs)
        use_fused_cpu_deform_attn(self, enable=cpu_deform_attn == 'fused')
        self._register_load_state_dict_pre_hook(self._check_fit_on_load)

    def _check_fit_on_load(self, state_dict: dict, prefix: str, *args) -> None:
        tolerated = check_detector_fit(self, state_dict, prefix)
        if tolerated:
            print_log(f'classification layers differ in size (another class set; they keep their initialisation): '
                      f'{"; ".join(tolerated)}', logger='current', level=30)

    def predict(self, batch_inputs, batch_data_samples, rescale: bool = True):
        """mmdet's ``predict``, with boxes and scores returned in float32 even under bf16/fp16 autocast (mmdet's
        metrics and visualiser convert them to numpy, which has no bfloat16)."""
        results = super().predict(batch_inputs, batch_data_samples, rescale)
        for result in results:
            result.pred_instances.bboxes = result.pred_instances.bboxes.float()
            result.pred_instances.scores = result.pred_instances.scores.float()
        return results

    def get_proposal_pos_embed(self, proposals, num_pos_feats=None, temperature=10000):
        """mmdet's two-stage proposal embedding, sized to ``embed_dims`` (mmdet fixes it at 4 x 128 = 512 = 2 x 256).

        Identical for the standard 256 dims; makes two-stage work with narrower transformers such as the demo's.
        """
        return DeformableDETR.get_proposal_pos_embed(proposals, num_pos_feats or self.embed_dims // 2, temperature)
