"""The checks of the GPU acceptance run, each a function of its device (the tests run them on the CPU, small)."""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..configs import config_root

# The synthetic set's classes (pit_det.data): the training and test checks train and test a 3-class head.
CLASSES = ('square', 'disc', 'triangle')
# Largest |difference| over largest |reference|, per output, of mmcv's kernel against the fused CPU kernel.
# fp32: both sum the same four taps per point in another order. fp16: the inputs and mmcv's sums are half
# precision (11-bit mantissa), and its value gradient is summed by half-precision atomics.
TOLERANCE = {'float32': dict(forward=1e-4, grad=1e-3), 'float16': dict(forward=1e-2, grad=5e-2)}
# The latency table's detectors (configs/): PiT-Ti/XS/S/B, then the paper's baselines.
LATENCY_CONFIGS = {
    'PiT-Ti': 'deformable-detr_pit-ti_16xb2-50e_coco-halfres.py',
    'PiT-XS': 'deformable-detr_pit-xs_16xb2-50e_coco-halfres.py',
    'PiT-S': 'pit_s_deformable_detr.py',
    'PiT-B': 'deformable-detr_pit-b_16xb2-50e_coco-halfres.py',
    'ViT-S': 'deformable-detr_vit-s_16xb2-50e_coco-halfres.py',
    'R50': 'deformable-detr_r50_16xb2-50e_coco-halfres.py',
}


class AcceptanceError(RuntimeError):
    """The acceptance run cannot start or a check cannot run; the message says what to do."""


def require_gpu() -> str:
    """The GPU's name, or :class:`AcceptanceError` saying what the run needs."""
    if not torch.cuda.is_available():
        raise AcceptanceError(
            'the GPU check needs an NVIDIA GPU that torch can use, and torch.cuda.is_available() is False here '
            f'(torch {torch.__version__}, CUDA {torch.version.cuda or "none"}). Run it on the GPU machine, after '
            'scripts/setup.sh there (it builds mmcv with CUDA ops for the GPUs it finds).'
        )
    from mmcv.ops import get_compiling_cuda_version

    if get_compiling_cuda_version() in ('not available', ''):
        raise AcceptanceError(
            'mmcv was built without CUDA ops, so Deformable DETR cannot run on the GPU: rebuild it '
            'with PIT_DET_CUDA_OPS=1 scripts/setup.sh (add --offline DIR without an index).'
        )
    return torch.cuda.get_device_name()


def run_cuda_tests(out_dir: Path, root: Path) -> dict:
    """The suite's CUDA tests (``pytest -m cuda``); their log and JUnit report go to ``out_dir``."""
    tests = root / 'tests'
    if not tests.is_dir():
        return dict(ok=False, note=f'no tests folder at {tests}: run the check from a pit-det checkout')
    log = out_dir / 'cuda_tests.log'
    run = subprocess.run(
        [
            sys.executable,
            '-m',
            'pytest',
            '-m',
            'cuda',
            '-q',
            '-p',
            'no:cacheprovider',
            '-rs',
            '--junitxml',
            str(out_dir / 'cuda_tests.xml'),
            str(tests),
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    log.write_text(run.stdout + run.stderr)
    counts = {k: int(n) for n, k in re.findall(r'(\d+) (passed|failed|skipped|error|errors)', run.stdout)}
    return dict(
        ok=run.returncode == 0 and counts.get('passed', 0) > 0 and not counts.get('skipped'),
        returncode=run.returncode,
        **counts,
        log=log.name,
    )


def _levels(size: tuple[int, int], strides=(8, 16, 32, 64)) -> list[list[int]]:
    return [[math.ceil(size[0] / s), math.ceil(size[1] / s)] for s in strides]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float().cpu() - b.float()).abs().max() / b.float().abs().max()).item()


