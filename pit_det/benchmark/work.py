"""How much work a model does, and how much the machine can do: the two halves of "how close to the limit".

Work is counted in multiply-accumulates (MACs; one MAC is two FLOPs) by mmengine's ``FlopAnalyzer``, which traces
the call and counts every matrix product, convolution and normalisation as mmdet's ``tools/analysis_tools/
get_flops.py`` does. It does not know two operators that DETRs spend their time in, so they get a handle here:

- multi-scale deformable attention (the fused CPU op ``pit_det::ms_deform_attn`` and mmcv's CUDA op): per query,
  head, level and point, four bilinear taps and one attention weight, each one MAC per channel: ``5 N_q L K C``
  (Deformable DETR, appendix A.1, the count fundamentalvision/Deformable-DETR#23 points to);
- ``scaled_dot_product_attention``: ``q @ k^T`` and ``weights @ v``;
- ``grid_sample`` (bilinear), what transformers' and mmcv's pure-PyTorch deformable attentions sample with: four
  taps per output element.

The machine's limit is what a large matrix product reaches with the run's threads, in each precision the hardware
has (:func:`matmul_probes`), timed in the same rounds as the models; a large copy gives the memory bandwidth.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.utils import explicit_attention
from ..ops.ms_deform_attn import cpu_isa

DEFORM_ATTN_OPS = ('pit_det::ms_deform_attn', 'prim::PythonOp.MultiScaleDeformableAttnFunction')
PARTS = ('backbone', 'neck', 'encoder', 'decoder', 'bbox_head')  # a DETR's parts, as mmdet names its attributes
PROBE_SIZE = {'cpu': 4096, 'cuda': 8192}  # a product large enough to run at the machine's rate, quick to repeat
COPY_MIB = 512  # far beyond any cache


def _shape(value) -> list[int]:
    from mmengine.analysis.jit_handles import get_shape

    return get_shape(value)


def deform_attn_macs(inputs: list, outputs: list) -> int:
    """MACs of one multi-scale deformable attention: ``value (bs, keys, heads, dims)`` sampled at
    ``locations (bs, queries, heads, levels, points, 2)``, 4 bilinear taps plus the weight per point and channel."""
    bs, _, heads, dims = _shape(inputs[0])
    _, queries, _, levels, points, _ = _shape(inputs[3])
    return 5 * bs * queries * heads * levels * points * dims


def sdpa_macs(inputs: list, outputs: list) -> int:
    """MACs of ``scaled_dot_product_attention(q (..., L, E), k (..., S, E), v (..., S, Ev))``."""
    q, k, v = (_shape(i) for i in inputs[:3])
    return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def grid_sample_macs(inputs: list, outputs: list) -> int:
    """MACs of a bilinear ``grid_sample``: four taps per output element."""
    return 4 * math.prod(_shape(outputs[0]))


@dataclass
class Work:
    """GMACs of one call, of each part of a detector that ran in it (``other``: the rest) and of each operator."""

    gmacs: float
    parts: dict[str, float] = field(default_factory=dict)
    operators: dict[str, float] = field(default_factory=dict)


def count_work(call: Callable, model: nn.Module, x: torch.Tensor) -> Work:
    """The :class:`Work` of ``call(x)``, counted by mmengine's ``FlopAnalyzer`` with the handles above.

    Raises:
        RuntimeError: the call cannot be traced (the message says where).
    """
    from mmengine.analysis import FlopAnalyzer

    class _Traced(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, inp):
            return call(inp)

    with explicit_attention(model), torch.no_grad():
        analyzer = FlopAnalyzer(_Traced(), (x,))
        analyzer.set_op_handle(
            **{op: deform_attn_macs for op in DEFORM_ATTN_OPS},
            **{'aten::scaled_dot_product_attention': sdpa_macs, 'aten::grid_sampler': grid_sample_macs},
        )
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = analyzer.total()
        by_module = analyzer.by_module()
        operators = {op: macs / 1e9 for op, macs in analyzer.by_operator().items()}
    parts = {name: by_module[f'inner.{name}'] / 1e9 for name in PARTS if by_module.get(f'inner.{name}')}
    if parts:
        parts['other'] = max(total / 1e9 - sum(parts.values()), 0.0)
    return Work(total / 1e9, parts, operators)


def precision_of(inference: str, device: str) -> str | None:
    """The precision whose matrix products an inference path runs (None: one no probe measures, INT8)."""
    if inference == 'openvino-int8':
        return None
    if inference in ('bf16', 'fp16'):
        return inference
    if inference == 'openvino':  # OpenVINO's CPU default: bf16 where the CPU computes it natively
        return 'bf16' if cpu_isa()[1] else 'fp32'
    if device == 'cuda' and torch.backends.cuda.matmul.allow_tf32:
        return 'tf32'
    return 'fp32'


def matmul_probes(device: str) -> dict[str, tuple[Callable[[], object], float]]:
    """``{precision: (call, GMACs of one call)}``: an n^3 matrix product in fp32, and where the hardware computes
    them, bf16 (CPU: AVX-512 BF16 or AMX) or TF32, fp16 and bf16 (CUDA)."""
    n = PROBE_SIZE[device]
    gmacs = n**3 / 1e9
    precisions = {'fp32': torch.float32}
    if device == 'cuda':
        precisions.update(tf32=torch.float32, fp16=torch.float16, bf16=torch.bfloat16)
    elif cpu_isa()[1]:
        precisions['bf16'] = torch.bfloat16
    probes = {}
    for name, dtype in precisions.items():
        a = torch.rand(n, n, device=device, dtype=dtype)
        b = torch.rand(n, n, device=device, dtype=dtype)

        def product(a=a, b=b, tf32=name == 'tf32'):
            if device != 'cuda':
                return torch.mm(a, b)
            before = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                return torch.mm(a, b)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = before

        probes[f'matmul {name}'] = (product, gmacs)
    return probes


def copy_bandwidth_gb_s(device: str, mib: int = COPY_MIB, repeats: int = 5) -> float:
    """Memory bandwidth: bytes read plus written per second by a ``mib`` MiB tensor copy, median of ``repeats``."""
    src = torch.rand(mib * 2**18, device=device)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    times = []
    for _ in range(repeats + 1):  # the first copy touches the pages
        sync()
        start = time.perf_counter()
        dst.copy_(src)
        sync()
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * src.element_size() / statistics.median(times[1:]) / 1e9
