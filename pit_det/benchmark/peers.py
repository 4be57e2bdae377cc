"""Peers: the detectors a user would pick instead, from Hugging Face transformers, timed beside pit-det's rows.

A peer spec is ``hf:<name>`` or, for Deformable DETR, ``hf:deformable-detr@<backbone>``:

    ``hf:deformable-detr``          transformers' Deformable DETR, its default ResNet-50 (timm) backbone
    ``hf:deformable-detr@pit_s``    the same detector on timm's PiT-S, built at the benchmarked size, with the
                                    queries, feature levels, layers and classes of pit-det's front-door config:
                                    the architecture of ``pit_s_deformable_detr``, in transformers' implementation
    ``hf:rt-detr-v2``, ``hf:d-fine``, ``hf:deimv2``, ``hf:rf-detr``    each one's default config (:data:`PEERS`)

Every peer is built from its config class with random weights: no ``from_pretrained``, no backbone by name from
the Hub (a ``backbone=`` string with ``backbone_kwargs`` makes transformers ask the Hub), so nothing connects.
``tests/test_peers.py`` proves it with an audit hook on every socket call. A peer runs fp32 eager, in ``forward``
(the network) or ``predict`` mode (the network and its image processor's ``post_process_object_detection``). An
image whose sides are not a multiple a peer needs (RT-DETR's family: 32; RF-DETR's windowed DINOv2: 56) is padded
with zeros at the bottom and right up to one, as their image processors pad; the row says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .report import BenchmarkError

PREFIX = 'hf:'
EXTRA = 'peers'


@dataclass(frozen=True)
class Peer:
    """A transformers detector: ``<prefix>Config`` and ``<prefix>ForObjectDetection``, the image processor whose
    post-processing ``predict`` runs, the multiple its input sides must be (padded up to it), its own size (what its
    default config is trained at), and the strides of the maps its encoder picks its 300 queries from (none: its
    queries are learned)."""

    prefix: str
    processor: str
    multiple: int
    own_size: tuple[int, int]
    what: str
    query_strides: tuple[int, ...] = ()


PEERS = {
    'deformable-detr': Peer(
        'DeformableDetr', 'DeformableDetrImageProcessor', 1, (800, 1333), 'Deformable DETR, ResNet-50 (timm)'
    ),
    'rt-detr-v2': Peer(
        'RTDetrV2', 'RTDetrImageProcessor', 32, (640, 640), 'RT-DETRv2, ResNet-50 (default config)', (8, 16, 32)
    ),
    'd-fine': Peer('DFine', 'RTDetrImageProcessor', 32, (640, 640), 'D-FINE, HGNetV2 (default config)', (8, 16, 32)),
    'deimv2': Peer('Deimv2', 'RTDetrImageProcessor', 32, (640, 640), 'DEIMv2, HGNetV2 (default config)', (8, 16, 32)),
    'rf-detr': Peer(
        'RfDetr', 'RfDetrImageProcessor', 56, (560, 560), 'RF-DETR, windowed DINOv2-S (default config)', (14,)
    ),
}
# backbones a Deformable DETR peer takes after '@': timm's model and the pit-det config whose detector it matches
BACKBONES = {'pit_s': ('pit_s_224', 'pit_s_deformable_detr')}


def is_peer_spec(spec: str) -> bool:
    return spec.startswith(PREFIX)


def parse_peer(spec: str) -> tuple[str, str | None]:
    """``('deformable-detr', 'pit_s')`` for ``hf:deformable-detr@pit_s``; a clear error for anything else."""
    name, _, backbone = spec[len(PREFIX) :].partition('@')
    if name not in PEERS:
        raise BenchmarkError(f'{spec}: unknown peer {name!r}; use one of {", ".join(PREFIX + p for p in PEERS)}')
    if backbone and (name != 'deformable-detr' or backbone not in BACKBONES):
        raise BenchmarkError(
            f'{spec}: a backbone after @ is for hf:deformable-detr, one of {", ".join(BACKBONES)}'
            + ('' if name == 'deformable-detr' else f' (hf:{name} runs its own)')
        )
    return name, backbone or None


def require_transformers(spec: str):
    """transformers, or a :class:`BenchmarkError` naming the extra that installs it."""
    try:
        import transformers
    except ImportError:
        raise BenchmarkError(
            f'{spec}: peers are built by Hugging Face transformers, which is not installed; '
            f"pip install 'pit-det[{EXTRA}]' (or pip install 'transformers>=5.23,<6')"
        ) from None
    return transformers


QUERIES = 300  # every peer's default


def check_peer_spec(spec: str, mode: str, size: tuple[int, int], by_part: bool = False) -> None:
    """Everything about a peer spec at ``size`` that can be refused before building anything."""
    peer = PEERS[parse_peer(spec)[0]]
    if mode not in ('forward', 'predict') or by_part:
        raise BenchmarkError(
            f'{spec}: a peer is timed whole, in --mode forward or predict'
            + (' (--by-part names the parts of an mmdet detector)' if by_part else f', not {mode}')
        )
    h, w = padded_size(spec, size)
    positions = sum(-(-h // s) * -(-w // s) for s in peer.query_strides)
    if peer.query_strides and positions < QUERIES:
        raise BenchmarkError(
            f'{spec} at {size[0]}x{size[1]}: its encoder picks {QUERIES} queries among the positions of its '
            f'feature maps, and this size has {positions}; give a larger --size '
            f'(its own is {peer.own_size[0]}x{peer.own_size[1]})'
        )
    require_transformers(spec)


def padded_size(spec: str, size: tuple[int, int]) -> tuple[int, int]:
    """The size a peer runs ``size`` at: each side rounded up to the peer's multiple."""
    multiple = PEERS[parse_peer(spec)[0]].multiple
    return tuple(-(-side // multiple) * multiple for side in size)


def _deformable_detr_config(transformers, backbone: str | None):
    if backbone is None:
        return transformers.DeformableDetrConfig(num_labels=80)
    from mmengine.config import Config

    from ..configs import find_config

    timm_name, config = BACKBONES[backbone]
    model = Config.fromfile(find_config(config)).model
    layer = model.encoder.layer_cfg
    return transformers.DeformableDetrConfig(
        backbone_config=transformers.TimmBackboneConfig(backbone=timm_name, out_indices=[0, 1, 2]),
        num_queries=model.num_queries,
        num_feature_levels=model.num_feature_levels,
        encoder_layers=model.encoder.num_layers,
        decoder_layers=model.decoder.num_layers,
        d_model=layer.self_attn_cfg.embed_dims,
        encoder_ffn_dim=layer.ffn_cfg.feedforward_channels,
        decoder_ffn_dim=model.decoder.layer_cfg.ffn_cfg.feedforward_channels,
        with_box_refine=model.with_box_refine,
        two_stage=model.as_two_stage,
        num_labels=model.bbox_head.num_classes,
    )


def build_peer(spec: str, size: tuple[int, int], mode: str) -> tuple[nn.Module, Callable, Callable]:
    """``(model, call, counted)`` for a peer at ``size`` (padded to :func:`padded_size`): ``call(x)`` runs the
    mode, ``counted(x)`` the network alone (what its MACs are counted on)."""
    transformers = require_transformers(spec)
    name, backbone = parse_peer(spec)
    peer = PEERS[name]
    if name == 'deformable-detr':
        config = _deformable_detr_config(transformers, backbone)
    else:
        config = getattr(transformers, f'{peer.prefix}Config')(num_labels=80)
    model = getattr(transformers, f'{peer.prefix}ForObjectDetection')(config).eval()
    h, w = padded_size(spec, size)
    if backbone is not None:
        import timm

        # timm's PiT adds its position embedding unresized: built at the size it runs at, as pit-det's is resized
        model.model.backbone.model = timm.create_model(
            BACKBONES[backbone][0], features_only=True, out_indices=(0, 1, 2), img_size=(h, w)
        ).eval()

    def network(x: torch.Tensor):
        if x.shape[-2:] != (h, w):
            x = nn.functional.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2]))
        return model(pixel_values=x)

    if mode == 'forward':
        return model, network, network
    processor = getattr(transformers, peer.processor)()

    def predict(x: torch.Tensor):
        return processor.post_process_object_detection(
            network(x), threshold=0.0, target_sizes=[tuple(x.shape[-2:])] * len(x)
        )

    return model, predict, network


