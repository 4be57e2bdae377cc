"""Latency, throughput, memory and MACs of backbones and whole detectors, timed side by side.

Models are measured interleaved in one process (round-robin, one forward of each per round) so that machine noise
hits all of them alike and ratios are fair. Timing uses ``torch.inference_mode``, warm-up, CUDA synchronisation on
GPU, and reports median, mean and p90. Memory is measured in a separate pass per model: CUDA max allocated, or on
the CPU the growth of the peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) during one
forward in a fresh process.

Model specs:
    ``pit-<arch>``          this package's PiT backbone (``ti``, ``xs``, ``s``, ``b``, ``*-distilled``)
    ``timm:<name>``         a timm model's three stage maps via ``forward_intermediates`` (e.g. timm:pit_s_224)
    ``resnet50``            mmdet's ResNet-50 as in Deformable DETR (``out_indices=(1, 2, 3)``)
    ``path/to/config.py``   a detector config; ``--mode`` picks backbone, forward (no post-processing) or predict
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import platform
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

MODES = ('backbone', 'forward', 'predict')
PRECISIONS = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


class BenchmarkError(ValueError):
    """A request the benchmark cannot honour; the message says why and what to do instead."""


@dataclass
class Result:
    model: str
    mode: str
    size: str
    batch: int
    precision: str
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


def parse_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r'(\d+)x(\d+)', text.strip())
    if not match:
        raise BenchmarkError(f'size {text!r}: use HxW, e.g. 400x666')
    return int(match.group(1)), int(match.group(2))


def _build_backbone(spec: str, size: tuple[int, int]) -> tuple[nn.Module, Callable]:
    if spec.startswith('pit-'):
        from .models import PiT
        try:
            model = PiT(arch=spec[4:])
        except ValueError as exc:
            raise BenchmarkError(str(exc)) from exc
        return model, model
    if spec.startswith('timm:'):
        import timm
        name = spec[5:]
        try:
            kwargs = dict(img_size=size) if name.startswith('pit_') else {}
            model = timm.create_model(name, pretrained=False, **kwargs)
        except RuntimeError as exc:
            raise BenchmarkError(f'unknown timm model {name!r}: {exc}') from exc
        return model, lambda x: model.forward_intermediates(x, intermediates_only=True)
    if spec == 'resnet50':
        from mmdet.models.backbones import ResNet
        model = ResNet(depth=50, out_indices=(1, 2, 3), frozen_stages=1, norm_eval=True)
        return model, model
    raise BenchmarkError(f'unknown model {spec!r}: use pit-<ti|xs|s|b>[-distilled], timm:<name>, resnet50 or a '
                         'detector config .py')


def _build_detector(config: str, cpu_deform_attn: str):
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from .ops import use_fused_cpu_deform_attn

    if not Path(config).is_file():
        raise BenchmarkError(f'config not found: {config}')
    register_all_modules()
    cfg = Config.fromfile(config)
    cfg.model.backbone.pop('init_cfg', None)  # random weights unless --checkpoint
    model = MODELS.build(cfg.model)
    use_fused_cpu_deform_attn(model, enable=cpu_deform_attn == 'fused')
    return model, cfg


def _detector_call(model: nn.Module, mode: str, size: tuple[int, int], batch: int, device: str) -> Callable:
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    if mode == 'backbone':
        return model.backbone
    h, w = size
    samples = []
    for _ in range(batch):
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), batch_input_shape=(h, w),
                                             scale_factor=(1.0, 1.0), pad_shape=(h, w)))
        sample.gt_instances = InstanceData()
        samples.append(sample)
    if mode == 'forward':
        return lambda x: model._forward(x, samples)
    return lambda x: model.predict(x, samples, rescale=True)


@contextlib.contextmanager
def explicit_attention(model: nn.Module):
    """Switch PiT's and timm's fused attention to explicit matrices (visible to FLOP counters), then back."""
    switched = []
    for module in model.modules():
        for attr in ('fused', 'fused_attn'):
            if getattr(module, attr, None) is True:
                setattr(module, attr, False)
                switched.append((module, attr))
    try:
        yield
    finally:
        for module, attr in switched:
            setattr(module, attr, True)


def _macs(fn: Callable, model: nn.Module, x: torch.Tensor) -> float | None:
    """GMACs through mmengine's FlopAnalyzer (counts one multiply-add as one), attention made explicit."""
    from mmengine.analysis import FlopAnalyzer

    class _Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, inp):
            return fn(inp)
    try:
        with explicit_attention(model), torch.no_grad():
            analyzer = FlopAnalyzer(_Wrap(), (x,))
            analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return analyzer.total() / 1e9
    except Exception:  # detectors with data-dependent control flow do not trace; report n/a, not a guess
        return None


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def _cpu_rss_kib(field_name: str) -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field_name + ':'):
            return int(line.split()[1])
    return 0


