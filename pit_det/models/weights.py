"""Weights: where they are read from, which layout they are in, and whether they fit, in one path.

Every checkpoint, whoever asks for it, is read through mmengine's ``CheckpointLoader``: the backbone's
``init_cfg=dict(type='Pretrained', checkpoint=...)``, mmdet's ``load_from``, ``--resume``, ``mim test``,
``pit-det-infer`` and ``pit-det-convert``. This module registers the loader for local files there (weights-only,
with a clear error for a missing, empty, truncated or foreign file), so a new source is one more registered scheme.
Every state dict that reaches a model then passes the load-state-dict pre-hooks of :class:`~pit_det.models.PiT`
(layout conversion, position-embedding resize, shape check) and of the detector (:func:`check_detector_fit`):
nothing loads half a model with warnings only.

Three layouts exist for PiT's weights (everything but the pooling layers is named alike):

* official naver-ai: ``pools.{0,1}.{conv,fc}.*``
* timm >= 0.9 (this package's own layout): ``transformers.{1,2}.pool.*``
* timm < 0.9: ``transformers.{0,1}.pool.*``: the same key name as timm >= 0.9 means a different layer.

:func:`convert_pit_checkpoint` maps any of them (possibly nested under ``state_dict``/``model`` and prefixed with
``module.``/``backbone.``) to the timm >= 0.9 layout without the classifier (``norm``, ``head``, ``head_dist``).
"""
from __future__ import annotations

import os.path as osp
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from mmengine.runner import CheckpointLoader
from torch import nn

