"""Fused CPU deformable attention against mmcv's pure-PyTorch op, measured side by side in one process.

Three measurements, each interleaved (fused, mmcv, fused, mmcv, ...) and reported as medians and ratios:

1. the op alone on the encoder's shapes for the given input sizes (8 heads, 4 levels, 4 points, 256 dims; one
   query per key), with sampling locations near each query (as in a trained encoder) and uniformly random (the
   worst case for memory locality), with the peak extra resident memory of one call;
2. a whole detector's ``predict`` (default: PiT-S Deformable DETR, random weights) at the first size;
3. one training iteration (forward, backward, optimiser step) of the CPU demo config.
"""

from __future__ import annotations

import copy
import tempfile
from functools import partial
from pathlib import Path

import torch
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

from ..ops import ms_deform_attn_cpu, set_cpu_deform_attn
from .builders import build_benchmark_detector, detector_call
from .timing import interleaved, medians, rss_growth_mib


def encoder_inputs(
    height: int,
    width: int,
    heads: int = 8,
    dims: int = 256,
    levels: int = 4,
    points: int = 4,
    stride: int = 8,
    spread_px: float | None = 2.0,
    seed: int = 0,
):
    """Deformable DETR encoder inputs for an ``height x width`` image (map sizes of a stride-8 backbone).

    One query per key, as in the encoder. With ``spread_px``, each query samples around its reference point (its
    own position, normalised, on every level, as mmdet's encoder) with offsets of that many pixels (standard
    deviation), like a trained encoder; with ``None`` the locations are uniform over the maps (no locality: the
    worst case for any gather).
    """
    gen = torch.Generator().manual_seed(seed)
    shapes, h, w = [], -(-height // stride), -(-width // stride)
    for _ in range(levels):
        shapes.append((h, w))
        h, w = -(-h // 2), -(-w // 2)
    shape_t = torch.tensor(shapes)
    keys = int((shape_t[:, 0] * shape_t[:, 1]).sum())
    value = torch.randn(1, keys, heads, dims // heads, generator=gen)
    if spread_px is None:
        loc = torch.rand(1, keys, heads, levels, points, 2, generator=gen)
    else:
        refs = []
        for h, w in shapes:
            ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing='ij')
            refs.append(torch.stack((xs.flatten(), ys.flatten()), -1))
        ref = torch.cat(refs)[None, :, None, None, None, :]  # (1, keys, 1, 1, 1, 2)
        size_xy = shape_t.flip(-1).float()[None, None, None, :, None, :]  # (w, h) per level
        loc = ref + torch.randn(1, keys, heads, levels, points, 2, generator=gen) * spread_px / size_xy
    attn = torch.rand(1, keys, heads, levels, points, generator=gen).softmax(-1)
    return value, shape_t, loc, attn


def _summary(times: dict[str, list[float]]) -> dict:
    med = medians(times)
    return dict(median_ms=med, speedup=med['mmcv'] / med['fused'])


def bench_op(sizes, warmup, iters, log) -> list[dict]:
    out = []
    for (h, w), spread in ((s, p) for s in sizes for p in (2.0, None)):
        value, shapes, loc, attn = encoder_inputs(h, w, spread_px=spread)
        kind = 'encoder (offsets ~2 px)' if spread else 'uniform random locations (worst case)'

        with torch.inference_mode():
            args = (value, shapes, loc, attn)
            calls = {
                'fused': partial(ms_deform_attn_cpu, *args),
                'mmcv': partial(multi_scale_deformable_attn_pytorch, *args),
            }
            res = _summary(interleaved(calls, warmup, iters))
            res['peak_mib'] = {k: rss_growth_mib(c) for k, c in calls.items()}
        res.update(size=f'{h}x{w}', queries=value.shape[1], locations=kind)
        log(
            f'op {h}x{w}, {kind}, {value.shape[1]} queries: fused {res["median_ms"]["fused"]:.1f} ms, mmcv '
            f'{res["median_ms"]["mmcv"]:.1f} ms, speed-up {res["speedup"]:.2f}x; peak extra memory fused '
            f'{res["peak_mib"]["fused"]:.0f} MiB, mmcv {res["peak_mib"]["mmcv"]:.0f} MiB'
        )
        out.append(res)
    return out


def _build(config: str):
    """The detector of ``config`` with random, initialised weights (the fused/mmcv choice is toggled per call)."""
    model, cfg = build_benchmark_detector(config, 'fused')
    model.init_weights()
    return model, cfg


def bench_predict(config: str, size, warmup, iters, log) -> dict:
    model, _ = _build(config)
    model.eval()
    call = detector_call(model, 'predict', size, 1)
    x = torch.rand(1, 3, *size)

    def run(impl):
        def f():
            set_cpu_deform_attn(model, impl)
            with torch.inference_mode():
                call(x)

        return f

    res = _summary(interleaved({'fused': run('fused'), 'mmcv': run('mmcv')}, warmup, iters))
    res.update(config=config, size=f'{size[0]}x{size[1]}')
    log(
        f'predict {Path(config).name} {res["size"]}: fused {res["median_ms"]["fused"]:.0f} ms, mmcv '
        f'{res["median_ms"]["mmcv"]:.0f} ms, speed-up {res["speedup"]:.2f}x'
    )
    return res


def bench_train_iter(config: str, warmup, iters, log) -> dict:
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    from ..data import make_synthetic_coco

    model, cfg = _build(config)
    model.train()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic_coco(Path(tmp) / 'synthetic', num_train=cfg.train_dataloader.batch_size, num_val=1)
        ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
        ds_cfg.data_root = str(root) + '/'
        dataset = DATASETS.build(ds_cfg)
        batch = model.data_preprocessor(pseudo_collate([dataset[i] for i in range(len(dataset))]), True)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run(impl):
        def f():
            set_cpu_deform_attn(model, impl)
            losses = model.loss(batch['inputs'], batch['data_samples'])
            loss = sum(v for k, v in losses.items() if 'loss' in k)
            optim.zero_grad()
            loss.backward()
            optim.step()

        return f

    res = _summary(interleaved({'fused': run('fused'), 'mmcv': run('mmcv')}, warmup, iters))
    res.update(config=config, batch=len(batch['inputs']))
    log(
        f'train iteration {Path(config).name} (batch {res["batch"]}): fused {res["median_ms"]["fused"]:.0f} ms, '
        f'mmcv {res["median_ms"]["mmcv"]:.0f} ms, speed-up {res["speedup"]:.2f}x'
    )
    return res