def _build_call(spec: str, mode: str, size: tuple[int, int], batch: int, device: str,
                cpu_deform_attn: str, checkpoint: str | None):
    """``(model, call, macs_model, macs_fn)`` for a spec; see the module docstring."""
    if spec.endswith('.py'):
        model, _ = _build_detector(spec, cpu_deform_attn)
        if checkpoint:
            from mmengine.runner import load_checkpoint
            load_checkpoint(model, checkpoint, map_location='cpu')
        model.to(device).eval()  # some mmdet modules' train() returns None: no chaining
        call = _detector_call(model, mode, size, batch, device)
        macs = (model.backbone, model.backbone) if mode == 'backbone' else (None, None)
        return model, call, *macs
    model, call = _build_backbone(spec, size)
    model.to(device).eval()
    return model, call, model, call


def rss_growth_mib(call: Callable) -> float:
    """Growth of the peak resident set (MiB) during ``call()``: VmHWM reset to the current RSS, then read."""
    Path('/proc/self/clear_refs').write_text('5')
    base = _cpu_rss_kib('VmRSS')
    call()
    return max(_cpu_rss_kib('VmHWM') - base, 0) / 1024


def _fresh_process_peak(args: tuple) -> float:
    """Peak extra resident memory (MiB) of one forward, in a process that has run nothing else."""
    spec, mode, size, batch, precision, cpu_deform_attn, checkpoint = args
    import pit_det  # noqa: F401
    torch.manual_seed(0)
    _, call, _, _ = _build_call(spec, mode, size, batch, 'cpu', cpu_deform_attn, checkpoint)
    x = torch.rand(batch, 3, *size)
    dtype = PRECISIONS[precision]
    with torch.inference_mode(), (torch.autocast('cpu', dtype=dtype) if dtype else contextlib.nullcontext()):
        return rss_growth_mib(lambda: call(x))


def _peak_memory_mib(call: Callable, x: torch.Tensor, device: str, autocast, fresh_args: tuple) -> float:
    """CUDA: max allocated during one forward. CPU: VmHWM growth of one forward in a fresh process (in this one,
    memory freed by earlier forwards stays resident and would hide the peak)."""
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.inference_mode(), autocast():
            call(x)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    if not Path('/proc/self/clear_refs').exists():
        return float('nan')
    import multiprocessing
    with multiprocessing.get_context('spawn').Pool(1) as pool:
        return pool.apply(_fresh_process_peak, (fresh_args,))


def environment(device: str) -> dict:
    import mmcv
    import mmdet
    import mmengine
    import timm
    env = dict(date=time.strftime('%Y-%m-%d %H:%M:%S %Z'), python=platform.python_version(),
               torch=torch.__version__, mmcv=mmcv.__version__, mmdet=mmdet.__version__, mmengine=mmengine.__version__,
               timm=timm.__version__, threads=torch.get_num_threads(), machine=platform.machine())
    try:
        env['cpu'] = next(line.split(':', 1)[1].strip() for line in Path('/proc/cpuinfo').read_text().splitlines()
                          if line.startswith('model name'))
    except (OSError, StopIteration):
        env['cpu'] = platform.processor()
    if device == 'cuda':
        env['gpu'] = torch.cuda.get_device_name()
        env['cuda'] = torch.version.cuda
    return env