def kernel_parity(
    device: str = 'cuda',
    size: tuple[int, int] = (800, 1333),
    batch: int = 2,
    heads: int = 8,
    dims: int = 32,
    points: int = 4,
    seed: int = 0,
) -> dict:
    """mmcv's deformable attention on ``device`` against the fused CPU kernel on the same inputs: the forward and
    the gradients of the value, the sampling locations and the attention weights, in fp32 and (CUDA) fp16.

    The inputs are an encoder's at ``size`` (four levels at strides 8-64, one query per key); the sampling locations
    span -0.2 to 1.2, so about half the points fall outside the maps (zero padding). On the CPU, mmcv's op is its
    pure-PyTorch implementation.
    """
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction, multi_scale_deformable_attn_pytorch

    from ..ops import level_starts, ms_deform_attn_cpu

    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(_levels(size))
    keys = int((shapes[:, 0] * shapes[:, 1]).sum())
    starts = level_starts(shapes)
    value = torch.randn(batch, keys, heads, dims, generator=g)
    loc = torch.rand(batch, keys, heads, len(shapes), points, 2, generator=g) * 1.4 - 0.2
    attn = torch.rand(batch, keys, heads, len(shapes), points, generator=g)
    attn = attn / attn.sum((-1, -2), keepdim=True)
    grad_out = torch.randn(batch, keys, heads * dims, generator=g)

    def run(fn, *inputs):
        inputs = [t.detach().requires_grad_() for t in inputs]
        out = fn(*inputs)
        grads = torch.autograd.grad(out, inputs, grad_out.to(out.device, out.dtype))
        return [out.detach(), *grads]

    def mmcv_op(v, loc, a):
        if device == 'cuda':
            return MultiScaleDeformableAttnFunction.apply(v, shapes.to(device), starts.to(device), loc, a, 64)
        return multi_scale_deformable_attn_pytorch(v, shapes, loc, a)

    names = ('forward', 'grad_value', 'grad_sampling_locations', 'grad_attention_weights')
    dtypes = [torch.float32] + ([torch.float16] if device == 'cuda' else [])
    result = dict(
        size=f'{size[0]}x{size[1]}',
        batch=batch,
        queries=keys,
        levels=shapes.tolist(),
        heads=heads,
        points=points,
        device=device,
        precisions={},
    )
    for dtype in dtypes:
        inputs = [t.to(dtype) for t in (value, loc, attn)]  # both kernels see the same (rounded) numbers
        start = time.perf_counter()
        reference = run(lambda v, loc, a: ms_deform_attn_cpu(v, shapes, loc, a), *[t.float() for t in inputs])
        cpu_s = time.perf_counter() - start
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        candidate = run(mmcv_op, *[t.to(device) for t in inputs])
        if device == 'cuda':
            torch.cuda.synchronize()
        errors = {n: _rel(c, r) for n, c, r in zip(names, candidate, reference, strict=True)}
        limit = TOLERANCE[str(dtype).split('.')[-1]]
        ok = errors['forward'] <= limit['forward'] and all(errors[n] <= limit['grad'] for n in names[1:])
        result['precisions'][str(dtype).split('.')[-1]] = dict(
            ok=ok,
            rel_error=errors,
            tolerance=limit,
            fused_cpu_s=round(cpu_s, 2),
            mmcv_s=round(time.perf_counter() - start, 3),
        )
    result['ok'] = all(p['ok'] for p in result['precisions'].values())
    return result


