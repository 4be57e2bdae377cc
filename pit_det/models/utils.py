"""What the models share: the attention switch of PiT's and timm's transformers (:func:`explicit_attention`),
stages kept frozen through ``train()`` (:class:`FreezesStages`), one image's data sample (:func:`image_sample`)."""

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


class FreezesStages:
    """A backbone whose ``_freeze_stages()`` runs again after every ``train()`` (mmdet's pattern), so that frozen
    parts stay in eval mode and without gradients."""

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self


def image_sample(height: int, width: int):
    """The data sample of one unpadded, unscaled ``height x width`` input, as a detector's ``predict`` takes it."""
    from mmdet.structures import DetDataSample

    shape = (height, width)
    return DetDataSample(
        metainfo=dict(
            img_shape=shape, ori_shape=shape, batch_input_shape=shape, pad_shape=shape, scale_factor=(1.0, 1.0)
        )
    )
