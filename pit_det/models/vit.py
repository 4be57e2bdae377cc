"""ViT-S (DeiT-S) as a multi-scale MMDetection backbone: the paper's ViT baseline for Deformable DETR.

timm's ``VisionTransformer`` is held as a submodule (not re-implemented), built with ``dynamic_img_size=True`` and
``dynamic_img_pad=True``: any input size works, padded on the right and bottom to a multiple of the patch size, with
the position embedding resampled to the token grid at forward time.

The paper (Heo et al. 2021) does not say how ViT's single stride-16 map fed Deformable DETR's levels. This is *our*
construction, the standard one of ViTDet's simple feature pyramid (Li et al. 2022) applied to three depths: the
token maps after blocks 4, 8 and 12 (``out_indices=(3, 7, 11)``) go through a stride-2 transposed convolution
(stride 8), the identity (stride 16) and a stride-2 max pooling (stride 32).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import nn

from ..checkpoint.matching import (
    CLASSIFIER_PREFIXES,
    CheckpointMismatchError,
    ConversionReport,
    FitsCheckpoints,
    check_backbone_fit,
    extract_state_dict,
)
from .utils import FreezesStages


def recognises_vit_checkpoint(sd: dict) -> bool:
    """Whether ``sd`` (unwrapped) holds a timm ViT's weights: a patch projection and blocks."""
    return 'patch_embed.proj.weight' in sd and any(k.startswith('blocks.') for k in sd)


@MODELS.register_module()
class ViTPyramid(FitsCheckpoints, FreezesStages, BaseModule):
    """timm's ViT with three taps turned into strides 8/16/32 (see the module docstring), NCHW outputs.

    Example:
        >>> model = ViTPyramid()
        >>> [tuple(f.shape) for f in model(torch.rand(1, 3, 400, 666))]
        [(1, 384, 50, 84), (1, 384, 25, 42), (1, 384, 13, 21)]

    Args:
        model_name: a timm ViT (default ``deit_small_patch16_224``, the paper's ViT-S).
        out_indices: the blocks (0-based) whose outputs are tapped, shallow to deep; mapped to strides 8, 16, 32.
        frozen_stages: -1 freezes nothing; 0 the patch embedding, position embedding and class token; ``i >= 1``
            also the blocks up to the ``i``-th tap.
        drop_path_rate: stochastic depth (timm's linear rule).
        with_cp: activation checkpointing per block (timm's ``set_grad_checkpointing``).
        init_cfg: ``dict(type='Pretrained', checkpoint=SOURCE)``: a timm/DeiT checkpoint (local file, ``hf-hub:``
            tag, URL), classifier dropped, shapes checked; e.g. ``hf-hub:timm/deit_small_patch16_224.fb_in1k``.
    """

    checkpoint_name = 'ViT'
    recognises = staticmethod(recognises_vit_checkpoint)

    def __init__(
        self,
        model_name: str = 'deit_small_patch16_224',
        out_indices: Sequence[int] = (3, 7, 11),
        frozen_stages: int = -1,
        drop_path_rate: float = 0.1,
        with_cp: bool = False,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        import timm

        self.model_name = model_name
        self.out_indices = tuple(int(i) for i in out_indices)
        if len(self.out_indices) != 3 or list(self.out_indices) != sorted(set(self.out_indices)):
            raise ValueError(f'out_indices must be three increasing block indices, got {tuple(out_indices)}')
        if not -1 <= frozen_stages <= 3:
            raise ValueError(f'frozen_stages must be in -1..3, got {frozen_stages}')
        self.vit = timm.create_model(
            model_name, pretrained=False, dynamic_img_size=True, dynamic_img_pad=True, drop_path_rate=drop_path_rate
        )
        if self.out_indices[-1] >= len(self.vit.blocks):
            raise ValueError(f'out_indices {self.out_indices}: {model_name} has {len(self.vit.blocks)} blocks')
        self.vit.prune_intermediate_layers(list(self.out_indices), prune_norm=True, prune_head=True)
        self.vit.set_grad_checkpointing(with_cp)
        dim = self.vit.embed_dim
        self.patch_size = self.vit.patch_embed.patch_size[0]
        self.upsample = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
        self.downsample = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        self.out_channels = (dim, dim, dim)
        self.strides = (self.patch_size // 2, self.patch_size, self.patch_size * 2)
        self.frozen_stages = frozen_stages
        self.load_report: ConversionReport | None = None
        self.register_fit_hook()
        self._freeze_stages()

    @staticmethod
    def declared_channels(
        model_name: str = 'deit_small_patch16_224', out_indices: Sequence[int] = (3, 7, 11), **_
    ) -> tuple[int, ...]:
        """The channels of the three maps (its ``out_channels``), from timm's model built on the meta device (no
        memory, no weights): what the preflight holds a neck's ``in_channels`` against."""
        import timm

        with torch.device('meta'):
            dim = timm.create_model(model_name, pretrained=False).embed_dim
        return (dim,) * len(tuple(out_indices))

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The token maps after the ``out_indices`` blocks, NCHW: timm's ``forward_intermediates``."""
        return self.vit.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shallow, middle, deep = self.taps(x)
        return self.upsample(shallow), middle, self.downsample(deep)

    # -------------------------------------------------------------------------------------- freezing, loading
    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.vit.patch_embed, self.vit.pos_drop, self.vit.patch_drop, self.vit.norm_pre]
        frozen += list(self.vit.blocks[: self.out_indices[self.frozen_stages - 1] + 1]) if self.frozen_stages else []
        for param in (self.vit.pos_embed, self.vit.cls_token):
            if param is not None:
                param.requires_grad_(False)
        for module in frozen:
            module.eval()
            module.requires_grad_(False)

    def convert_checkpoint(self, state_dict: dict, report: ConversionReport) -> dict:
        """A timm ViT checkpoint (keys without ``vit.``) placed under ``vit.``, the classifier dropped, checked
        against this model."""
        local = extract_state_dict(state_dict)
        report.layout = 'timm-vit'
        converted = {}
        for key, value in local.items():
            bare = key[len('vit.') :] if key.startswith('vit.') else key
            if bare.startswith(CLASSIFIER_PREFIXES) or (
                bare.startswith('blocks.') and int(bare.split('.')[1]) > self.out_indices[-1]
            ):
                report.dropped.append(key)
                continue
            own_key = key if key.startswith(('vit.', 'upsample.')) else f'vit.{key}'
            if own_key != key:
                report.renamed.append((key, own_key))
            converted[own_key] = value
        if not recognises_vit_checkpoint({k[len('vit.') :]: v for k, v in converted.items()}):
            raise CheckpointMismatchError(
                f'no ViT keys (patch_embed.proj.*, blocks.*) found; first keys: '
                f'{sorted(local)[:5]}. Is this a timm ViT/DeiT checkpoint?'
            )
        own = self.state_dict()
        checked = {k: v for k, v in own.items() if k.startswith('vit.') or k in converted}  # + our layers if saved
        check_backbone_fit(
            converted,
            checked,
            'ViT',
            self.model_name,
            report,
            advice='Check that the checkpoint is of the same ViT (model_name).',
        )
        return converted