def describe(spec: str, size: tuple[int, int]) -> str:
    """What a peer row is: the model, and the size it ran at where padding changed it."""
    name, backbone = parse_peer(spec)
    what = PEERS[name].what if backbone is None else f'Deformable DETR, timm {BACKBONES[backbone][0]}'
    run = padded_size(spec, size)
    return what + ('' if run == tuple(size) else f'; padded to {run[0]}x{run[1]}')


# COCO val2017 box AP as each model's authors published it, at the size they tested: none of it measured by pit-det.
# A peer's default config is matched to the published size whose parameter count it has; DEIMv2's default config
# (HGNetV2, 29.9 M parameters) matches no published DEIMv2 model, so it has none.
PUBLISHED_AP = {
    'pit_s_deformable_detr': (39.4, (400, 666), 'PiT paper (arXiv 2103.16302), Table 8: PiT-S, half resolution'),
    'hf:deformable-detr@pit_s': (39.4, (400, 666), 'PiT paper, Table 8 (the same architecture)'),
    'hf:deformable-detr': (43.8, (800, 1333), 'Deformable DETR paper (arXiv 2010.04159), Table 1: R50'),
    'hf:rt-detr-v2': (53.4, (640, 640), 'RT-DETRv2 paper (arXiv 2407.17140): RT-DETRv2-R50, 42 M params'),
    'hf:d-fine': (54.0, (640, 640), 'D-FINE paper (arXiv 2410.13842): D-FINE-L, 31 M params'),
    'hf:rf-detr': (53.3, (560, 560), 'roboflow/rf-detr README, first release: RF-DETR-Base, 29 M params'),
}


def published_ap(model: str) -> tuple[float, tuple[int, int], str] | None:
    """``(AP, size it was tested at, source)`` for a row's model (a config by path or name), or None."""
    key = model if is_peer_spec(model) else Path(model.partition('@')[0]).stem
    return PUBLISHED_AP.get(key)


def plot_latency_vs_ap(results, path):
    """Median latency of each row with a published AP against that AP; each point names its model, the size it ran
    at and the size its AP was published at. A model measured at its AP's size shows that row alone."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from ..outputs import save_figure

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for r in results:
        known = published_ap(r.model)
        if known is None:
            continue
        ap, (h, w), source = known
        if r.size != f'{h}x{w}' and any(o.model == r.model and o.size == f'{h}x{w}' for o in results):
            continue
        name = Path(r.model).name
        label = f'{name} at {r.size}' + ('' if r.size == f'{h}x{w}' else f' (AP at {h}x{w})')
        ax.scatter(r.median_ms, ap, s=30, label=f'{label}: {ap} AP, {source}')
        ax.annotate(label, (r.median_ms, ap), fontsize=7, xytext=(4, 3), textcoords='offset points')
    ax.set_xlabel(f'median latency, ms ({results[0].mode}, batch {results[0].batch}, measured)')
    ax.set_ylabel('COCO box AP as published (not measured by pit-det)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc='upper center', bbox_to_anchor=(0.5, -0.12), ncol=1, frameon=False)
    return save_figure(fig, path, dpi=120)
