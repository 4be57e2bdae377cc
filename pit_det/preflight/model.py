"""Checks of a detector's config that its constructor, its first forward or DDP would otherwise stop on inside a
traceback, made before anything is built (:func:`check_model`, called by :class:`~pit_det.runner.CheckedRunner`).

For any multi-scale DETR (Deformable DETR, DINO, pit-det's or mmdet's): the four level settings agree, the neck's
``in_channels`` are the channels the backbone declares, every backbone output feeds the neck (DDP stops on
parameters that give no loss), the positional encoding fits the transformer, DINO's own rules (two-stage with box
refinement; the denoising generator's class count, queries and width come from the detector). For pit-det's detectors
also their options (``cpu_deform_attn``, ``model.inference``).
"""

from __future__ import annotations

PIT_DET_DETECTORS = ('FastDeformableDETR', 'FastDINO')
DINO_TYPES = ('DINO', 'FastDINO')
DEFAULT_LEVELS = 4  # mmdet's DeformableDETR(num_feature_levels=4) and MultiScaleDeformableAttention(num_levels=4)


def _get(cfg, *keys, default=None):
    for key in keys:
        if not isinstance(cfg, dict) or key not in cfg:
            return default
        cfg = cfg[key]
    return cfg


def level_problems(model_cfg: dict) -> list[str]:
    """The four settings that must name one number of levels, and the neck's outputs against them."""
    neck = model_cfg.get('neck') or {}
    settings = {
        'model.num_feature_levels': model_cfg.get('num_feature_levels', DEFAULT_LEVELS),
        'model.neck.num_outs': neck.get('num_outs', len(neck.get('in_channels') or []) or None),
        'model.encoder.layer_cfg.self_attn_cfg.num_levels': _get(
            model_cfg, 'encoder', 'layer_cfg', 'self_attn_cfg', 'num_levels', default=DEFAULT_LEVELS
        ),
        'model.decoder.layer_cfg.cross_attn_cfg.num_levels': _get(
            model_cfg, 'decoder', 'layer_cfg', 'cross_attn_cfg', 'num_levels', default=DEFAULT_LEVELS
        ),
    }
    if len(set(settings.values())) <= 1:
        return []
    inputs = len(neck.get('in_channels') or [])
    return [
        'the level settings disagree: '
        + ', '.join(f'{k}={v}' for k, v in settings.items())
        + f'. They must be one number: the levels the encoder and decoder sample, {inputs} from the backbone and '
        f'the rest added by the neck (4 for DINO-4scale and Deformable DETR with three backbone maps)'
    ]


class BackboneArgumentError(ValueError):
    """A pit-det backbone's config names an argument its constructor rejects (``model.backbone.arch=zz``)."""


def declared_channels(backbone_cfg: dict) -> tuple[int, ...] | None:
    """The channels of the maps the backbone of ``backbone_cfg`` returns, without building it: what a pit-det
    backbone declares (``declared_channels``), or mmdet's ResNet's from its ``arch_settings``; None if unknown.

    Raises:
        BackboneArgumentError: a pit-det backbone rejects an argument (its message names it and the valid ones).
    """
    from mmdet.models.backbones import ResNet
    from mmdet.registry import MODELS

    kind = backbone_cfg.get('type')
    cls = MODELS.get(kind) if isinstance(kind, str) else kind
    args = {k: v for k, v in backbone_cfg.items() if k != 'type'}
    if cls is not None and hasattr(cls, 'declared_channels'):
        try:
            return tuple(cls.declared_channels(**args))
        except (ValueError, KeyError) as exc:  # what its constructor would raise inside a traceback
            raise BackboneArgumentError(f'model.backbone ({kind}): {exc.args[0] if exc.args else exc}') from None
    if isinstance(cls, type) and issubclass(cls, ResNet) and backbone_cfg.get('depth') in ResNet.arch_settings:
        block = ResNet.arch_settings[backbone_cfg['depth']][0]
        indices = backbone_cfg.get('out_indices', (0, 1, 2, 3))
        return tuple(64 * 2**i * block.expansion for i in indices)
    return None


def backbone_problems(model_cfg: dict) -> list[str]:
    """The neck's ``in_channels`` against the backbone's maps; backbone outputs or stages that feed no loss."""
    backbone, neck = model_cfg.get('backbone') or {}, model_cfg.get('neck') or {}
    problems = []
    in_channels = list(neck.get('in_channels') or [])
    try:
        channels = declared_channels(backbone)
    except BackboneArgumentError as exc:
        return [str(exc)]
    what = (
        f'the backbone ({backbone.get("type")}'
        + ''.join(f', {k} {backbone[k]}' for k in ('arch', 'model_name', 'depth', 'out_indices') if k in backbone)
        + ')'
    )
    if channels is not None and len(channels) > len(in_channels) and in_channels:
        problems.append(
            f'{what} returns {len(channels)} maps but model.neck.in_channels takes {len(in_channels)}: the outputs '
            'the neck does not use feed no loss, and DDP stops on parameters without gradients. Return only the maps '
            f'the neck takes (out_indices), or give the neck all of them: model.neck.in_channels={list(channels)}'
        )
    elif channels is not None and list(channels) != in_channels:
        problems.append(
            f'model.neck.in_channels={in_channels} but {what} returns maps of {list(channels)} channels: '
            f'set --cfg-options model.neck.in_channels="{list(channels)}"'
        )
    num_stages, indices = backbone.get('num_stages', 4), backbone.get('out_indices', (0, 1, 2, 3))
    if (
        backbone.get('type') == 'ResNet'
        and indices
        and max(indices) < num_stages - 1
        and backbone.get('frozen_stages', -1) < num_stages
    ):
        problems.append(
            f'{what} builds {num_stages} stages but returns none after stage {max(indices)}: the later '
            'stages run, feed no loss, and DDP stops on their parameters. Set '
            f'model.backbone.num_stages={max(indices) + 1}'
        )
    return problems


