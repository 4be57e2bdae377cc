from .ms_deform_attn import (FusedMultiScaleDeformableAttention, load_extension, ms_deform_attn_cpu,
                             use_fused_cpu_deform_attn)

__all__ = ['FusedMultiScaleDeformableAttention', 'load_extension', 'ms_deform_attn_cpu',
           'use_fused_cpu_deform_attn']
