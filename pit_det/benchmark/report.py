"""Benchmark results: the record of one measurement, the environment, the table, ratios and files."""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..ops.ms_deform_attn import cpu_isa, cpu_model_and_flags, kernel_isa
from ..outputs import save_figure, table, write_csv, write_text


class BenchmarkError(ValueError):
    """A request the benchmark cannot honour; the message says why and what to do instead."""


@dataclass
class Result:
    model: str
    mode: str
    size: str
    batch: int
    inference: str
    device: str
    median_ms: float
    mean_ms: float
    p90_ms: float
    images_per_s: float
    peak_mem_mib: float
    params_m: float
    gmacs: float | None
    iters: int
    samples_ms: list[float] = field(default_factory=list, repr=False)
    gmac_per_s: float | None = None  # GMACs per image x images per second
    peak_precision: str | None = None  # the matrix-product probe this row is set against
    peak_gmac_per_s: float | None = None  # that probe's rate at this size
    pct_of_peak: float | None = None
    compile_s: float | None = None  # @compile: the first call less the median, apart from the latency
    parts: dict | None = None  # by part: {'backbone': {'median_ms': ..., 'gmacs': ...}, ...}
    note: str | None = None  # what a peer row is, and why a row has no GMACs


class Results(list):
    """The rows of one run, and ``limits``: the machine's measured rates in it (``matmul fp32`` etc. in GMAC/s,
    ``copy`` in GB/s), empty where MACs were not counted."""

    limits: dict[str, float] = {}


def size_pixels(size: str) -> int:
    """The pixels of a row's ``HxW`` size."""
    height, width = size.split('x')
    return int(height) * int(width)


def environment(device: str) -> dict:
    import mmcv
    import mmdet
    import mmengine
    import timm

    env = dict(
        date=time.strftime('%Y-%m-%d %H:%M:%S %Z'),
        python=platform.python_version(),
        torch=torch.__version__,
        mmcv=mmcv.__version__,
        mmdet=mmdet.__version__,
        mmengine=mmengine.__version__,
        timm=timm.__version__,
        threads=torch.get_num_threads(),
        machine=platform.machine(),
    )
    try:  # the peers' library (hf: specs), read without importing it
        env['transformers'] = importlib.metadata.version('transformers')
    except importlib.metadata.PackageNotFoundError:
        pass
    env['cpu'] = cpu_model_and_flags()[0]
    env['isa'], env['bf16_native'] = cpu_isa()
    env['cpu_features'] = cpu_features()
    env['fused_kernel_isa'] = kernel_isa()  # the loops the fused deformable attention runs (None: not built)
    if device == 'cuda':
        env['gpu'] = torch.cuda.get_device_name()
        env['cuda'] = torch.version.cuda
    return env


def cpu_features() -> str:
    """What the CPU runtimes' fast paths need, present or not: AVX-512, AVX-512 BF16, VNNI (int8 dot products, AVX-512
    or AVX), AMX."""
    flags = cpu_model_and_flags()[1]
    if not flags:
        return 'unknown'
    present = {
        'AVX2': 'avx2' in flags,
        'AVX-512': 'avx512f' in flags,
        'AVX-512 BF16': 'avx512_bf16' in flags,
        'VNNI': bool(flags & {'avx512_vnni', 'avx_vnni'}),
        'AMX': bool(flags & {'amx_bf16', 'amx_int8'}),
    }
    return ' '.join(f'{name}{"+" if on else "-"}' for name, on in present.items())


def _or_dash(value, spec: str) -> str:
    return '-' if value is None else format(value, spec)