_DROPPED_PREFIXES = ('norm.', 'head.', 'head_dist.')
_POOL_KEY = re.compile(r'^(pools\.(\d+)\.|transformers\.(\d+)\.pool\.)')
MIN_MATCH = 0.5  # a checkpoint must hold at least this fraction of a model's tensors
# Layers whose size is the number of classes: a checkpoint trained on another class set differs only there, which
# is how a detector is fine-tuned on a new dataset (those layers keep their initialisation, with a warning).
_CLASS_LAYERS = re.compile(r'^bbox_head\.cls_branches\.')


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into; the message names what differs."""


class CheckpointReadError(ValueError):
    """A checkpoint file cannot be read (empty, truncated, not a PyTorch file, or refused as unsafe)."""


@dataclass
class ConversionReport:
    layout: str
    renamed: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    loaded: int = 0
    total: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (f'layout {self.layout}, {self.loaded}/{self.total} tensors loaded, {len(self.renamed)} renamed, '
                f'{len(self.dropped)} dropped (classifier or unused stages)')
        if self.missing:
            text += f'; missing: {self.missing}'
        if self.unexpected:
            text += f'; unexpected: {self.unexpected}'
        return text


# ----------------------------------------------------------------------------------------------------- reading
def read_checkpoint(path: str | Path, map_location='cpu') -> dict:
    """Read a local checkpoint with ``weights_only=True``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointReadError: a folder, an empty, truncated or non-PyTorch file, or a pickle that holds code.
    """
    path = Path(osp.expanduser(str(path)))
    if not path.exists():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if not path.is_file():
        raise CheckpointReadError(f'checkpoint {path} is a folder, not a file: give the .pth file inside it')
    if path.stat().st_size == 0:
        raise CheckpointReadError(f'checkpoint {path} is empty (0 bytes): the download or save did not finish; '
                                  'fetch or save it again')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if 'Unsupported' in line), '')
        raise CheckpointReadError(
            f'checkpoint {path} was refused: Weights only load failed, it holds objects other than tensors and '
            f'plain containers ({detail or str(exc).splitlines()[0]}). It may run code when loaded; use a '
            'checkpoint from a source you trust, re-saved as a plain state dict.') from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, IndexError, ... for a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointReadError(f'checkpoint {path} is not a readable PyTorch file ({first}): it is truncated or '
                                  'of another format; fetch or save it again') from None


def load_from_local(filename: str, map_location=None) -> dict:
    """mmengine ``CheckpointLoader`` scheme for local paths (prefix ``''``): :func:`read_checkpoint`."""
    return read_checkpoint(filename, map_location)


CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)


def missing_weights_message(path: str | None) -> str:
    return (f'PiT pretrained weights not found at {path!r}. Download the ImageNet weights (naver-ai/pit releases or '
            "timm's pit_*_224 on the Hugging Face hub) on a machine with internet access, convert them with "
            '`python tools/convert_checkpoint.py SRC data/pretrained/pit_s.pth` (or `pit-det-convert`), and point '
            "the config at the file (--cfg-options model.backbone.init_cfg.checkpoint=PATH). To train from scratch "
            'on purpose, pass --cfg-options model.backbone.init_cfg=None.')


# ----------------------------------------------------------------------------------------------------- layouts
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


# ------------------------------------------------------------------------------------------------------ checks
def _shape_mismatches(sd: dict, own: dict) -> list[str]:
    return [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
            for k, v in sd.items() if k in own and hasattr(v, 'shape') and v.shape != own[k].shape]


def check_backbone_fit(sd: dict, own: dict, name: str, arch: str, report: ConversionReport) -> None:
    """Raise unless ``sd`` (converted) fits the backbone whose state dict is ``own``; fill ``report``'s counts.

    Raises:
        CheckpointMismatchError: a tensor differs in shape, or less than :data:`MIN_MATCH` of ``own`` is present.
    """
    mismatched = _shape_mismatches(sd, own)
    if mismatched:
        raise CheckpointMismatchError(
            f'the checkpoint does not fit this {name} (arch {arch}): {len(mismatched)} tensors differ in shape, e.g. '
            + '; '.join(mismatched[:4]) + '. Check that the checkpoint is of the same arch '
            '(ti/xs/s/b, distilled or not).')
    report.missing = sorted(set(own) - set(sd))
    report.unexpected = sorted(set(sd) - set(own))
    report.total = len(own)
    report.loaded = len(own) - len(report.missing)
    if report.loaded < MIN_MATCH * len(own):
        raise CheckpointMismatchError(
            f'only {report.loaded} of {len(own)} {name} tensors found in the checkpoint (layout {report.layout}); '
            f'missing e.g. {report.missing[:4]}, unexpected e.g. {report.unexpected[:4]}.')


def check_detector_fit(model: nn.Module, state_dict: dict, prefix: str = '') -> list[str]:
    """Raise unless a detector checkpoint fits ``model``; return the class-layer mismatches it tolerates.

    The backbone's own tensors are checked by the backbone when it converts them (a PiT in another layout has other
    names and shapes); everything else must match in shape, except the classification layers (fine-tuning on
    another class set). A checkpoint holding less than :data:`MIN_MATCH` of the model's tensors is refused unless it
    is a backbone-only checkpoint (``pit-det-convert``'s output, usable as ``load_from``).

    Raises:
        CheckpointMismatchError: naming the tensors that differ, or the keys on both sides when nothing matches.
    """
    own = model.state_dict()
    sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    converts_itself = hasattr(getattr(model, 'backbone', None), 'converts_checkpoints')
    checked = {k: v for k, v in sd.items() if not (converts_itself and k.startswith('backbone.'))}
    mismatched = _shape_mismatches(checked, own)
    tolerated = [m for m in mismatched if _CLASS_LAYERS.match(m)]
    fatal = [m for m in mismatched if not _CLASS_LAYERS.match(m)]
    if fatal:
        raise CheckpointMismatchError(
            f'the checkpoint does not fit this {type(model).__name__}: {len(fatal)} tensors differ in shape, e.g. '
            + '; '.join(fatal[:4]) + '. It was trained with another config (backbone size, embed_dims, '
            'num_queries, levels): use the config it was trained with.')
    matched = [k for k in own if k in sd]
    backbone_only = bool(matched) and all(k.startswith('backbone.') for k in sd)
    if len(matched) < MIN_MATCH * len(own) and not backbone_only:
        raise CheckpointMismatchError(
            f'the checkpoint holds only {len(matched)} of the {len(own)} tensors of this {type(model).__name__} '
            f'(first checkpoint keys: {sorted(sd)[:3] or "none"}; model keys: {sorted(own)[:3]}). It is not a '
            'checkpoint of this detector: pass one written by training this config (work_dirs/.../epoch_N.pth).')
    return tolerated


def load_pit_weights(model: nn.Module, source: str | Path) -> ConversionReport:
    """Load PiT weights of any layout from ``source`` into ``model`` through the one loading path.

    Args:
        model: a :class:`~pit_det.models.PiT`.
        source: a checkpoint path (read weights-only).

    Returns:
        The report of the load (layout, renamed, dropped, loaded, missing, unexpected).

    Raises:
        FileNotFoundError: the file does not exist (the message says how to get weights).
        CheckpointReadError: the file is unreadable or unsafe.
        CheckpointMismatchError: shapes differ (an S checkpoint into a B backbone) or too little matched.
    """
    from mmengine.runner import load_checkpoint

    if not Path(source).is_file() and not Path(source).exists():
        raise FileNotFoundError(missing_weights_message(str(source)))
    load_checkpoint(model, str(source), map_location='cpu', strict=False, logger='current')
    return model.load_report
