"""Switches shared by PiT and timm's transformers."""
from __future__ import annotations

import contextlib

from torch import nn


@contextlib.contextmanager
def explicit_attention(model: nn.Module):
    """Switch fused attention (``fused_attn``, PiT's and timm's) to explicit matrices, then back.

    FLOP counters see the attention matrices, and attention extractors their probabilities, only on the explicit
    path.
    """
    switched = [m for m in model.modules() if getattr(m, 'fused_attn', None) is True]
    for module in switched:
        module.fused_attn = False
    try:
        yield
    finally:
        for module in switched:
            module.fused_attn = True