def format_table(results: list[Result], reference: str | None = None) -> str:
    """The markdown table; GMACs are per image (one MAC: two FLOPs), % of peak against the matrix-product probe of
    the row's precision measured in the same rounds; ``x ref``: each row's median over the ``reference`` model's
    (default: the first) at the same size. Rows with a note are followed by it."""
    reference = reference or results[0].model
    ref_ms = {r.size: r.median_ms for r in results if r.model == reference}
    header = [
        'model',
        'mode',
        'size',
        'batch',
        'inference',
        'median ms',
        'x ref',
        'mean ms',
        'p90 ms',
        'img/s',
        'peak MiB',
        'params M',
        'GMACs',
        'GMAC/s',
        '% of peak',
    ]
    rows = [
        [
            r.model,
            r.mode,
            r.size,
            str(r.batch),
            r.inference,
            f'{r.median_ms:.1f}',
            f'{r.median_ms / ref_ms[r.size]:.2f}' if r.size in ref_ms else '-',
            f'{r.mean_ms:.1f}',
            f'{r.p90_ms:.1f}',
            f'{r.images_per_s:.2f}',
            f'{r.peak_mem_mib:.0f}',
            f'{r.params_m:.2f}',
            _or_dash(r.gmacs, '.2f'),
            _or_dash(r.gmac_per_s, '.1f'),
            '-' if r.pct_of_peak is None else f'{r.pct_of_peak:.0f}% {r.peak_precision}',
        ]
        for r in results
    ]
    notes = [f'- {r.model} {r.size}: {r.note}' for r in results if r.note]
    return '\n'.join([table(header, rows, markdown=True), f'x ref: median over {reference} at the same size', *notes])


def format_limits(limits: dict[str, float], threads: int) -> str:
    """The ``limits:`` line under ``machine:``; empty where none were measured."""
    if not limits:
        return ''
    from .work import COPY_MIB, PROBE_SIZE

    n = PROBE_SIZE['cuda' if any(k in limits for k in ('matmul tf32', 'matmul fp16')) else 'cpu']
    rates = [
        f'copy {COPY_MIB} MiB {value:.1f} GB/s'
        if name == 'copy'
        else f'{name.replace("matmul", f"matmul {n}^3")} {value:.1f} GMAC/s'
        for name, value in limits.items()
    ]
    return f'limits (measured in this run, {threads} threads, medians): ' + ', '.join(rates)


def format_parts(results: list[Result]) -> str:
    """Per part of each detector at each size: median ms, GMACs and the share of the row's matrix-product peak the
    part runs at; then how each grows with the pixels between the smallest and the largest size (``t ~ pixels^k``:
    k = 1 linear, 2 quadratic)."""
    rows = []
    for model in dict.fromkeys(r.model for r in results if r.parts):
        rs = [r for r in results if r.model == model and r.parts]
        for part in rs[0].parts:
            rows.append([Path(model).stem, part, *[_part_cell(r, part) for r in rs], *_growth(rs, part)])
    if not rows:
        return ''
    sizes = dict.fromkeys(r.size for r in results if r.parts)
    return table(
        ['model', 'part', *[f'{s}: ms / GMACs / % of peak' for s in sizes], 'ms ~ px^k', 'GMACs ~ px^k'],
        rows,
        markdown=True,
    )


def gmac_rate(gmacs: float, batch: int, ms: float) -> float:
    """GMAC/s of ``batch`` images of ``gmacs`` each in ``ms`` milliseconds: a row's rate and a part's."""
    return gmacs * batch * 1000 / ms


def _part_cell(r: Result, part: str) -> str:
    ms, gmacs = r.parts[part]['median_ms'], r.parts[part]['gmacs']
    cell = f'{ms:.0f} / {_or_dash(gmacs, ".2f")}'
    if gmacs and ms and r.peak_gmac_per_s:
        cell += f' / {100 * gmac_rate(gmacs, r.batch, ms) / r.peak_gmac_per_s:.0f}%'
    return cell


def _growth(rs: list[Result], part: str) -> list[str]:
    if len(rs) < 2:
        return ['-', '-']
    first, last = rs[0], rs[-1]
    pixels = math.log(size_pixels(last.size) / size_pixels(first.size))

    def exponent(key: str) -> str:
        a, b = first.parts[part][key], last.parts[part][key]
        return '-' if not a or not b or not pixels else f'{math.log(b / a) / pixels:.2f}'

    return [exponent('median_ms'), exponent('gmacs')]