def acceptance_config(config: str | Path, data_root: Path, work_dir: Path, iters: int, batch: int):
    """``config`` set to train ``iters`` iterations of ``batch`` images on the generated set in ``data_root``, from
    random weights (a node without network fetches none), logging every iteration, saving at the end; its test
    set is the generated validation set. The model, its pipelines (COCO's resolution) and optimiser stay."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(config))
    root = str(data_root) + '/'
    if cfg.model.backbone.get('init_cfg') is not None:
        cfg.model.backbone.init_cfg = None
    cfg.model.bbox_head.num_classes = len(CLASSES)
    for loader, split in ((cfg.train_dataloader, 'train'), (cfg.test_dataloader, 'val')):
        loader.dataset.update(
            data_root=root,
            ann_file=f'annotations/{split}.json',
            data_prefix=dict(img=f'{split}/'),
            metainfo=dict(classes=CLASSES),
        )
    cfg.train_dataloader.batch_size = batch
    cfg.train_dataloader.dataset.filter_cfg = dict(filter_empty_gt=False)
    cfg.test_dataloader.batch_size = 1
    cfg.test_evaluator.ann_file = root + 'annotations/val.json'
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters + 1)
    cfg.param_scheduler = []
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=batch)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=iters, max_keep_ckpts=1)
    cfg.log_processor = dict(by_epoch=False, window_size=1)
    cfg.randomness = dict(seed=0)
    cfg.work_dir = str(work_dir)
    return cfg


def _scalars(work_dir: Path) -> list[dict]:
    logs = sorted(work_dir.glob('*/vis_data/scalars.json'))
    if not logs:
        raise AcceptanceError(f'the training in {work_dir} wrote no scalars.json: see its log')
    return [json.loads(line) for line in logs[-1].read_text().splitlines() if line.strip()]


def training_check(
    config: str | Path, data_root: Path, work_dir: Path, iters: int = 50, batch: int = 2, amp: bool = False
) -> dict:
    """Train ``config`` for ``iters`` iterations through pit-det's ``tools/train.py`` path (``--amp`` for mixed
    precision) on the generated images; the loss must be finite and fall (the mean of the last fifth below that
    of the first fifth). Reports the loss, the time per iteration and the peak GPU memory per image."""
    cfg = acceptance_config(config, data_root, work_dir, iters, batch)
    work_dir.mkdir(parents=True, exist_ok=True)
    dumped = work_dir / 'config.py'
    cfg.dump(str(dumped))
    command = [
        sys.executable,
        '-c',
        'import sys; from pit_det.cli.mmdet_tools import run_mmdet_tool; '
        'sys.exit(run_mmdet_tool("train", sys.argv[1:]))',
        str(dumped),
        '--work-dir',
        str(work_dir),
    ]
    start = time.time()
    run = subprocess.run(command + (['--amp'] if amp else []), capture_output=True, text=True)
    (work_dir / 'train.log').write_text(run.stdout + run.stderr)
    if run.returncode != 0:
        tail = (run.stdout + run.stderr).strip().splitlines()[-5:]
        return dict(ok=False, returncode=run.returncode, error=' | '.join(tail), log=str(work_dir / 'train.log'))
    rows = [r for r in _scalars(work_dir) if 'loss' in r]
    losses = [r['loss'] for r in rows]
    fifth = max(1, len(losses) // 5)
    first, last = statistics.mean(losses[:fifth]), statistics.mean(losses[-fifth:])
    memory = [r['memory'] for r in rows if 'memory' in r]  # MiB, mmengine's max_memory_allocated on CUDA
    checkpoints = sorted(work_dir.glob('iter_*.pth'))
    return dict(
        ok=len(losses) == iters and all(map(math.isfinite, losses)) and last < first,
        amp=amp,
        iters=len(losses),
        batch=batch,
        loss_first=round(first, 3),
        loss_last=round(last, 3),
        s_per_iter=round(statistics.median(r['time'] for r in rows[1:] or rows), 3),
        peak_mib_per_image=round(max(memory) / batch, 1) if memory else None,
        wall_s=round(time.time() - start, 1),
        config=str(dumped),
        checkpoint=str(checkpoints[-1]) if checkpoints else None,
    )


def mim_test(config: Path, checkpoint: Path, work_dir: Path) -> dict:
    """``mim test mmdet CONFIG --checkpoint CKPT`` (openmim runs mmdet's tools/test.py) on the generated
    validation set: proves the checkpoint loads and COCO evaluation runs; the AP of a short run is near 0."""
    run = subprocess.run(
        [
            sys.executable,
            '-m',
            'mim',
            'test',
            'mmdet',
            str(config),
            '--checkpoint',
            str(checkpoint),
            '--work-dir',
            str(work_dir),
        ],
        capture_output=True,
        text=True,
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / 'test.log').write_text(run.stdout + run.stderr)
    found = re.search(r'coco/bbox_mAP: (-?[\d.]+)', run.stdout + run.stderr)
    return dict(
        ok=run.returncode == 0 and found is not None,
        returncode=run.returncode,
        bbox_mAP=float(found.group(1)) if found else None,
        log=str(work_dir / 'test.log'),
    )


def latency_table(
    device: str = 'cuda',
    configs: dict[str, str] | None = None,
    sizes: tuple[tuple[int, int], ...] = ((400, 666), (800, 1333)),
    batches: tuple[int, ...] = (1, 4),
    precisions: tuple[str, ...] = ('fp32', 'fp16'),
    warmup: int = 10,
    iters: int = 30,
    progress=print,
) -> dict:
    """Images per second of each detector's ``predict`` at each size, batch and precision: the benchmark's
    interleaved timing (warm-up, then timed calls with CUDA synchronisation), as fundamentalvision/Deformable-DETR's
    ``benchmark.py`` measures. MACs are counted at batch 1 only, where the matrix-product probes give the peak."""
    from ..benchmark import run_benchmark

    configs = configs or {name: str(config_root() / file) for name, file in LATENCY_CONFIGS.items()}
    suffix = {'fp32': '', 'fp16': '@fp16'}
    specs = {f'{path}{suffix[p]}': (name, p) for name, path in configs.items() for p in precisions}
    rows, limits = [], {}
    for batch in batches:
        results = run_benchmark(
            list(specs),
            list(sizes),
            progress=progress,
            device=device,
            batch=batch,
            warmup=warmup,
            iters=iters,
            mode='predict',
            count_macs=batch == batches[0],
        )
        limits = limits or dict(results.limits)
        for r in results:
            name, precision = specs[r.model]
            rows.append(
                dict(
                    model=name,
                    size=r.size,
                    batch=batch,
                    precision=precision,
                    images_per_s=round(r.images_per_s, 2),
                    median_ms=round(r.median_ms, 2),
                    gmacs=r.gmacs,
                    pct_of_peak=r.pct_of_peak,
                    peak_mem_mib=round(r.peak_mem_mib, 1),
                )
            )
    return dict(
        ok=bool(rows) and all(r['images_per_s'] > 0 for r in rows), rows=rows, limits=limits, warmup=warmup, iters=iters
    )


def format_latency(table: dict) -> str:
    """The table as Markdown: a row per detector, a column per size, batch and precision (images/s)."""
    keys = sorted(
        {(r['size'], r['batch'], r['precision']) for r in table['rows']},
        key=lambda k: (int(k[0].split('x')[0]), k[1], k[2] != 'fp32'),
    )
    cells = {(r['model'], r['size'], r['batch'], r['precision']): r['images_per_s'] for r in table['rows']}
    models = list(dict.fromkeys(r['model'] for r in table['rows']))
    lines = ['| detector | ' + ' | '.join(f'{s} b{b} {p}' for s, b, p in keys) + ' |', '|---|' + '---:|' * len(keys)]
    lines += [f'| {m} | ' + ' | '.join(f'{cells.get((m, *k), float("nan")):.1f}' for k in keys) + ' |' for m in models]
    return '\n'.join(lines)
