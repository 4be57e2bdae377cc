"""A fused CPU multi-scale deformable attention (the core of Deformable DETR's encoder and decoder).

mmcv has no CPU kernel for this op: on CPU tensors ``MultiScaleDeformableAttention`` runs
``multi_scale_deformable_attn_pytorch``, which materialises every sampled value through ``grid_sample`` and
concatenates them before weighting. The C++ kernel in ``csrc/ms_deform_attn_cpu.cpp`` samples, weights and sums in
one pass (OpenMP through ``at::parallel_for``), forward and backward. It is compiled once per torch, Python, CPU and
source version into ``~/.cache/pit-det/ext`` (``scripts/setup.sh`` does it ahead of time).

Nothing is patched globally: detectors opt in through :func:`use_fused_cpu_deform_attn`, which our configs do via
``FastDeformableDETR(cpu_deform_attn='fused')``. CUDA tensors keep mmcv's CUDA kernel.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import warnings
from pathlib import Path

import torch
from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttention, MultiScaleDeformableAttnFunction,
                                              multi_scale_deformable_attn_pytorch)
from torch import nn


_SOURCE = Path(__file__).parent / 'csrc' / 'ms_deform_attn_cpu.cpp'
_FLAGS = ['-O3', '-march=native', '-fopenmp']
_ext = None
_ext_error: str | None = None


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """The CPU's model name and feature flags (``/proc/cpuinfo``; the model from ``platform`` and no flags where
    there is none): what ``-march=native`` builds for, and what the benchmark reports."""
    try:
        lines = Path('/proc/cpuinfo').read_text().splitlines()
    except OSError:
        return platform.processor(), set()

    def field(key: str) -> str:
        return next((line.split(':', 1)[1].strip() for line in lines if line.startswith(key) and ':' in line), '')
    return field('model name') or platform.processor(), set(field('flags').split())


def cpu_isa() -> tuple[str, bool]:
    """The CPU's widest vector ISA (AMX / AVX-512 BF16 / AVX-512 / AVX2) and whether it computes bf16 natively."""
    flags = cpu_model_and_flags()[1]
    if not flags:
        return 'unknown', False
    native = bool(flags & {'amx_bf16', 'avx512_bf16'})
    for flag, name in (('amx_bf16', 'AMX'), ('avx512_bf16', 'AVX-512 BF16'), ('avx512f', 'AVX-512'), ('avx2', 'AVX2')):
        if flag in flags:
            return name, native
    return 'SSE', native


def _cpu_signature() -> str:
    """CPU model and feature flags: the kernel is built with -march=native."""
    model, flags = cpu_model_and_flags()
    return model + ' '.join(sorted(flags))


def sampling_locations(reference_points: torch.Tensor, offsets: torch.Tensor, spatial_shapes: torch.Tensor,
                       num_points: int) -> torch.Tensor:
    """mmcv's sampling locations ``(bs, queries, heads, levels, points, 2)``, x and y normalised to the input: from
    reference points ``(bs, queries, levels, 2)`` plus offsets in pixels of each level, or from reference boxes
    ``(bs, queries, levels, 4)`` plus offsets in fractions of the half box per point (refined and two-stage
    models); ``offsets`` is ``(bs, queries, heads, levels, points, 2)``."""
    if reference_points.shape[-1] == 2:
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
        return reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    if reference_points.shape[-1] == 4:
        return reference_points[:, :, None, :, None, :2] \
            + offsets / num_points * reference_points[:, :, None, :, None, 2:] * 0.5
    raise ValueError(f'Last dim of reference_points must be 2 or 4, got {reference_points.shape[-1]}')


def _build_inputs() -> str:
    """Everything of the environment that torch writes into the kernel's build command: its include and library
    paths (as torch spells them: a venv reached through a symbolic link gives other paths than its target), Python's
    include path and the compiler."""
    import sysconfig

    from torch.utils.cpp_extension import include_paths, library_paths
    return '\n'.join([*include_paths(), *library_paths(), sysconfig.get_paths()['include'],
                      os.environ.get('CXX', 'c++')])


def extension_dir() -> Path:
    """Build directory keyed by everything that changes the binary (source, flags, torch, Python, CPU) and by
    everything else in torch's build command (:func:`_build_inputs`): ninja rebuilds whenever the command of the
    folder's last build differs, so two environments sharing one folder would rebuild it each time they took
    turns."""
    root = Path(os.environ.get('PIT_DET_CACHE', Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache'))
                               / 'pit-det'))
    digest = hashlib.sha256(_SOURCE.read_bytes() + ' '.join(_FLAGS).encode() + _cpu_signature().encode()
                            + _build_inputs().encode())
    tag = f'torch{torch.__version__}-py{sys.version_info.major}{sys.version_info.minor}-{digest.hexdigest()[:12]}'
    return root / 'ext' / tag.replace('+', '_')