def run_benchmark(models: list[str], sizes: list[tuple[int, int]], device: str = 'cpu', batch: int = 1,
                  precision: str = 'fp32', warmup: int = 3, iters: int = 20, mode: str = 'backbone',
                  checkpoint: str | None = None, cpu_deform_attn: str = 'fused', count_macs: bool = True,
                  progress: Callable[[str], None] = print) -> list[Result]:
    """Measure every model at every size, interleaved; see the module docstring for the model specs."""
    if device not in ('cpu', 'cuda'):
        raise BenchmarkError(f'device {device!r}: use cpu or cuda')
    if device == 'cuda' and not torch.cuda.is_available():
        raise BenchmarkError('device cuda requested but no CUDA GPU is visible to torch; use --device cpu')
    if precision not in PRECISIONS:
        raise BenchmarkError(f'precision {precision!r}: use one of {", ".join(PRECISIONS)}')
    if precision == 'fp16' and device == 'cpu':
        raise BenchmarkError('fp16 autocast is for CUDA; on the CPU use bf16')
    if mode not in MODES:
        raise BenchmarkError(f'mode {mode!r}: use one of {", ".join(MODES)}')
    if batch < 1 or iters < 1 or warmup < 0:
        raise BenchmarkError('batch and iters must be >= 1, warmup >= 0')
    for spec in models:
        if not spec.endswith('.py') and mode != 'backbone':
            raise BenchmarkError(f'{spec}: --mode {mode} needs a detector config; backbones time the backbone')
    for h, w in sizes:
        if min(h, w) < 32:  # covers every patch size (16, 14 for b)
            raise BenchmarkError(f'size {h}x{w} is smaller than a patch or the 32-px minimum: use at least 32x32')

    dtype = PRECISIONS[precision]

    def autocast():
        return torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    results = []
    for size in sizes:
        h, w = size
        x = torch.rand(batch, 3, h, w, device=device)
        entries = []
        for spec in models:
            model, call, macs_model, macs_fn = _build_call(spec, mode, size, batch, device, cpu_deform_attn,
                                                           checkpoint)
            gmacs = _macs(macs_fn, macs_model, x[:1]) if count_macs and macs_model is not None else None
            params = sum(p.numel() for p in model.parameters()) / 1e6
            entries.append(dict(spec=spec, model=model, call=call, params=params, gmacs=gmacs, times=[]))
            progress(f'built {spec} at {h}x{w}: {params:.2f} M params'
                     + (f', {gmacs:.2f} GMACs' if gmacs is not None else ''))
        with torch.inference_mode(), autocast():
            for _ in range(warmup):
                for e in entries:
                    e['call'](x)
            _sync(device)
            for i in range(iters):
                for e in entries:
                    _sync(device)
                    start = time.perf_counter()
                    e['call'](x)
                    _sync(device)
                    e['times'].append((time.perf_counter() - start) * 1000)
                if (i + 1) % max(1, iters // 5) == 0 or i + 1 == iters:
                    progress(f'{h}x{w}: round {i + 1}/{iters}: '
                             + ', '.join(f"{e['spec']} {statistics.median(e['times']):.1f} ms" for e in entries))
        for e in entries:
            times = sorted(e['times'])
            median = statistics.median(times)
            progress(f"{e['spec']} {h}x{w}: measuring peak memory")
            peak = _peak_memory_mib(e['call'], x, device, autocast,
                                    (e['spec'], mode, size, batch, precision, cpu_deform_attn, checkpoint))
            results.append(Result(
                model=e['spec'], mode=mode, size=f'{h}x{w}', batch=batch, precision=precision, device=device,
                median_ms=round(median, 3), mean_ms=round(statistics.fmean(times), 3),
                p90_ms=round(times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)], 3),
                images_per_s=round(batch * 1000 / median, 3), peak_mem_mib=round(peak, 1),
                params_m=round(e['params'], 3), gmacs=None if e['gmacs'] is None else round(e['gmacs'], 3),
                iters=iters, samples_ms=[round(t, 3) for t in e['times']]))
        del entries
    return results


