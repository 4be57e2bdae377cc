"""Where Deformable DETR looks: the sampling points and attention weights of its deformable attention.

Deformable DETR's attention samples, for every query, head and feature level, a few points around a reference point
and sums them with softmax weights (Zhu et al. 2021, Figure 6 draws them; its code was not released). This module
records them from the detector's own forward: hooks on every ``MultiScaleDeformableAttention`` capture what its
``forward`` computes them from (the outputs of its ``sampling_offsets`` and ``attention_weights`` layers, its
``reference_points`` and ``spatial_shapes``), and :func:`locations_and_weights` applies mmcv's two lines that turn
them into sampling locations and weights. Locations are normalised as the model normalises them, to the padded
input (the boxes share this frame), and reported in the original image's pixels.

For the top-k detections the last decoder layer's cross-attention of each detection's query is drawn on the image
(one panel per detection: every head's and level's points, sized by weight, one colour per level; the reference
point; the box); for chosen pixels, the encoder's last layer's self-attention of the query at that pixel (level 0).
``sampling.json`` holds every point, and a summary per decoder layer: the attention-weighted distance between the
reference point and the sampling points (pixels, and as a fraction of the box's size) and each level's share of the
weight.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..ops.ms_deform_attn import sampling_locations
from ..outputs import save_figure, write_text

LEVEL_COLOURS = ('#e41a1c', '#ff7f00', '#4daf4a', '#377eb8', '#984ea3', '#a65628')  # one per feature level
REPORT_FILES = ('sampling.json',)  # and one sampling_<image>.png per image


class SamplingError(ValueError):
    """A request the sampling analysis cannot honour; the message says what to do."""


def check_pixel(x: float, y: float, height: int, width: int, image: str = 'the image') -> None:
    """Raise unless ``(x, y)`` is a pixel of a ``height x width`` image: finite, ``0 <= x < width`` and
    ``0 <= y < height`` (a pixel outside would be clamped to the border, or wrap round the flattened map, and
    another pixel's sampling drawn under its name).

    Raises:
        SamplingError: naming the pixel and the image's size.
    """
    if not (math.isfinite(x) and math.isfinite(y) and 0 <= x < width and 0 <= y < height):
        raise SamplingError(
            f'--points {x:g},{y:g}: not a pixel of {image} ({width}x{height} px, width x height): '
            f'give x in [0, {width}) and y in [0, {height})'
        )


def attention_modules(model: nn.Module, part: str) -> list[nn.Module]:
    """The deformable attentions of ``part`` (``'encoder'``: each layer's self-attention, ``'decoder'``: each
    layer's cross-attention), in layer order."""
    from mmcv.ops import MultiScaleDeformableAttention

    layers = getattr(model, part).layers
    attr = 'self_attn' if part == 'encoder' else 'cross_attn'
    modules = [getattr(layer, attr) for layer in layers]
    if not all(isinstance(m, MultiScaleDeformableAttention) for m in modules):
        raise SamplingError(f'the {part} of {type(model).__name__} has no deformable attention')
    return modules


@dataclass
class Record:
    """What one attention module's forward computed its sampling from, for one call."""

    offsets: torch.Tensor | None = None  # output of sampling_offsets (bs, queries, heads*levels*points*2)
    logits: torch.Tensor | None = None  # output of attention_weights (bs, queries, heads*levels*points)
    reference_points: torch.Tensor | None = None  # (bs, queries, levels, 2 or 4), normalised to the padded input
    spatial_shapes: torch.Tensor | None = None  # (levels, 2): h, w


class Recorder:
    """Hooks on deformable attention modules; :attr:`records` holds one :class:`Record` per module (last call)."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.modules = modules
        self.records = [Record() for _ in modules]
        self._handles = []
        for module, record in zip(modules, self.records, strict=True):
            self._handles += [
                module.register_forward_pre_hook(self._inputs(record), with_kwargs=True),
                module.sampling_offsets.register_forward_hook(self._output(record, 'offsets')),
                module.attention_weights.register_forward_hook(self._output(record, 'logits')),
            ]

    @staticmethod
    def _inputs(record: Record):
        def hook(module, args, kwargs):
            record.reference_points = kwargs['reference_points'].detach()
            record.spatial_shapes = kwargs['spatial_shapes'].detach()

        return hook

    @staticmethod
    def _output(record: Record, name: str):
        def hook(module, args, output):
            setattr(record, name, output.detach())

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def locations_and_weights(module: nn.Module, record: Record) -> tuple[torch.Tensor, torch.Tensor]:
    """``(locations, weights)`` as ``module.forward`` computes them (mmcv 2.1.0's formula, the fused attention's
    :func:`~pit_det.ops.ms_deform_attn.sampling_locations`): locations ``(bs, queries, heads,
    levels, points, 2)``, x and y normalised to the padded input; weights ``(bs, queries, heads, levels, points)``,
    summing to 1 over levels and points."""
    heads, levels, points = module.num_heads, module.num_levels, module.num_points
    bs, queries = record.offsets.shape[:2]
    offsets = record.offsets.view(bs, queries, heads, levels, points, 2).float()
    weights = record.logits.view(bs, queries, heads, levels * points).float().softmax(-1)
    weights = weights.view(bs, queries, heads, levels, points)
    locations = sampling_locations(record.reference_points.float(), offsets, record.spatial_shapes, points)
    return locations, weights


@dataclass
class QuerySampling:
    """One query's sampling in original-image pixels."""

    reference: list[float]  # x, y
    points: np.ndarray  # (heads, levels, points, 2)
    weights: np.ndarray  # (heads, levels, points)
    box: list[float] | None = None  # x1, y1, x2, y2
    score: float | None = None
    label: int | None = None
    layers: list[dict] = field(default_factory=list)  # per decoder layer: distance and level shares

    def to_json(self) -> dict:
        out = dict(box=self.box, score=self.score, label=self.label, reference=self.reference)
        out = {k: v for k, v in out.items() if v is not None}
        out['sampling'] = [
            [
                [
                    dict(xy=[round(float(x), 2), round(float(y), 2)], weight=round(float(w), 6))
                    for (x, y), w in zip(self.points[h, lv], self.weights[h, lv], strict=True)
                ]
                for lv in range(self.points.shape[1])
            ]
            for h in range(self.points.shape[0])
        ]
        if self.layers:
            out['layers'] = self.layers
        return out


def summarize(reference: np.ndarray, points: np.ndarray, weights: np.ndarray, box_size: float | None) -> dict:
    """The attention-weighted distance from the reference point to the sampling points (mean over heads, each
    head's weights summing to 1), in pixels and as a fraction of ``box_size``, and each level's share of the weight."""
    heads = weights.shape[0]
    distance = float((np.linalg.norm(points - reference, axis=-1) * weights).sum() / heads)
    shares = (weights.sum(axis=(0, 2)) / heads).tolist()
    out = dict(distance_px=round(distance, 3), level_share=[round(s, 4) for s in shares])
    if box_size:
        out['distance_box'] = round(distance / box_size, 4)
    return out


class SamplingAnalysis:
    """Runs a Deformable DETR on images and collects its sampling (see the module docstring).

    Args:
        model: a ``DeformableDETR`` (``FastDeformableDETR``, ``DINO``, ``FastDINO``) in eval mode, with ``cfg`` (mmdet's
            ``init_detector`` sets it) for its test pipeline.
    """

    def __init__(self, model: nn.Module) -> None:
        from mmdet.models.detectors import DeformableDETR

        if not isinstance(model, DeformableDETR):
            raise SamplingError(
                f'{type(model).__name__} is not a Deformable DETR: the sampling analysis reads the '
                'deformable attention of DeformableDETR and its variants (plain, refine, two-stage, '
                'DINO)'
            )
        self.model = model
        self.decoder = attention_modules(model, 'decoder')
        self.encoder = attention_modules(model, 'encoder')

    def run(
        self, image: np.ndarray, topk: int = 5, score_thr: float = 0.3, pixels: list[tuple[float, float]] = ()
    ) -> dict:
        """``image`` (H, W, 3 BGR): the detections above ``score_thr`` (at most ``topk``) with their queries'
        sampling in every decoder layer, and the encoder's last-layer sampling at ``pixels`` (x, y)."""
        from mmdet.apis import inference_detector

        head_outputs = []
        handle = self.model.bbox_head.register_forward_hook(lambda m, a, out: head_outputs.append(out))
        with Recorder(self.decoder) as decoder, Recorder(self.encoder[-1:]) as encoder, torch.no_grad():
            result = inference_detector(self.model, image)
        handle.remove()
        meta = result.metainfo
        scale = np.array(meta['scale_factor'], dtype=np.float64)  # input pixels per image pixel, (x, y)
        pad_h, pad_w = meta['batch_input_shape']
        to_image = np.array([pad_w, pad_h]) / scale  # normalised -> original image pixels

        instances = result.pred_instances
        cls_scores = head_outputs[-1][0][-1][0]  # the last decoder layer's scores of this image (queries, classes)
        num_classes = cls_scores.shape[-1]
        _, index = cls_scores.sigmoid().flatten().topk(len(instances))  # mmdet's _predict_by_feat_single
        keep = [i for i in range(len(instances)) if float(instances.scores[i]) >= score_thr][:topk]
        per_layer = [locations_and_weights(m, r) for m, r in zip(self.decoder, decoder.records, strict=True)]
        detections = []
        for i in keep:
            query = int(index[i]) // num_classes
            box = instances.bboxes[i].tolist()
            size = math.sqrt(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))
            samplings = []
            for (locations, weights), record in zip(per_layer, decoder.records, strict=True):
                reference = record.reference_points[0, query, 0, :2].float().numpy() * to_image
                points = locations[0, query].numpy() * to_image
                samplings.append((reference, points, weights[0, query].numpy()))
            reference, points, weights = samplings[-1]
            detections.append(
                QuerySampling(
                    reference=[round(float(v), 2) for v in reference],
                    points=points,
                    weights=weights,
                    box=box,
                    score=float(instances.scores[i]),
                    label=int(instances.labels[i]),
                    layers=[summarize(r, p, w, size) for r, p, w in samplings],
                )
            )

        encoder_points = []
        if pixels:
            locations, weights = locations_and_weights(self.encoder[-1], encoder.records[0])
            h0, w0 = (int(v) for v in encoder.records[0].spatial_shapes[0])
            for x, y in pixels:
                check_pixel(x, y, *image.shape[:2])
                col = min(int(x * scale[0] / pad_w * w0), w0 - 1)
                row = min(int(y * scale[1] / pad_h * h0), h0 - 1)
                query = row * w0 + col
                reference = encoder.records[0].reference_points[0, query, 0, :2].float().numpy() * to_image
                sampling = QuerySampling(
                    reference=[round(float(v), 2) for v in reference],
                    points=locations[0, query].numpy() * to_image,
                    weights=weights[0, query].numpy(),
                )
                sampling.layers = [summarize(reference, sampling.points, sampling.weights, None)]
                encoder_points.append((float(x), float(y), sampling))
        return dict(result=result, detections=detections, encoder=encoder_points)


def layer_summary(detections: list[QuerySampling]) -> list[dict]:
    """Per decoder layer, the mean over detections of :func:`summarize`'s numbers."""
    if not detections:
        return []
    out = []
    for layer in range(len(detections[0].layers)):
        rows = [d.layers[layer] for d in detections]
        out.append(
            dict(
                layer=layer,
                distance_px=round(float(np.mean([r['distance_px'] for r in rows])), 3),
                distance_box=round(
                    float(np.mean([r['distance_box'] for r in rows if 'distance_box' in r] or [float('nan')])), 4
                ),
                level_share=[round(float(v), 4) for v in np.mean([r['level_share'] for r in rows], axis=0)],
            )
        )
    return out


def draw(image_rgb: np.ndarray, analysis: dict, classes, path: str | Path, score_thr: float) -> Path:
    """One panel per detection (decoder) and per chosen pixel (encoder); an empty panel when there is neither."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels = [('decoder', d) for d in analysis['detections']] + [('encoder', e) for e in analysis['encoder']]
    count = max(1, len(panels))
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(5 * cols, 5 * rows * image_rgb.shape[0] / image_rgb.shape[1] + 0.6), squeeze=False
    )
    for ax in axes.flat:
        ax.imshow(image_rgb)
        ax.axis('off')
    if not panels:
        axes[0, 0].set_title(f'no detection with score >= {score_thr}', fontsize=10)
    for ax, (kind, item) in zip(axes.flat, panels, strict=False):
        sampling = item if kind == 'decoder' else item[2]
        levels = sampling.points.shape[1]
        for level in range(levels):
            pts = sampling.points[:, level].reshape(-1, 2)
            w = sampling.weights[:, level].reshape(-1)
            ax.scatter(
                pts[:, 0],
                pts[:, 1],
                s=20 + 400 * w,
                c=LEVEL_COLOURS[level % len(LEVEL_COLOURS)],
                alpha=0.75,
                edgecolors='none',
                label=f'level {level}',
            )
        ax.plot(*sampling.reference, marker='x', color='white', markersize=10, mew=2.5)
        if kind == 'decoder':
            x1, y1, x2, y2 = sampling.box
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color='yellow', lw=1.5))
            name = classes[sampling.label] if classes and sampling.label < len(classes) else str(sampling.label)
            ax.set_title(f'{name} {sampling.score:.2f}: last decoder layer', fontsize=9)
        else:
            ax.set_title(f'encoder, last layer, pixel ({item[0]:.0f}, {item[1]:.0f})', fontsize=9)
        ax.set_xlim(0, image_rgb.shape[1])
        ax.set_ylim(image_rgb.shape[0], 0)
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    if panels:
        axes[0, 0].legend(loc='lower left', fontsize=7, markerscale=0.6)
    return save_figure(fig, path, dpi=100)


def report(images: dict[str, dict], config: str, checkpoint: str | None) -> dict:
    """What ``sampling.json`` holds: per image its detections and pixels, and per decoder layer the summary over all
    images' detections."""
    everything = [d for a in images.values() for d in a['detections']]
    return dict(
        config=str(config),
        checkpoint=checkpoint,
        images={
            name: dict(
                detections=[d.to_json() for d in a['detections']],
                pixels=[dict(pixel=[x, y], **s.to_json()) for x, y, s in a['encoder']],
            )
            for name, a in images.items()
        },
        summary=layer_summary(everything),
    )


def write_json(data: dict, path: str | Path) -> Path:
    return write_text(path, json.dumps(data, indent=1))


def compare(reports: dict[str, dict], path: str | Path) -> Path:
    """Two or more ``sampling.json`` side by side: each level's share of the weight and the distance per decoder
    layer (the mean over each report's detections)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (shares, distances) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(reports)
    for i, (name, data) in enumerate(reports.items()):
        last = data['summary'][-1]
        levels = np.arange(len(last['level_share']))
        shares.bar(levels + i * width, last['level_share'], width, label=name)
        distances.plot(
            [s['layer'] + 1 for s in data['summary']],
            [s['distance_box'] for s in data['summary']],
            marker='o',
            label=name,
        )
    shares.set(
        xlabel='feature level (stride 8, 16, 32, 64)',
        ylabel='share of the attention weight',
        title='last decoder layer',
    )
    distances.set(xlabel='decoder layer', ylabel='weighted distance / box size', title='how far the queries look')
    for ax in (shares, distances):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)
