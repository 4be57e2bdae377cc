"""A fused CPU multi-scale deformable attention (the core of Deformable DETR's encoder and decoder).

mmcv has no CPU kernel for this op: on CPU tensors ``MultiScaleDeformableAttention`` runs
``multi_scale_deformable_attn_pytorch``, which materialises every sampled value through ``grid_sample`` and
concatenates them before weighting. The C++ kernel in ``csrc/ms_deform_attn_cpu.cpp`` samples, weights and sums in
one pass (OpenMP through ``at::parallel_for``), forward and backward, its loops built for AVX-512, AVX2 and the
baseline and chosen at load time as torch chooses its own (:func:`kernel_isa`). It is compiled once per torch, Python
and source version into ``~/.cache/pit-det/ext`` (``scripts/setup.sh`` does it ahead of time).

Nothing is patched globally: detectors opt in through :func:`set_cpu_deform_attn`, which our configs do via
``FastDeformableDETR(cpu_deform_attn='fused')``. CUDA tensors keep mmcv's CUDA kernel. The same module also holds the
op's graph form (:func:`deform_attn_graph`), the setting an exporter traces (``set_cpu_deform_attn(model, 'graph')``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from mmcv.ops.multi_scale_deform_attn import (
    MultiScaleDeformableAttention,
    MultiScaleDeformableAttnFunction,
    multi_scale_deformable_attn_pytorch,
)
from torch import nn

from . import build
from .build import cpu_isa, cpu_model_and_flags  # noqa: F401  (the benchmark's and the reports' CPU facts)

_SOURCE = build.SOURCE
# what a config's ``cpu_deform_attn`` takes: pit-det's C++ kernel, or mmcv's pure-PyTorch implementation
CPU_DEFORM_ATTN = ('fused', 'mmcv')
GRAPH = 'graph'  # the form a graph exporter traces: levels cut by tensors, standard ONNX (deform_attn_graph)
_ext = None
_ext_error: str | None = None


def sampling_locations(
    reference_points: torch.Tensor, offsets: torch.Tensor, spatial_shapes: torch.Tensor, num_points: int
) -> torch.Tensor:
    """mmcv's sampling locations ``(bs, queries, heads, levels, points, 2)``, x and y normalised to the input: from
    reference points ``(bs, queries, levels, 2)`` plus offsets in pixels of each level, or from reference boxes
    ``(bs, queries, levels, 4)`` plus offsets in fractions of the half box per point (refined and two-stage
    models); ``offsets`` is ``(bs, queries, heads, levels, points, 2)``."""
    if reference_points.shape[-1] == 2:
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
        return reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    if reference_points.shape[-1] == 4:
        return (
            reference_points[:, :, None, :, None, :2]
            + offsets / num_points * reference_points[:, :, None, :, None, 2:] * 0.5
        )
    raise ValueError(f'Last dim of reference_points must be 2 or 4, got {reference_points.shape[-1]}')


def extension_dir() -> Path:
    """The kernel's build folder (:func:`pit_det.ops.build.extension_dir` of this module's source)."""
    return build.extension_dir(_SOURCE)


def load_extension():
    """Compile (first call on a machine) or load the C++ kernel; ``None`` with the reason kept if it fails.

    The compiler's output of a failed build is kept in ``build.log`` of the build folder.
    """
    global _ext, _ext_error
    if _ext is not None or _ext_error is not None:
        return _ext
    try:
        ext = build.compile_extension(_SOURCE)
        # torch's choice for its own kernels (ATEN_CPU_CAPABILITY overrides it); the kernel caps it at the CPU's
        ext.select_isa(torch.backends.cpu.get_cpu_capability())
        _ext = ext
    except Exception as exc:  # a missing compiler or ninja must not break inference: fall back, said once
        log = extension_dir() / 'build.log'
        log.write_text(f'{type(exc).__name__}: {exc}\n')
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ''
        _ext_error = f'{type(exc).__name__}: {last}'
        warnings.warn(
            f'pit_det: the fused CPU deformable attention could not be compiled ({_ext_error}); using '
            "mmcv's pure-PyTorch implementation instead (same numbers, slower). The compiler's output is "
            f'in {log}; it needs a C++ compiler with OpenMP and ninja (pip install ninja).',
            RuntimeWarning,
            stacklevel=2,
        )
    return _ext


def kernel_isa() -> str | None:
    """The ISA whose loops the fused kernel runs (``AVX512``, ``AVX2`` or ``DEFAULT``); None without the kernel."""
    ext = load_extension()
    return None if ext is None else ext.isa()


# A registered operator rather than an autograd.Function: torch.compile keeps it in the graph (its fake function
# gives the output's shape) instead of breaking the graph at it, and a traced graph names it, so that a FLOP counter
# can count it (pit_det.benchmark.work).
@torch.library.custom_op('pit_det::ms_deform_attn', mutates_args=())
def _fused_forward(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    return _ext.forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


@_fused_forward.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    bs, _, heads, dims = value.shape
    return value.new_empty(bs, sampling_locations.shape[1], heads * dims)


@torch.library.custom_op('pit_det::ms_deform_attn_backward', mutates_args=())
def _fused_backward(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    grad_output: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grad_value, grad_loc, grad_attn = _ext.backward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output
    )
    return grad_value, grad_loc, grad_attn


@_fused_backward.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output):
    return torch.empty_like(value), torch.empty_like(sampling_locations), torch.empty_like(attention_weights)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_output):
    grad_value, grad_loc, grad_attn = _fused_backward(*ctx.saved_tensors, grad_output)
    return grad_value, None, None, grad_loc, grad_attn


_fused_forward.register_autograd(_backward, setup_context=_setup_context)


def deform_attn_graph(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """mmcv's ``multi_scale_deformable_attn_pytorch`` (``grid_sample`` per level, standard ONNX at opset >= 16) with
    the levels cut at ``level_start_index`` and shaped by ``spatial_shapes`` as tensors, so that a traced graph
    follows the input's size instead of the size it was traced at (mmcv splits by Python ints)."""
    bs, _, num_heads, dims = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    grids = 2 * sampling_locations - 1
    weights = attention_weights.transpose(1, 2).reshape(bs * num_heads, 1, num_queries, num_levels, num_points)
    out = None
    for level in range(num_levels):  # summed level by level: no tensor of every level's samples at once
        height, width = spatial_shapes[level, 0], spatial_shapes[level, 1]
        start = level_start_index[level]  # slices with tensor bounds are traced as such (ONNX Slice)
        stop = level_start_index[level + 1] if level + 1 < num_levels else None
        level_value = value[:, start:stop].flatten(2).transpose(1, 2).reshape(bs * num_heads, dims, height, width)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled = torch.nn.functional.grid_sample(
            level_value, grid, mode='bilinear', padding_mode='zeros', align_corners=False
        )  # (bs * heads, dims, queries, points)
        level_out = (sampled * weights[:, :, :, level]).sum(-1)
        out = level_out if out is None else out + level_out
    out = out.view(bs, num_heads * dims, num_queries)
    return out.transpose(1, 2).contiguous()


