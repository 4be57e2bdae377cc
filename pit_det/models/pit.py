"""Pooling-based Vision Transformer (PiT) as a multi-scale MMDetection backbone.

Paper: Heo et al., "Rethinking Spatial Dimensions of Vision Transformers", https://arxiv.org/abs/2103.16302.
Reference implementations: https://github.com/naver-ai/pit (``pit.py``) and timm (``timm/models/pit.py``); the
parameter names follow timm >= 0.9 so its checkpoints load unchanged, other layouts are converted on loading by
:mod:`pit_det.models.pit_layout`.
"""

# PiT: Copyright 2021-present NAVER Corp. Apache License v2.0.
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from timm.layers import Attention
from timm.models.vision_transformer import Block
from torch import nn

from ..checkpoint.matching import ConversionReport, FitsCheckpoints, check_backbone_fit
from .pit_layout import convert_pit_checkpoint, recognises_pit_checkpoint
from .utils import FreezesStages

ARCH_ZOO: dict[str, dict] = {
    'ti': dict(patch_size=16, stride=8, base_dims=(32, 32, 32), depths=(2, 6, 4), heads=(2, 4, 8)),
    'xs': dict(patch_size=16, stride=8, base_dims=(48, 48, 48), depths=(2, 6, 4), heads=(2, 4, 8)),
    's': dict(patch_size=16, stride=8, base_dims=(48, 48, 48), depths=(2, 6, 4), heads=(3, 6, 12)),
    'b': dict(patch_size=14, stride=7, base_dims=(64, 64, 64), depths=(3, 6, 4), heads=(4, 8, 16)),
}
ARCH_ZOO.update({f'{name}-distilled': dict(cfg, distilled=True) for name, cfg in list(ARCH_ZOO.items())})
_ARCH_KEYS = {'patch_size', 'stride', 'base_dims', 'depths', 'heads'}


