from .ms_deform_attn import (
    CPU_DEFORM_ATTN,
    GRAPH,
    FusedMultiScaleDeformableAttention,
    deform_attn_graph,
    kernel_isa,
    level_starts,
    load_extension,
    ms_deform_attn_cpu,
    set_cpu_deform_attn,
)

__all__ = [
    'CPU_DEFORM_ATTN',
    'GRAPH',
    'FusedMultiScaleDeformableAttention',
    'deform_attn_graph',
    'kernel_isa',
    'level_starts',
    'load_extension',
    'ms_deform_attn_cpu',
    'set_cpu_deform_attn',
]