def transformer_problems(model_cfg: dict) -> list[str]:
    """The positional encoding against the transformer's width; DINO's own rules."""
    problems = []
    dims = _get(model_cfg, 'encoder', 'layer_cfg', 'self_attn_cfg', 'embed_dims', default=256)
    feats = _get(model_cfg, 'positional_encoding', 'num_feats', default=None)
    if feats is not None and 2 * feats != dims:
        problems.append(
            f'model.positional_encoding.num_feats={feats} but the transformer is {dims} wide: set it to '
            f'{dims // 2} (the encoding gives 2 x num_feats features per position)'
        )
    if model_cfg.get('type') in DINO_TYPES:
        for key in ('as_two_stage', 'with_box_refine'):
            if model_cfg.get(key) is False:
                problems.append(f'model.{key}=False: DINO is always two-stage with box refinement; remove the option')
        given = [
            k
            for k in ('num_classes', 'num_queries', 'hidden_dim', 'embed_dims', 'num_matching_queries')
            if k in (model_cfg.get('dn_cfg') or {})
        ]
        if given:
            problems.append(
                f'model.dn_cfg sets {", ".join(given)}: DINO sizes its denoising queries from the detector '
                "(the label embedding's classes from model.bbox_head.num_classes, the width from the "
                'transformer, the matching queries from model.num_queries); remove them from dn_cfg'
            )
    return problems


def head_problems(model_cfg: dict) -> list[str]:
    """``test_cfg.max_per_img`` against what the head can rank: it keeps the top boxes among ``num_queries x
    num_classes`` scores, and asking for more fails in ``topk`` at the first validation, after an epoch of training."""
    queries = model_cfg.get('num_queries', 100)  # mmdet's DetectionTransformer default
    classes = _get(model_cfg, 'bbox_head', 'num_classes', default=80)
    keep = _get(model_cfg, 'test_cfg', 'max_per_img', default=None)
    if not all(isinstance(v, int) for v in (queries, classes, keep)):
        return []
    if keep < 1:
        return [f'model.test_cfg.max_per_img={keep}: keep at least 1 detection per image']
    if keep > queries * classes:
        return [
            f'model.test_cfg.max_per_img={keep} but the head ranks {queries} queries x {classes} classes = '
            f'{queries * classes} scores: set model.test_cfg.max_per_img to at most {queries * classes} (or raise '
            'model.num_queries)'
        ]
    return []


def check_structure(model_cfg) -> list[str]:
    """Every problem of :func:`level_problems`, :func:`backbone_problems`, :func:`transformer_problems` and
    :func:`head_problems` of a multi-scale DETR's config (one with an encoder and a ``ChannelMapper`` neck); none for
    other detectors."""
    if not model_cfg or 'encoder' not in model_cfg or (model_cfg.get('neck') or {}).get('type') != 'ChannelMapper':
        return []
    return (
        level_problems(model_cfg)
        + backbone_problems(model_cfg)
        + transformer_problems(model_cfg)
        + head_problems(model_cfg)
    )


def option_problems(model_cfg) -> list[str]:
    """The options of a pit-det detector that its constructor or first ``predict`` would reject inside a traceback:
    ``cpu_deform_attn``, the inference options (:meth:`~pit_det.models.inference.InferenceOptions.parse`, the
    detector's own check) and, for an exported-graph path, a ``model_file`` that is pit-det's export, of a format the
    path runs, of a detector with this config's number of classes (its weights are checked against the checkpoint's
    when the detector opens it)."""
    if not model_cfg or model_cfg.get('type') not in PIT_DET_DETECTORS:
        return []
    from ..checkpoint import CheckpointMismatchError, CheckpointReadError
    from ..models.detectors import check_cpu_deform_attn
    from ..models.inference import InferenceOptions

    problems = []
    try:
        check_cpu_deform_attn(model_cfg.get('cpu_deform_attn', 'fused'))
    except ValueError as exc:
        problems.append(str(exc))
    try:
        options = InferenceOptions.parse(model_cfg.get('inference'))
        options.build().check_file((model_cfg.get('bbox_head') or {}).get('num_classes'), 'this config')
    except ImportError as exc:
        problems.append(f'model.inference.path={model_cfg["inference"]["path"]}: {exc}')
    except (FileNotFoundError, CheckpointReadError, CheckpointMismatchError) as exc:
        problems.append(f'model.inference.model_file: {exc}')
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def check_model(model_cfg) -> None:
    """Raise unless a detector's config passes :func:`check_structure` and :func:`option_problems`.

    Raises:
        PreflightError: listing every problem, each naming the option and what to set.
    """
    problems = check_structure(model_cfg) + option_problems(model_cfg)
    if problems:
        from . import PreflightError

        raise PreflightError('\n'.join(['cannot start:'] + [f'  - {p}' for p in problems]))