def resize_pos_embed(pos_embed: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bicubically resize a ``(1, C, h, w)`` position embedding to ``size`` (computed in float32), exactly the
    identity at its own size. ``size`` may be a tensor's ``shape[-2:]``: a traced graph then resizes it to each
    input's (no branch on the sizes, which tracing would fix at the traced one)."""
    return F.interpolate(pos_embed.float(), size=size, mode='bicubic', align_corners=False).to(pos_embed.dtype)


def resolve_arch(arch: str | dict) -> dict:
    """Return the full architecture dict for a name of :data:`ARCH_ZOO` or a dict with its keys.

    Raises:
        ValueError: for an unknown name or a dict with missing or unknown keys.
    """
    if isinstance(arch, str):
        key = arch.lower().replace('_', '-')
        if key not in ARCH_ZOO:
            raise ValueError(
                f'unknown PiT arch {arch!r}; valid names: {", ".join(ARCH_ZOO)} '
                f'(or a dict with keys {sorted(_ARCH_KEYS)})'
            )
        return dict(ARCH_ZOO[key])
    if not isinstance(arch, dict):
        raise ValueError(f'arch must be a name or a dict, got {type(arch).__name__}')
    missing = _ARCH_KEYS - set(arch)
    unknown = set(arch) - _ARCH_KEYS - {'distilled', 'mlp_ratio'}
    if missing or unknown:
        raise ValueError(f'PiT arch dict: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}')
    if not len(arch['base_dims']) == len(arch['depths']) == len(arch['heads']) == 3:
        raise ValueError('PiT arch dict: base_dims, depths and heads need one entry per stage (3)')
    return dict(arch)


def _block(dim: int, num_heads: int, mlp_ratio: float, drop_path: float, drop: float, attn_drop: float) -> Block:
    """timm's ViT ``Block`` as timm's own PiT builds it (qkv bias, LayerNorm eps 1e-6): the same parameter names, and
    ``fused_attn`` to switch its attention to explicit matrices."""
    return Block(
        dim,
        num_heads,
        mlp_ratio,
        qkv_bias=True,
        proj_drop=drop,
        attn_drop=attn_drop,
        drop_path=drop_path,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )


class Pooling(nn.Module):
    """PiT pooling: depthwise-multiplier conv (k3, s2, p1) on the map, a linear layer on the class tokens."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=2, padding=1, groups=in_dim)
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor, cls_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv(x), self.fc(cls_tokens)


class Stage(nn.Module):
    """Optional pooling, then transformer blocks over ``[class tokens, flattened map]``."""

    def __init__(self, blocks: list[Block], pool: Pooling | None) -> None:
        super().__init__()
        self.pool = pool
        self.blocks = nn.Sequential(*blocks)
        self.with_cp = False

    def forward(self, x: torch.Tensor, cls_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pool is not None:
            x, cls_tokens = self.pool(x, cls_tokens)
        B, C, H, W = x.shape
        num_cls = cls_tokens.shape[1]
        tokens = torch.cat((cls_tokens, x.flatten(2).transpose(1, 2)), dim=1)
        for block in self.blocks:
            if self.with_cp and tokens.requires_grad:
                tokens = cp.checkpoint(block, tokens, use_reentrant=False)
            else:
                tokens = block(tokens)
        x = tokens[:, num_cls:].transpose(1, 2).reshape(B, C, H, W)
        return x, tokens[:, :num_cls]


@MODELS.register_module()
class PiT(FitsCheckpoints, FreezesStages, BaseModule):
    """PiT backbone returning its three spatial stages as NCHW feature maps.

    Output contract for an input of ``H x W`` (``P``/``S`` the patch size and stride, 16/8; 14/7 for ``b``)::

        stage 0: H0 = floor((H - P) / S) + 1,   channels base_dims[0] * heads[0], nominal stride S
        stage i: Hi = ceil(H(i-1) / 2),         channels base_dims[i] * heads[i], nominal stride S * 2**i

    and likewise for ``W``. The nominal strides (8/16/32, 7/14/28 for ``b``) are approximate: the patch conv has no
    padding, so e.g. 800x1333 gives 99x165, 50x83 and 25x42 for PiT-S. Exact sizes come from :meth:`feature_sizes`.

    Example:
        >>> model = PiT(arch='s')
        >>> [tuple(f.shape) for f in model(torch.rand(1, 3, 401, 667))]
        [(1, 144, 49, 82), (1, 288, 25, 41), (1, 576, 13, 21)]

    Args:
        arch: a name of :data:`ARCH_ZOO` (``ti``, ``xs``, ``s``, ``b`` and ``<name>-distilled``) or a dict with the
            keys ``patch_size``, ``stride``, ``base_dims``, ``depths``, ``heads`` (optional ``distilled``,
            ``mlp_ratio``).
        pretrain_img_size: image size the stored position embedding grid corresponds to (224 for the ImageNet
            weights). Other input sizes resize it bicubically at forward time.
        out_indices: stages to return, any subset of (0, 1, 2). Stages after the last one are not built.
        frozen_stages: -1 freezes nothing; 0 the patch embedding, position embedding and class tokens; ``i >= 1``
            also stages ``0 .. i-1`` (with their pooling). Frozen parts stay in eval mode after ``train()``.
        drop_rate, attn_drop_rate, drop_path_rate: dropout, attention dropout and stochastic depth (linear over all
            blocks, as timm).
        with_cp: activation checkpointing per block (saves memory when training at high resolution).
        out_norm: apply a LayerNorm over channels to each output map (off in the reference).
        fused_attn: attention through ``F.scaled_dot_product_attention`` (memory linear in tokens). ``False`` uses
            an explicit attention matrix, which FLOP counters can see.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads official naver-ai, timm >= 0.9 or timm < 0.9
            weights (converted, position embedding resized, shapes checked).

    Every state dict loaded into this module, by ``init_cfg``, mmdet's ``load_from`` or ``load_state_dict``, is
    converted from the layout it is in, its position embedding resized to this model's grid and its shapes checked
    (:class:`~pit_det.checkpoint.matching.FitsCheckpoints`; layouts in :mod:`pit_det.models.pit_layout`).
    :attr:`load_report` describes the last load.
    """

    checkpoint_name = 'PiT'
    recognises = staticmethod(recognises_pit_checkpoint)

    def __init__(
        self,
        arch: str | dict = 's',
        pretrain_img_size: int = 224,
        out_indices: Sequence[int] = (0, 1, 2),
        frozen_stages: int = -1,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        with_cp: bool = False,
        out_norm: bool = False,
        fused_attn: bool = True,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = cfg = resolve_arch(arch)
        self.out_indices = tuple(sorted(int(i) for i in out_indices))
        if (
            not self.out_indices
            or len(set(self.out_indices)) != len(self.out_indices)
            or not set(self.out_indices) <= {0, 1, 2}
        ):
            raise ValueError(f'out_indices must be a non-empty subset of (0, 1, 2), got {tuple(out_indices)}')
        if not -1 <= frozen_stages <= 3:
            raise ValueError(f'frozen_stages must be in -1..3, got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.patch_size, self.stride = int(cfg['patch_size']), int(cfg['stride'])
        dims = [b * h for b, h in zip(cfg['base_dims'], cfg['heads'], strict=True)]
        num_stages = self.out_indices[-1] + 1
        self.num_tokens = 2 if cfg.get('distilled', False) else 1
        mlp_ratio = cfg.get('mlp_ratio', 4)

        self.patch_embed = nn.Module()
        self.patch_embed.conv = nn.Conv2d(3, dims[0], kernel_size=self.patch_size, stride=self.stride)
        grid = (pretrain_img_size - self.patch_size) // self.stride + 1
        self.pos_embed = nn.Parameter(torch.zeros(1, dims[0], grid, grid))
        self.cls_token = nn.Parameter(torch.zeros(1, self.num_tokens, dims[0]))
        self.pos_drop = nn.Dropout(drop_rate)

        total_depth = sum(cfg['depths'])
        dpr = [drop_path_rate * i / max(total_depth - 1, 1) for i in range(total_depth)]
        self.transformers = nn.ModuleList()
        for i in range(num_stages):
            start = sum(cfg['depths'][:i])
            blocks = [
                _block(dims[i], cfg['heads'][i], mlp_ratio, dpr[start + j], drop_rate, attn_drop_rate)
                for j in range(cfg['depths'][i])
            ]
            self.transformers.append(Stage(blocks, Pooling(dims[i - 1], dims[i]) if i > 0 else None))
        self.out_channels = tuple(dims[i] for i in self.out_indices)
        self.strides = tuple(self.stride * 2**i for i in self.out_indices)
        self.out_norms = (
            nn.ModuleList([nn.LayerNorm(dims[i], eps=1e-6) for i in self.out_indices]) if out_norm else None
        )
        self.set_with_cp(with_cp)
        self.set_fused_attn(fused_attn)
        self.load_report: ConversionReport | None = None
        self.register_fit_hook()
        self._freeze_stages()

    # ----------------------------------------------------------------------------------------------- switches
    @staticmethod
    def declared_channels(arch: str | dict = 's', out_indices: Sequence[int] = (0, 1, 2), **_) -> tuple[int, ...]:
        """The channels of the maps a PiT of these arguments returns (its ``out_channels``), without building it: what
        the preflight holds a neck's ``in_channels`` against."""
        cfg = resolve_arch(arch)
        dims = [b * h for b, h in zip(cfg['base_dims'], cfg['heads'], strict=True)]
        return tuple(dims[i] for i in sorted(int(i) for i in out_indices))

    def set_with_cp(self, enable: bool) -> None:
        for stage in self.transformers:
            stage.with_cp = enable

    def set_fused_attn(self, enable: bool) -> None:
        """Switch between fused (SDPA) and explicit attention in every block."""
        for module in self.modules():
            if isinstance(module, Attention):  # timm's, in every block
                module.fused_attn = enable

    # ---------------------------------------------------------------------------------------------- geometry
    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Exact ``(h, w)`` of each returned map for an ``height x width`` input (see the class docstring)."""
        self._check_input_size(height, width)
        h, w = (height - self.patch_size) // self.stride + 1, (width - self.patch_size) // self.stride + 1
        sizes = [(h, w)]
        for _ in range(2):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
            sizes.append((h, w))
        return [sizes[i] for i in self.out_indices]

    def _check_input_size(self, height: int, width: int) -> None:
        if height < self.patch_size or width < self.patch_size:
            raise ValueError(
                f'PiT needs an input of at least one patch ({self.patch_size}x{self.patch_size} '
                f'pixels), got {height}x{width}; resize or pad the image (e.g. a larger Resize scale '
                'or Pad(size_divisor=32) in the data pipeline).'
            )

    # ---------------------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self._check_input_size(x.shape[-2], x.shape[-1])
        x = self.patch_embed.conv(x)
        pos_embed = resize_pos_embed(self.pos_embed, x.shape[-2:])  # one path for eager and trace
        x = self.pos_drop(x + pos_embed.to(x.dtype))
        cls_tokens = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        outs = []
        for i, stage in enumerate(self.transformers):
            x, cls_tokens = stage(x, cls_tokens)
            if i in self.out_indices:
                outs.append(x)
        if self.out_norms is not None:
            outs = [
                norm(o.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
                for norm, o in zip(self.out_norms, outs, strict=True)
            ]
        return tuple(outs)

    # -------------------------------------------------------------------------------------- freezing, init
    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.patch_embed, self.pos_drop] + list(self.transformers[: self.frozen_stages])

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self.pos_embed.requires_grad_(False)
            self.cls_token.requires_grad_(False)
        for module in self._frozen_modules():
            module.eval()
            module.requires_grad_(False)

    def init_weights(self) -> None:
        """Truncated-normal initialisation, then ``init_cfg``'s pretrained weights through mmengine's loader."""
        if not self.is_init:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.trunc_normal_(self.cls_token, std=0.02)
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.trunc_normal_(module.weight, std=0.02)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, nn.LayerNorm):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
        super().init_weights()

    def convert_checkpoint(self, state_dict: dict, report: ConversionReport) -> dict:
        """A PiT state dict of any layout converted to this one, ``pos_embed`` resized to this grid, checked
        against this model (raises :class:`~pit_det.checkpoint.matching.CheckpointMismatchError`)."""
        converted = convert_pit_checkpoint(state_dict, num_stages=len(self.transformers), report=report)
        pos = converted.get('pos_embed')
        if pos is not None and pos.ndim == 4 and pos.shape[:2] == self.pos_embed.shape[:2]:
            converted['pos_embed'] = resize_pos_embed(pos, self.pos_embed.shape[-2:])
        check_backbone_fit(converted, self.state_dict(), 'PiT', str(self.arch_settings), report)
        return converted