def ratios(results: list[Result], reference: str) -> list[str]:
    """``model/reference`` median latency ratios, per size, for models measured in the same run.

    Raises:
        BenchmarkError: ``reference`` is not one of the measured models.
    """
    if reference not in {r.model for r in results}:
        raise BenchmarkError(
            f'--reference {reference!r} is not one of the measured models '
            f'({", ".join(dict.fromkeys(r.model for r in results))}); name one of them'
        )
    lines = []
    for size in dict.fromkeys(r.size for r in results):
        ref = next(r for r in results if r.size == size and r.model == reference)
        for r in results:
            if r.size == size and r.model != reference:
                lines.append(f'{size}: {r.model} / {reference} = {r.median_ms / ref.median_ms:.3f}')
    return lines


# what write_outputs writes into its folder (peers.png: latency against published AP, where a row has one)
REPORT_FILES = ('benchmark.json', 'benchmark.csv', 'benchmark.png', 'peers.png')


def write_outputs(results: list[Result], env: dict, out_dir: str | Path, plot: bool = False) -> list[Path]:
    """Write ``benchmark.json`` (with every sample), ``benchmark.csv`` and optionally ``benchmark.png`` and, where a
    peer or a config has a published AP (:data:`.peers.PUBLISHED_AP`), ``peers.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in REPORT_FILES[:2]]
    write_text(paths[0], json.dumps(dict(environment=env, results=[asdict(r) for r in results]), indent=2))
    names = [k for k in asdict(results[0]) if k != 'samples_ms']
    write_csv(paths[1], names, ({k: v for k, v in asdict(r).items() if k != 'samples_ms'} for r in results))
    if plot:
        from .peers import plot_latency_vs_ap, published_ap

        paths.append(_plot(results, out / REPORT_FILES[2]))
        if any(published_ap(r.model) for r in results):
            paths.append(plot_latency_vs_ap(results, out / REPORT_FILES[3]))
    return paths


def _plot(results: list[Result], path: Path) -> Path:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    by_part = any(r.parts for r in results)
    fig, axes = plt.subplots(1, 2 if by_part else 1, figsize=(12 if by_part else 7, 4.5), squeeze=False)
    models = list(dict.fromkeys(r.model for r in results))
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for i, model in enumerate(models):
        rs = [r for r in results if r.model == model]
        pixels = [size_pixels(r.size) / 1e6 for r in rs]
        colour = colours[i % len(colours)]
        if not by_part:
            axes[0, 0].plot(pixels, [r.median_ms for r in rs], marker='o', color=colour, label=Path(model).stem)
            continue
        for part, style in zip(('backbone', 'encoder', 'decoder'), ('-', '--', ':'), strict=True):
            if all(r.parts and part in r.parts for r in rs):
                label = f'{Path(model).stem} {part}'
                axes[0, 0].plot(
                    pixels, [r.parts[part]['median_ms'] for r in rs], style, marker='o', color=colour, label=label
                )
                if all(r.parts[part]['gmacs'] for r in rs):
                    axes[0, 1].plot(
                        pixels, [r.parts[part]['gmacs'] for r in rs], style, marker='o', color=colour, label=label
                    )
    axes[0, 0].set_ylabel('median latency (ms, log scale)')
    if by_part:
        axes[0, 1].set_ylabel('GMACs per image (log scale)')
    for ax in axes[0]:
        ax.set_xlabel('input megapixels (log scale)' if by_part else 'input megapixels')
        ax.set_yscale('log')
        if by_part:
            ax.set_xscale('log')
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=7)
    fig.suptitle(
        f'{results[0].mode}, batch {results[0].batch}, {results[0].device}'
        + (': by part (a slope of 1 on these axes is linear, 2 quadratic)' if by_part else '')
    )
    return save_figure(fig, path, dpi=120)