def level_starts(spatial_shapes: torch.Tensor) -> torch.Tensor:
    """Where each level starts in the flattened keys: ``0, h0*w0, h0*w0 + h1*w1, ...`` (``level_start_index``)."""
    return torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))


def ms_deform_attn_cpu(
    value: torch.Tensor, spatial_shapes: torch.Tensor, sampling_locations: torch.Tensor, attention_weights: torch.Tensor
) -> torch.Tensor:
    """Drop-in for mmcv's ``multi_scale_deformable_attn_pytorch`` (same arguments, same result), fused.

    Args:
        value: ``(bs, num_keys, num_heads, head_dims)``.
        spatial_shapes: ``(num_levels, 2)``, each ``(h, w)``.
        sampling_locations: ``(bs, num_queries, num_heads, num_levels, num_points, 2)``, ``(x, y)`` in [0, 1].
        attention_weights: ``(bs, num_queries, num_heads, num_levels, num_points)``.

    Returns:
        ``(bs, num_queries, num_heads * head_dims)``.
    """
    if load_extension() is None:
        return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations, attention_weights)
    dtype = value.dtype
    compute = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    shapes = spatial_shapes.to(torch.long)
    out = _fused_forward(
        value.to(compute), shapes, level_starts(shapes), sampling_locations.to(compute), attention_weights.to(compute)
    )
    return out.to(dtype)


