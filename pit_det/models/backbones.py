"""The backbones the tools name on their command lines, one grammar for all of them (the latency tool, the
attention analysis): ``pit-<ti|xs|s|b>[-distilled]`` (:class:`~pit_det.models.pit.PiT` of that arch) and ``vit-s``
(the paper's ViT baseline, :class:`~pit_det.models.vit.ViTPyramid`)."""

from __future__ import annotations

from torch import nn

from .pit import ARCH_ZOO, PiT
from .vit import ViTPyramid

BACKBONE_NAMES = 'pit-<ti|xs|s|b>[-distilled] or vit-s'


def is_backbone_name(name: str) -> bool:
    """Whether ``name`` names a backbone of :func:`build_named_backbone`."""
    return name == 'vit-s' or (name.startswith('pit-') and name[4:].lower().replace('_', '-') in ARCH_ZOO)


def build_named_backbone(name: str) -> nn.Module:
    """The backbone ``name`` names, with random weights.

    Raises:
        ValueError: an unknown name, naming the known ones.
    """
    if name.startswith('pit-'):
        return PiT(arch=name[4:])  # an unknown arch: PiT's own error, naming the known ones
    if name == 'vit-s':
        return ViTPyramid()
    raise ValueError(f'unknown backbone {name!r}: use {BACKBONE_NAMES}')
