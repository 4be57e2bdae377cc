"""Deformable DETR whose deformable attention runs the fused CPU kernel on CPU tensors."""
from __future__ import annotations

from mmdet.models.detectors import DeformableDETR
from mmdet.registry import MODELS

from ..ops import use_fused_cpu_deform_attn

CPU_DEFORM_ATTN = ('fused', 'mmcv')


@MODELS.register_module()
class FastDeformableDETR(DeformableDETR):
    """mmdet's ``DeformableDETR`` with a choice of CPU deformable attention; identical on CUDA.

    Args:
        cpu_deform_attn: ``'fused'`` (pit_det's C++ kernel, default) or ``'mmcv'`` (mmcv's pure-PyTorch
            fallback). Both give the same numbers; the fused one is several times faster on CPU.
        **kwargs: everything ``DeformableDETR`` takes.
    """

    def __init__(self, *args, cpu_deform_attn: str = 'fused', **kwargs) -> None:
        if cpu_deform_attn not in CPU_DEFORM_ATTN:
            raise ValueError(f'cpu_deform_attn must be one of {CPU_DEFORM_ATTN}, got {cpu_deform_attn!r}')
        super().__init__(*args, **kwargs)
        self.cpu_deform_attn = cpu_deform_attn
        use_fused_cpu_deform_attn(self, enable=cpu_deform_attn == 'fused')