class FusedMultiScaleDeformableAttention(MultiScaleDeformableAttention):
    """mmcv's ``MultiScaleDeformableAttention`` whose CPU path runs :func:`ms_deform_attn_cpu`, or
    :func:`deform_attn_graph` while ``graph`` is set (what an exporter traces; :func:`set_cpu_deform_attn`).

    Same parameters and arguments; only the core op differs on CPU. The body follows mmcv 2.1.0's ``forward``.
    """

    graph = False

    def forward(
        self,
        query,
        key=None,
        value=None,
        identity=None,
        query_pos=None,
        key_padding_mask=None,
        reference_points=None,
        spatial_shapes=None,
        level_start_index=None,
        **kwargs,
    ):
        value = query if value is None else value
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value = query.permute(1, 0, 2), value.permute(1, 0, 2)
        bs, num_query, _ = query.shape
        num_value = value.shape[1]
        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(bs, num_value, self.num_heads, -1)
        offsets = self.sampling_offsets(query).view(bs, num_query, self.num_heads, self.num_levels, self.num_points, 2)
        weights = self.attention_weights(query).view(bs, num_query, self.num_heads, -1).softmax(-1)
        weights = weights.view(bs, num_query, self.num_heads, self.num_levels, self.num_points)
        locations = sampling_locations(reference_points, offsets, spatial_shapes, self.num_points)
        if value.is_cuda:  # mmcv's kernel: float and half only, one dtype for all inputs; autocast mixes them
            output = MultiScaleDeformableAttnFunction.apply(
                value.float(), spatial_shapes, level_start_index, locations.float(), weights.float(), self.im2col_step
            ).to(value.dtype)
        elif self.graph:
            output = deform_attn_graph(value, spatial_shapes, level_start_index, locations, weights)
        else:
            output = ms_deform_attn_cpu(value, spatial_shapes, locations, weights)
        output = self.output_proj(output)
        if not self.batch_first:
            output = output.permute(1, 0, 2)
        return self.dropout(output) + identity


def set_cpu_deform_attn(model: nn.Module, impl: str) -> int:
    """Run every ``MultiScaleDeformableAttention`` in ``model`` on the CPU as ``impl``: ``'fused'`` (the C++ kernel),
    ``'mmcv'`` (mmcv's own class and implementation) or ``'graph'`` (:func:`deform_attn_graph`, for an exporter).

    The modules keep their parameters; this is the one place their class changes (mmcv's <-> ours). Returns how many
    modules there are.
    """
    if impl not in (*CPU_DEFORM_ATTN, GRAPH):
        raise ValueError(f'cpu deformable attention {impl!r}: use one of {", ".join((*CPU_DEFORM_ATTN, GRAPH))}')
    target = MultiScaleDeformableAttention if impl == 'mmcv' else FusedMultiScaleDeformableAttention
    modules = [
        m for m in model.modules() if type(m) in (MultiScaleDeformableAttention, FusedMultiScaleDeformableAttention)
    ]
    for module in modules:
        module.__class__ = target
        if target is FusedMultiScaleDeformableAttention:
            module.graph = impl == GRAPH
        else:
            module.__dict__.pop('graph', None)
    if impl == 'fused' and modules:
        load_extension()
    return len(modules)