def format_table(results: list[Result]) -> str:
    header = ['model', 'mode', 'size', 'batch', 'prec', 'median ms', 'mean ms', 'p90 ms', 'img/s', 'peak MiB',
              'params M', 'GMACs']
    rows = [[r.model, r.mode, r.size, str(r.batch), r.precision, f'{r.median_ms:.1f}', f'{r.mean_ms:.1f}',
             f'{r.p90_ms:.1f}', f'{r.images_per_s:.2f}', f'{r.peak_mem_mib:.0f}', f'{r.params_m:.2f}',
             '-' if r.gmacs is None else f'{r.gmacs:.2f}'] for r in results]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ['| ' + ' | '.join(c.ljust(w) for c, w in zip(header, widths)) + ' |',
             '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
    lines += ['| ' + ' | '.join(c.ljust(w) for c, w in zip(row, widths)) + ' |' for row in rows]
    return '\n'.join(lines)


def ratios(results: list[Result], reference: str) -> list[str]:
    """``model/reference`` median latency ratios, per size, for models measured in the same run."""
    lines = []
    for size in dict.fromkeys(r.size for r in results):
        ref = next((r for r in results if r.size == size and r.model == reference), None)
        if ref is None:
            continue
        for r in results:
            if r.size == size and r.model != reference:
                lines.append(f'{size}: {r.model} / {reference} = {r.median_ms / ref.median_ms:.3f}')
    return lines


def write_outputs(results: list[Result], env: dict, out_dir: str | Path, plot: bool = False) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / 'benchmark.json', out / 'benchmark.csv']
    paths[0].write_text(json.dumps(dict(environment=env, results=[asdict(r) for r in results]), indent=2))
    with paths[1].open('w', newline='') as f:
        names = [k for k in asdict(results[0]) if k != 'samples_ms']
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for r in results:
            writer.writerow({k: v for k, v in asdict(r).items() if k != 'samples_ms'})
    if plot:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for model in dict.fromkeys(r.model for r in results):
            rs = [r for r in results if r.model == model]
            pixels = [math.prod(parse_size(r.size)) / 1e6 for r in rs]
            ax.plot(pixels, [r.median_ms for r in rs], marker='o', label=Path(model).stem)
        ax.set_xlabel('input megapixels')
        ax.set_ylabel('median latency (ms, log scale)')
        ax.set_yscale('log')
        ax.set_title(f"{results[0].mode}, batch {results[0].batch}, {results[0].precision}, {results[0].device}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / 'benchmark.png')
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('models', nargs='+', help='model specs (see below)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--sizes', nargs='+', default=['400x666', '800x1333'], help='HxW (default: the paper\'s)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--precision', default='fp32', choices=list(PRECISIONS))
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--mode', default='backbone', choices=MODES,
                        help='backbone alone, detector without post-processing (forward), or predict')
    parser.add_argument('--checkpoint', help='weights for detector configs (default: random weights)')
    parser.add_argument('--cpu-deform-attn', default='fused', choices=['fused', 'mmcv'])
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--no-macs', action='store_true', help='skip MAC counting')
    parser.add_argument('--reference', help='print every model\'s median latency ratio to this one')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    parser.add_argument('--plot', action='store_true', help='also write benchmark.png')
    parser.add_argument('--quick', action='store_true', help='smoke run: 1 warm-up, 2 iterations, 64x96')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.warmup, args.iters, args.sizes = 1, 2, ['64x96']
    try:
        import pit_det  # noqa: F401
        sizes = [parse_size(s) for s in args.sizes]
        results = run_benchmark(args.models, sizes, args.device, args.batch, args.precision, args.warmup,
                                args.iters, args.mode, args.checkpoint, args.cpu_deform_attn, not args.no_macs,
                                progress=lambda msg: print(msg, flush=True))
    except BenchmarkError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    env = environment(args.device)
    print('\n' + ', '.join(f'{k}: {v}' for k, v in env.items()))
    print(format_table(results))
    if args.reference:
        print('\n'.join(ratios(results, args.reference)))
    for path in write_outputs(results, env, args.out_dir, args.plot):
        print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
