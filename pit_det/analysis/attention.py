"""How far and how broadly each transformer block attends: the paper's attention analysis, PiT against ViT.

For every block, over a set of images:

* **entropy**: the mean over heads and query tokens of ``-sum_k p_qk log p_qk`` over keys, in nats, with class
  (prefix) tokens removed from queries and keys and each row renormalised;
* **distance**: the attention-weighted distance between query and key token centres, ``sum_k p_qk |c_q - c_k|``,
  averaged likewise, in input pixels (``distance_px``) and as a fraction of the token map's diagonal
  (``distance_frac``: the map's extent, rows x columns times the token spacing, as a diagonal in pixels).

Token centres follow the real geometry: PiT's patch convolution (patch P, stride S, no padding) puts token ``j`` at
pixel ``j * S + P / 2``; each pooling (3x3, stride 2, padding 1) centres output ``j`` on input ``2 j``. ViT's patches
(P = S = 16) put token ``j`` at ``16 j + 8``. Attention probabilities are read through
``timm.utils.AttentionExtract`` from the ``attn_drop`` module of every block (PiT's and timm's blocks name it alike)
with the explicit attention path switched on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import IMAGE_SUFFIXES
from ..models import PiT, ViTPyramid
from ..models.utils import explicit_attention
from ..outputs import save_figure, write_csv, write_text

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet normalisation (PiT's and DeiT's training)


@dataclass
class BlockStats:
    index: int
    stage: int
    tokens: int
    entropy: float
    distance_px: float
    distance_frac: float


REPORT_FILES = ('attention.json', 'attention.csv', 'attention.png')  # what write_outputs writes into its folder


def check_spec(spec: str) -> None:
    """A model spec of :func:`build_backbone`, checked without building anything: a known backbone name, and a
    SOURCE that exists (a local file) or is cached or reachable (a tag or URL; one fast probe, no download).

    Raises:
        ValueError: an unknown backbone name, or an empty ``NAME=``.
        FileNotFoundError: SOURCE cannot be had now (the message says the ways out).
    """
    from ..checkpoint.sources import unavailable_reason
    from ..models.backbones import BACKBONE_NAMES, is_backbone_name

    name, equals, source = spec.partition('=')
    if not is_backbone_name(name):
        raise ValueError(
            f'unknown backbone {name!r} in {spec!r}: use {BACKBONE_NAMES}, optionally followed by =SOURCE (a '
            'checkpoint file, hf-hub: tag or URL)'
        )
    if equals and not source:
        raise ValueError(f'{spec!r}: give a checkpoint after "=", or leave "=" out for random weights')
    problem = unavailable_reason(source) if source else None
    if problem:
        raise FileNotFoundError(problem)


def build_backbone(spec: str) -> tuple[str, nn.Module]:
    """``(label, model)`` for ``pit-<arch>`` / ``vit-s`` (random weights) or ``NAME=SOURCE`` (weights from SOURCE: a
    file, ``hf-hub:`` tag, URL, or a detector checkpoint whose ``backbone.*`` tensors are used).

    Raises:
        ValueError: an unknown backbone name.
    """
    from ..models.backbones import build_named_backbone

    name, _, source = spec.partition('=')
    model = build_named_backbone(name)
    model.init_weights()
    if source:
        from mmengine.runner import load_checkpoint

        load_checkpoint(model, source, map_location='cpu', strict=False)
    return spec, model.eval()


def token_centres(model: nn.Module, height: int, width: int) -> list[tuple[torch.Tensor, float, tuple[int, int]]]:
    """Per stage: the ``(N, 2)`` token centres (x, y) in input pixels, the token spacing and the map size."""
    if isinstance(model, PiT):
        (h, w), stride, patch = model.feature_sizes(height, width)[0], model.stride, model.patch_size
        ys, xs = torch.arange(h) * stride + patch / 2, torch.arange(w) * stride + patch / 2
        stages = []
        for i in range(len(model.transformers)):
            if i:
                ys, xs, stride = ys[::2], xs[::2], stride * 2
            grid = torch.stack(torch.meshgrid(xs, ys, indexing='xy'), -1).reshape(-1, 2)
            stages.append((grid.double(), float(stride), (len(ys), len(xs))))
        return stages
    if isinstance(model, ViTPyramid):
        patch = model.patch_size
        h, w = math.ceil(height / patch), math.ceil(width / patch)
        ys, xs = torch.arange(h) * patch + patch / 2, torch.arange(w) * patch + patch / 2
        grid = torch.stack(torch.meshgrid(xs, ys, indexing='xy'), -1).reshape(-1, 2)
        return [(grid.double(), float(patch), (h, w))]
    raise TypeError(f'no token geometry for {type(model).__name__}')


def attention_stats(
    attn: torch.Tensor, prefix: int, centres: torch.Tensor, diagonal: float
) -> tuple[float, float, float, int]:
    """Entropy (nats), distance (px) and distance / diagonal of ``(B, heads, N, N)`` attention probabilities.

    The first ``prefix`` tokens (class tokens) are removed from queries and keys and the rows renormalised.

    Returns:
        ``(entropy, distance_px, distance_frac, count)`` where ``count`` is the number of rows averaged.
    """
    a = attn[..., prefix:, prefix:].double()
    a = a / a.sum(-1, keepdim=True).clamp_min(1e-30)
    entropy = -torch.special.xlogy(a, a).sum(-1)
    distance = (a * torch.cdist(centres, centres)).sum(-1)
    return entropy.mean().item(), distance.mean().item(), distance.mean().item() / diagonal, entropy.numel()


def _blocks(model: nn.Module) -> list[tuple[str, int, int]]:
    """``(module name of attn_drop, stage, prefix tokens)`` for every block, in order."""
    if isinstance(model, PiT):
        return [
            (f'transformers.{s}.blocks.{j}.attn.attn_drop', s, model.num_tokens)
            for s, stage in enumerate(model.transformers)
            for j in range(len(stage.blocks))
        ]
    return [(f'vit.blocks.{j}.attn.attn_drop', 0, model.vit.num_prefix_tokens) for j in range(len(model.vit.blocks))]


def load_images(folder: str | Path, size: tuple[int, int], limit: int | None = None) -> torch.Tensor:
    """The images of ``folder`` (sorted), resized to ``size`` (height, width), RGB, ImageNet-normalised:
    ``(N, 3, H, W)``.

    Raises:
        FileNotFoundError: no such folder, or no image in it.
        ValueError: a file with an image suffix that is not an image.
    """
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'--images {folder}: not a folder')
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise FileNotFoundError(f'--images {folder}: no {", ".join(IMAGE_SUFFIXES)} files in it')
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as img:
                arrays.append(
                    np.asarray(img.convert('RGB').resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32)
                )
        except OSError as exc:  # PIL's UnidentifiedImageError is an OSError
            raise ValueError(
                f'--images {folder}: {path.name} is not an image PIL can read ({exc}); remove it or '
                'give a folder of images'
            ) from None
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def analyze(
    model: nn.Module, images: torch.Tensor, batch_size: int = 8, progress: Callable[[int, int], None] | None = None
) -> list[BlockStats]:
    """Entropy and distance of every block of ``model`` over ``images`` (``(N, 3, H, W)``, normalised)."""
    from timm.utils import AttentionExtract

    blocks = _blocks(model)
    stages = token_centres(model, *images.shape[-2:])
    totals = np.zeros((len(blocks), 2))  # entropy, distance_px (weighted by rows)
    counts = np.zeros(len(blocks))
    extractor = AttentionExtract(model, names=[name for name, _, _ in blocks], method='hook')
    with explicit_attention(model), torch.inference_mode():
        for start in range(0, len(images), batch_size):
            maps = extractor(images[start : start + batch_size])
            for i, (name, stage, prefix) in enumerate(blocks):
                centres, spacing, (h, w) = stages[stage]
                entropy, dist, _, count = attention_stats(maps[name], prefix, centres, 1.0)
                totals[i] += np.array([entropy, dist]) * count
                counts[i] += count
            if progress is not None:
                progress(min(start + batch_size, len(images)), len(images))
    stats = []
    for i, (_, stage, _) in enumerate(blocks):
        _, spacing, (h, w) = stages[stage]
        entropy, dist = totals[i] / counts[i]
        stats.append(
            BlockStats(
                index=i,
                stage=stage,
                tokens=h * w,
                entropy=float(entropy),
                distance_px=float(dist),
                distance_frac=float(dist / (spacing * math.hypot(h, w))),
            )
        )
    return stats


def write_outputs(results: dict[str, list[BlockStats]], out_dir: str | Path) -> list[Path]:
    """``attention.json``, ``attention.csv`` and ``attention.png`` (entropy and distance against depth)."""
    import json

    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in REPORT_FILES]
    write_text(
        paths[0],
        json.dumps(
            {'models': [{'name': name, 'blocks': [asdict(b) for b in blocks]} for name, blocks in results.items()]},
            indent=2,
        ),
    )
    write_csv(
        paths[1],
        ['model', *asdict(next(iter(results.values()))[0])],
        ({'model': name, **asdict(b)} for name, blocks in results.items() for b in blocks),
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, blocks in results.items():
        depth = [b.index + 1 for b in blocks]
        axes[0].plot(depth, [b.entropy for b in blocks], marker='o', label=name)
        axes[1].plot(depth, [b.distance_px for b in blocks], marker='o', label=name)
    for ax, label in zip(axes, ('attention entropy (nats)', 'attention distance (input pixels)'), strict=True):
        ax.set_xlabel('block (depth)')
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, paths[2], dpi=120)
    return paths
