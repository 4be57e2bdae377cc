"""PiT checkpoints: which of the three layouts a state dict is in, its conversion to this package's, and loading.

Three layouts exist for PiT's weights (everything but the pooling layers is named alike):

* official naver-ai: ``pools.{0,1}.{conv,fc}.*``
* timm >= 0.9 (this package's own layout): ``transformers.{1,2}.pool.*``
* timm < 0.9: ``transformers.{0,1}.pool.*``: the same key name as timm >= 0.9 means a different layer.

:func:`convert_pit_checkpoint` maps any of them (possibly nested under ``state_dict``/``model`` and prefixed with
``module.``/``backbone.``) to the timm >= 0.9 layout without the classifier (``norm``, ``head``, ``head_dist``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..checkpoint.matching import CLASSIFIER_PREFIXES, CheckpointMismatchError, ConversionReport, extract_state_dict
from ..checkpoint.sources import is_remote, missing_weights_message

_POOL_KEY = re.compile(r'^(pools\.(\d+)\.|transformers\.(\d+)\.pool\.)')


def detect_layout(sd: dict[str, torch.Tensor]) -> str:
    """``'official'``, ``'timm'`` (>= 0.9), ``'timm-legacy'`` (< 0.9), or ``'unpooled'`` when no pooling key exists.

    Raises:
        CheckpointMismatchError: when the keys are not those of a PiT.
    """
    if not any(k.startswith(('patch_embed.', 'pools.', 'transformers.')) for k in sd):
        sample = ', '.join(sorted(sd)[:5])
        raise CheckpointMismatchError(
            f'no PiT keys (patch_embed.*, transformers.*, pools.*) found; first keys: '
            f'{sample or "none"}. Is this a PiT checkpoint?'
        )
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


def convert_pit_checkpoint(
    state_dict: dict, num_stages: int = 3, report: ConversionReport | None = None
) -> dict[str, torch.Tensor]:
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
            new = f'transformers.{index + 1}.pool.' + key[match.end() :]
        stage = re.match(r'^transformers\.(\d+)\.', new)
        if new.startswith(CLASSIFIER_PREFIXES) or (stage is not None and int(stage.group(1)) >= num_stages):
            report.dropped.append(key)
            continue
        if new != key:
            report.renamed.append((key, new))
        out[new] = value
    return out


def recognises_pit_checkpoint(sd: dict) -> bool:
    """Whether ``sd`` (unwrapped) holds PiT weights in a layout :func:`convert_pit_checkpoint` knows."""
    try:
        detect_layout(sd)
        return True
    except CheckpointMismatchError:
        return False


def load_pit_weights(model: nn.Module, source: str | Path) -> ConversionReport:
    """Load PiT weights of any layout from ``source`` into ``model`` through the one loading path.

    Args:
        model: a :class:`~pit_det.models.PiT`.
        source: a checkpoint path, an ``hf-hub:`` tag or a URL (read weights-only).

    Returns:
        The report of the load (layout, renamed, dropped, loaded, missing, unexpected).

    Raises:
        FileNotFoundError: the file does not exist (the message says how to get weights).
        CheckpointReadError: the file is unreadable or unsafe.
        CheckpointMismatchError: shapes differ (an S checkpoint into a B backbone) or too little matched.
    """
    from mmengine.runner import load_checkpoint

    source = str(source)
    if not is_remote(source) and '://' not in source and not Path(source).exists():
        raise FileNotFoundError(missing_weights_message(source))
    load_checkpoint(model, str(source), map_location='cpu', strict=False, logger='current')
    return model.load_report