def load_extension():
    """Compile (first call on a machine) or load the C++ kernel; ``None`` with the reason kept if it fails.

    The source is compiled from a copy inside the build directory, so every copy of pit-det with the same source
    (a clone and an installed package) shares one build: torch records the source's path in its build file and
    would rebuild whenever that path changed. The compiler's output of a failed build is kept in ``build.log``.
    """
    global _ext, _ext_error
    if _ext is not None or _ext_error is not None:
        return _ext
    from torch.utils.cpp_extension import load
    build_dir = extension_dir()
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / _SOURCE.name
    if not source.is_file() or source.read_bytes() != _SOURCE.read_bytes():
        # renamed into place: two processes (test workers, DDP ranks) may build at once, neither reads half a file
        tmp = source.with_name(f'{source.name}.{os.getpid()}.partial')
        tmp.write_bytes(_SOURCE.read_bytes())
        os.replace(tmp, source)
    try:
        _ext = load(name='pit_det_ms_deform_attn_cpu', sources=[str(source)], build_directory=str(build_dir),
                    extra_cflags=_FLAGS, extra_ldflags=['-fopenmp'], verbose=False)
    except Exception as exc:  # a missing compiler or ninja must not break inference: fall back, said once
        log = build_dir / 'build.log'
        log.write_text(f'{type(exc).__name__}: {exc}\n')
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ''
        _ext_error = f'{type(exc).__name__}: {last}'
        warnings.warn(f'pit_det: the fused CPU deformable attention could not be compiled ({_ext_error}); using '
                      "mmcv's pure-PyTorch implementation instead (same numbers, slower). The compiler's output is "
                      f'in {log}; it needs a C++ compiler with OpenMP and ninja (pip install ninja).',
                      RuntimeWarning, stacklevel=2)
    return _ext


# A registered operator rather than an autograd.Function: torch.compile keeps it in the graph (its fake function
# gives the output's shape) instead of breaking the graph at it, and a traced graph names it, so that a FLOP counter
# can count it (pit_det.benchmark.work).
@torch.library.custom_op('pit_det::ms_deform_attn', mutates_args=())
def _fused_forward(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    return _ext.forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


@_fused_forward.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    bs, _, heads, dims = value.shape
    return value.new_empty(bs, sampling_locations.shape[1], heads * dims)


@torch.library.custom_op('pit_det::ms_deform_attn_backward', mutates_args=())
def _fused_backward(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                    sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                    grad_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grad_value, grad_loc, grad_attn = _ext.backward(value, spatial_shapes, level_start_index, sampling_locations,
                                                    attention_weights, grad_output)
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


def ms_deform_attn_cpu(value: torch.Tensor, spatial_shapes: torch.Tensor, sampling_locations: torch.Tensor,
                       attention_weights: torch.Tensor) -> torch.Tensor:
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
    starts = torch.cat((shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]))
    out = _fused_forward(value.to(compute), shapes, starts, sampling_locations.to(compute),
                         attention_weights.to(compute))
    return out.to(dtype)


class FusedMultiScaleDeformableAttention(MultiScaleDeformableAttention):
    """mmcv's ``MultiScaleDeformableAttention`` whose CPU path runs :func:`ms_deform_attn_cpu`.

    Same parameters and arguments; only the core op differs on CPU. The body follows mmcv 2.1.0's ``forward``.
    """

    @staticmethod
    def cpu_core(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        """The op on CPU tensors: the fused kernel (an exporter substitutes a traceable one)."""
        return ms_deform_attn_cpu(value, spatial_shapes, sampling_locations, attention_weights)

    def forward(self, query, key=None, value=None, identity=None, query_pos=None, key_padding_mask=None,
                reference_points=None, spatial_shapes=None, level_start_index=None, **kwargs):
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
        offsets = self.sampling_offsets(query).view(bs, num_query, self.num_heads, self.num_levels,
                                                    self.num_points, 2)
        weights = self.attention_weights(query).view(bs, num_query, self.num_heads, -1).softmax(-1)
        weights = weights.view(bs, num_query, self.num_heads, self.num_levels, self.num_points)
        locations = sampling_locations(reference_points, offsets, spatial_shapes, self.num_points)
        if value.is_cuda:  # mmcv's kernel: float and half only, one dtype for all inputs; autocast mixes them
            output = MultiScaleDeformableAttnFunction.apply(value.float(), spatial_shapes, level_start_index,
                                                            locations.float(), weights.float(),
                                                            self.im2col_step).to(value.dtype)
        else:
            output = self.cpu_core(value, spatial_shapes, level_start_index, locations, weights)
        output = self.output_proj(output)
        if not self.batch_first:
            output = output.permute(1, 0, 2)
        return self.dropout(output) + identity


def use_fused_cpu_deform_attn(model: nn.Module, enable: bool = True) -> int:
    """Switch every ``MultiScaleDeformableAttention`` in ``model`` to the fused CPU op (or back).

    The modules keep their parameters; only their class changes. Returns how many were switched.
    """
    target = FusedMultiScaleDeformableAttention if enable else MultiScaleDeformableAttention
    count = 0
    for module in model.modules():
        if type(module) in (MultiScaleDeformableAttention, FusedMultiScaleDeformableAttention):
            module.__class__ = target
            count += 1
    if enable and count:
        load_extension()
    return count
