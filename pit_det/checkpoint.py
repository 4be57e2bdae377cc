"""PiT checkpoint conversion and checked loading.

Three layouts exist for the same weights (everything but the pooling layers is named alike):

* official naver-ai: ``pools.{0,1}.{conv,fc}.*``
* timm >= 0.9 (this package's own layout): ``transformers.{1,2}.pool.*``
* timm < 0.9: ``transformers.{0,1}.pool.*``: the same key name as timm >= 0.9 means a different layer.

:func:`convert_pit_checkpoint` maps any of them (possibly nested under ``state_dict``/``model`` and prefixed with
``module.``/``backbone.``) to the timm >= 0.9 layout without the classifier (``norm``, ``head``, ``head_dist``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

_DROPPED_PREFIXES = ('norm.', 'head.', 'head_dist.')
_POOL_KEY = re.compile(r'^(pools\.(\d+)\.|transformers\.(\d+)\.pool\.)')


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into; the message names what differs."""


@dataclass
class ConversionReport:
    layout: str
    renamed: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def extract_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """Unwrap ``{'state_dict': ...}`` / ``{'model': ...}`` and strip ``module.``; keep ``backbone.*`` if present."""
    sd = checkpoint
    for key in ('state_dict', 'model'):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise CheckpointMismatchError(f'expected a state dict, found {type(sd).__name__}')
    sd = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in sd.items()}
    if any(k.startswith('backbone.') for k in sd):
        sd = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    return sd


def detect_layout(sd: dict[str, torch.Tensor]) -> str:
    """``'official'``, ``'timm'`` (>= 0.9), ``'timm-legacy'`` (< 0.9), or ``'unpooled'`` when no pooling key exists.

    Raises:
        CheckpointMismatchError: when the keys are not those of a PiT.
    """
    if not any(k.startswith(('patch_embed.', 'pools.', 'transformers.')) for k in sd):
        sample = ', '.join(sorted(sd)[:5])
        raise CheckpointMismatchError(f'no PiT keys (patch_embed.*, transformers.*, pools.*) found; first keys: '
                                      f'{sample or "none"}. Is this a PiT checkpoint?')
    if any(k.startswith('pools.') for k in sd):
        return 'official'
    pooled = {int(m.group(3)) for k in sd if (m := _POOL_KEY.match(k)) and m.group(3) is not None}
    if not pooled:
        return 'unpooled'
    if 0 in pooled:
        return 'timm-legacy'
    if 2 in pooled:
        return 'timm'
    # only transformers.1.pool: timm >= 0.9 maps stage 0 -> 1 there, timm < 0.9 maps stage 1 -> 2
    out_dim = sd['transformers.1.pool.conv.weight'].shape[0]
    stage1 = sd.get('transformers.1.blocks.0.norm1.weight')
    if stage1 is not None and stage1.shape[0] == out_dim:
        return 'timm'
    return 'timm-legacy'


def convert_pit_checkpoint(state_dict: dict, num_stages: int = 3,
                           report: ConversionReport | None = None) -> dict[str, torch.Tensor]:
    """Convert a PiT state dict of any known layout to this package's layout (timm >= 0.9, no classifier).

    Args:
        state_dict: a state dict or a checkpoint holding one (see :func:`extract_state_dict`).
        num_stages: keep only stages below this index (a backbone built for fewer outputs).
        report: filled with the layout found and every renamed and dropped key.

    Returns:
        A new dict; tensors are shared, not copied.
    """
    sd = extract_state_dict(state_dict)
    layout = detect_layout(sd)
    report = report if report is not None else ConversionReport(layout)
    report.layout = layout
    out = {}
    for key, value in sd.items():
        new = key
        match = _POOL_KEY.match(key)
        if match is not None and layout in ('official', 'timm-legacy'):
            index = int(match.group(2) if match.group(2) is not None else match.group(3))
            new = f'transformers.{index + 1}.pool.' + key[match.end():]
        stage = re.match(r'^transformers\.(\d+)\.', new)
        if new.startswith(_DROPPED_PREFIXES) or (stage is not None and int(stage.group(1)) >= num_stages):
            report.dropped.append(key)
            continue
        if new != key:
            report.renamed.append((key, new))
        out[new] = value
    return out


def resize_pos_embed(pos_embed: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bicubically resize a ``(1, C, h, w)`` position embedding to ``size`` (computed in float32)."""
    size = tuple(int(s) for s in size)
    if tuple(pos_embed.shape[-2:]) == size:
        return pos_embed
    return F.interpolate(pos_embed.float(), size=size, mode='bicubic', align_corners=False).to(pos_embed.dtype)


def _missing_file_message(path: str | None) -> str:
    return (f'PiT pretrained weights not found at {path!r}. Download the ImageNet weights (naver-ai/pit releases or '
            "timm's pit_*_224 on the Hugging Face hub) on a machine with internet access, convert them with "
            '`python tools/convert_checkpoint.py SRC data/pretrained/pit_s.pth` (or `pit-det-convert`), and point '
            "the config at the file (--cfg-options model.backbone.init_cfg.checkpoint=PATH). To train from scratch "
            'on purpose, pass --cfg-options model.backbone.init_cfg=None.')


def load_pit_weights(model: nn.Module, path: str | Path | None, prefix: str | None = None,
                     min_match: float = 0.5) -> str:
    """Load a PiT checkpoint of any layout into ``model`` with every key checked.

    Args:
        model: a :class:`pit_det.PiT`.
        path: checkpoint file, read with ``weights_only=True``.
        prefix: keep only keys under this prefix (stripped), e.g. ``'backbone.'``.
        min_match: fraction of the model's tensors that must be found in the file.

    Returns:
        A one-line summary (layout, loaded, missing, unexpected).

    Raises:
        FileNotFoundError: the file does not exist (the message says how to get weights).
        CheckpointMismatchError: shapes differ (an S checkpoint into a B backbone) or too little matched.
    """
    if path is None or not Path(path).is_file():
        raise FileNotFoundError(_missing_file_message(None if path is None else str(path)))
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    if prefix:
        checkpoint = extract_state_dict(checkpoint)
        checkpoint = {k[len(prefix):]: v for k, v in checkpoint.items() if k.startswith(prefix)}
    report = ConversionReport('')
    sd = convert_pit_checkpoint(checkpoint, num_stages=len(model.transformers), report=report)
    own = model.state_dict()
    if 'pos_embed' in sd and sd['pos_embed'].ndim == 4 and sd['pos_embed'].shape[:2] == own['pos_embed'].shape[:2]:
        sd['pos_embed'] = resize_pos_embed(sd['pos_embed'], own['pos_embed'].shape[-2:])
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        raise CheckpointMismatchError(
            f'{path} does not fit this PiT (arch {model.arch_settings}): {len(mismatched)} tensors differ in shape, '
            'e.g. ' + '; '.join(mismatched[:4]) + '. Check that the checkpoint is of the same arch '
            '(ti/xs/s/b, distilled or not).')
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    matched = len(own) - len(missing)
    if matched < min_match * len(own):
        raise CheckpointMismatchError(
            f'{path}: only {matched} of {len(own)} PiT tensors found in the checkpoint (layout {report.layout}); '
            f'missing e.g. {missing[:4]}, unexpected e.g. {unexpected[:4]}.')
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    summary = (f'layout {report.layout}, {matched}/{len(own)} tensors loaded, {len(report.renamed)} renamed, '
               f'{len(report.dropped)} dropped (classifier or unused stages)')
    if missing:
        summary += f'; missing: {missing}'
    if unexpected:
        summary += f'; unexpected: {unexpected}'
    return summary
