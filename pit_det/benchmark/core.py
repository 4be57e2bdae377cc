"""Latency, throughput, memory and MACs of backbones and whole detectors, timed side by side.

:func:`run_benchmark` validates the request, measures every model at every size interleaved in one process
(round-robin, one forward of each per round, so machine noise hits all alike and ratios are fair), then collects
median, mean and p90. Timing uses ``torch.inference_mode`` (autograd in ``train`` mode, which times loss and
backward), warm-up, and CUDA synchronisation on GPU. Memory is measured in a separate pass per model: CUDA max
allocated, or on the CPU the growth of the peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``)
during one call in a fresh process.

Where MACs are counted, matrix products of each precision the machine has (:func:`.work.matmul_probes`) run in the
same rounds as the models, so each row's GMAC/s is set against a peak measured under the same conditions; a large
copy after the rounds gives the memory bandwidth. ``by_part`` times a detector's backbone, neck, encoder and decoder
too, through forward hooks (eager paths only: a compiled or exported graph has no parts to hook).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..ops import CPU_DEFORM_ATTN
from . import peers
from .builders import MODES, build_call, check_runtime_spec, is_detector_spec, split_inference
from .report import BenchmarkError, Result, Results, gmac_rate
from .timing import PartTimer, can_measure_rss, interleaved, release_freed_memory, rss_growth_mib
from .work import PARTS, Work, copy_bandwidth_gb_s, matmul_probes, precision_of


@dataclass
class Request:
    models: list[str]
    sizes: list[tuple[int, int]]
    device: str = 'cpu'
    batch: int = 1
    warmup: int = 3
    iters: int = 20
    mode: str = 'backbone'
    checkpoint: str | None = None
    cpu_deform_attn: str = 'fused'
    count_macs: bool = True
    cfg_options: dict | None = None  # merged into every detector config (e.g. model.backbone.with_cp=True)
    by_part: bool = False  # also time (and count) each part of a detector

    def grad_mode(self):
        """No autograd except in ``train`` mode, which times the backward too."""
        return torch.inference_mode(self.mode != 'train')


@dataclass
class Entry:
    """One model being measured at one size."""

    spec: str
    call: Callable
    params_m: float
    work: Work | None
    note: str | None = None
    compile_s: float | None = None
    times: list[float] = field(default_factory=list)
    peak_mib: float = float('nan')
    parts: PartTimer | None = None


def validate(request: Request) -> None:
    """Raise :class:`BenchmarkError` for anything the benchmark cannot honour, before building a model."""
    if request.device not in ('cpu', 'cuda'):
        raise BenchmarkError(f'device {request.device!r}: use cpu or cuda')
    if request.device == 'cuda' and not torch.cuda.is_available():
        raise BenchmarkError('device cuda requested but no CUDA GPU is visible to torch; use --device cpu')
    if request.mode not in MODES:
        raise BenchmarkError(f'mode {request.mode!r}: use one of {", ".join(MODES)}')
    if request.batch < 1 or request.iters < 1 or request.warmup < 0:
        raise BenchmarkError('batch and iters must be >= 1, warmup >= 0')
    if request.cpu_deform_attn not in CPU_DEFORM_ATTN:
        raise BenchmarkError(f'cpu_deform_attn {request.cpu_deform_attn!r}: use {" or ".join(CPU_DEFORM_ATTN)}')
    if len(set(request.models)) != len(request.models):
        raise BenchmarkError(
            f"a model is named twice ({' '.join(request.models)}): its rows would be one model's "
            'measured twice; name each once'
        )
    if request.checkpoint and not Path(request.checkpoint).is_file():
        raise BenchmarkError(f'--checkpoint {request.checkpoint} not found')
    for spec in request.models:
        if peers.is_peer_spec(spec):
            for size in request.sizes:
                peers.check_peer_spec(spec, request.mode, size, request.by_part)
            continue
        if split_inference(spec)[1] == 'fp16' and request.device == 'cpu':
            raise BenchmarkError(f'{spec}: fp16 autocast is for CUDA; on the CPU use @bf16')
        if request.mode == 'train' and split_inference(spec)[1] != 'eager':
            raise BenchmarkError(
                f'{spec}: --mode train times eager training; give the config without @{split_inference(spec)[1]}'
            )
        if not is_detector_spec(spec) and request.mode != 'backbone':
            raise BenchmarkError(f'{spec}: --mode {request.mode} needs a detector config; backbones time the backbone')
        check_runtime_spec(spec, request.mode, request.device)
        if request.by_part and (
            not is_detector_spec(spec)
            or request.mode not in ('forward', 'predict')
            or split_inference(spec)[1] not in ('eager', 'bf16', 'fp16')
        ):
            raise BenchmarkError(
                f'{spec}: --by-part times the parts of a detector in forward or predict mode, on an '
                'eager path (a compiled or exported graph has no parts to time)'
            )
    for h, w in request.sizes:
        if min(h, w) < 32:  # covers every patch size (16, 14 for b)
            raise BenchmarkError(f'size {h}x{w} is smaller than a patch or the 32-px minimum: use at least 32x32')


def _fresh_process_peak(request: Request, spec: str, size: tuple[int, int]) -> float:
    """Peak extra resident memory (MiB) of one forward, in a process that has run nothing else (for a compiled
    model: nothing else but the call that compiles it)."""
    import pit_det  # noqa: F401

    torch.manual_seed(0)
    call = build_call(
        spec, request.mode, size, request.batch, 'cpu', request.cpu_deform_attn, request.checkpoint, request.cfg_options
    ).call
    x = torch.rand(request.batch, 3, *size)
    with request.grad_mode():
        if spec.endswith('@compile'):
            call(x)  # compiles: the memory of compilation is not the model's
            release_freed_memory()  # what that call freed, so that the measured call's peak shows
        return rss_growth_mib(lambda: call(x))


def peak_memory_mib(request: Request, entry: Entry, x: torch.Tensor, size: tuple[int, int]) -> float:
    """CUDA: max allocated during one forward. CPU: VmHWM growth of one forward in a fresh process (in this one,
    memory freed by earlier forwards stays resident and would hide the peak)."""
    if request.device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with request.grad_mode():
            entry.call(x)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if not can_measure_rss():
        return float('nan')
    import multiprocessing

    with multiprocessing.get_context('spawn').Pool(1) as pool:
        return pool.apply(_fresh_process_peak, (request, entry.spec, size))


def measure(request: Request, size: tuple[int, int], progress: Callable[[str], None]) -> tuple[list[Entry], dict]:
    """Build every model for ``size``, time them interleaved (with the matrix-product probes where MACs are
    counted), then measure each one's peak memory. Returns the entries and the probes' GMAC/s by name."""
    h, w = size
    x = torch.rand(request.batch, 3, h, w, device=request.device)
    sync = torch.cuda.synchronize if request.device == 'cuda' else (lambda: None)
    entries = []
    for spec in request.models:
        built = build_call(
            spec,
            request.mode,
            size,
            request.batch,
            request.device,
            request.cpu_deform_attn,
            request.checkpoint,
            request.cfg_options,
            count_macs=request.count_macs,
        )
        params = sum(p.numel() for p in built.model.parameters()) / 1e6
        parts = PartTimer(built.model, PARTS, request.iters, sync) if request.by_part else None
        entries.append(Entry(spec, built.call, params, built.work, note=built.note, parts=parts))
        progress(
            f'built {spec} at {h}x{w}: {params:.2f} M params'
            + (f', {built.work.gmacs:.2f} GMACs' if built.work is not None else '')
        )

    def report_round(i: int, times: dict[str, list[float]]) -> None:
        if i % max(1, request.iters // 5) == 0 or i == request.iters:
            progress(
                f'{h}x{w}: round {i}/{request.iters}: '
                + ', '.join(f'{name} {statistics.median(t):.1f} ms' for name, t in times.items())
            )

    calls = {e.spec: (lambda c=e.call: c(x)) for e in entries}
    with request.grad_mode():
        for e in entries:
            if split_inference(e.spec)[1] == 'compile':  # compiling is timed apart: it is not the model's latency
                sync()
                start = time.perf_counter()
                calls[e.spec]()
                sync()
                e.compile_s = time.perf_counter() - start
                progress(f'compiled {e.spec} at {h}x{w}: the first call took {e.compile_s:.1f} s')
    probes = matmul_probes(request.device) if any(e.work is not None for e in entries) else {}
    calls.update({name: call for name, (call, _) in probes.items()})
    with request.grad_mode():
        times = interleaved(calls, request.warmup, request.iters, sync, report_round)
    limits = {name: gmacs * 1000 / statistics.median(times[name]) for name, (_, gmacs) in probes.items()}
    del probes, calls  # the probes' operands (200 MiB at 4096^2 fp32) must not weigh on the memory passes
    if limits:
        limits['copy'] = copy_bandwidth_gb_s(request.device)
    for e in entries:
        e.times = times[e.spec]
        if e.parts is not None:
            e.parts.remove()
        progress(f'{e.spec} {h}x{w}: measuring peak memory')
        e.peak_mib = peak_memory_mib(request, e, x, size)
    return entries, limits


def collect(request: Request, size: tuple[int, int], entries: list[Entry], limits: dict) -> list[Result]:
    """One :class:`Result` per entry: median, mean, p90, throughput, memory, parameters, MACs, the rate achieved
    and its share of the probe of its precision measured at the same size."""
    results = []
    for e in entries:
        times = sorted(e.times)
        median = statistics.median(times)
        result = Result(
            model=e.spec,
            mode=request.mode,
            size=f'{size[0]}x{size[1]}',
            batch=request.batch,
            inference=split_inference(e.spec)[1],
            device=request.device,
            median_ms=round(median, 3),
            mean_ms=round(statistics.fmean(times), 3),
            p90_ms=round(times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)], 3),
            images_per_s=round(request.batch * 1000 / median, 3),
            peak_mem_mib=round(e.peak_mib, 1),
            params_m=round(e.params_m, 3),
            gmacs=None if e.work is None else round(e.work.gmacs, 3),
            iters=request.iters,
            samples_ms=[round(t, 3) for t in e.times],
            note=e.note,
        )
        if e.compile_s is not None:  # the first call less one run: what compiling cost
            result.compile_s = round(max(e.compile_s - median / 1000, 0.0), 1)
        if e.work is not None:
            result.gmac_per_s = round(gmac_rate(e.work.gmacs, request.batch, median), 2)
            precision = precision_of(result.inference, request.device)
            peak = limits.get(f'matmul {precision}')
            if peak:
                result.peak_precision, result.peak_gmac_per_s = precision, round(peak, 2)
                result.pct_of_peak = round(100 * result.gmac_per_s / peak, 1)
        if e.parts is not None:
            result.parts = {
                name: dict(
                    median_ms=round(statistics.median(t), 3),
                    gmacs=None if e.work is None else round(e.work.parts.get(name, 0.0), 3),
                )
                for name, t in e.parts.times.items()
                if t
            }
            result.parts['other'] = dict(  # post-processing, query selection, glue: the call less its parts
                median_ms=round(max(median - sum(p['median_ms'] for p in result.parts.values()), 0.0), 3),
                gmacs=None if e.work is None else round(e.work.parts.get('other', 0.0), 3),
            )
        results.append(result)
    return results


def run_benchmark(
    models: list[str], sizes: list[tuple[int, int]], progress: Callable[[str], None] = print, **options
) -> Results:
    """Validate, then measure and collect every model at every size; ``options`` are :class:`Request` fields.
    The results carry the machine's measured limits (``Results.limits``, medians over the sizes)."""
    request = Request(models=list(models), sizes=list(sizes), **options)
    validate(request)
    results, limits = Results(), {}
    for size in request.sizes:
        entries, size_limits = measure(request, size, progress)
        results += collect(request, size, entries, size_limits)
        for name, value in size_limits.items():
            limits.setdefault(name, []).append(value)
    results.limits = {name: round(statistics.median(values), 2) for name, values in limits.items()}
    return results
