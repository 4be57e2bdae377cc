"""Models the benchmarks time: backbones by name, detectors from configs, and the call each mode times.

Model specs:
    ``pit-<arch>``          this package's PiT backbone (``ti``, ``xs``, ``s``, ``b``, ``*-distilled``)
    ``timm:<name>``         a timm model's three stage maps via ``forward_intermediates`` (e.g. timm:pit_s_224)
    ``vit-s``               ViT-S (DeiT-S) with this package's three-level pyramid (``ViTPyramid``)
    ``resnet50``            mmdet's ResNet-50 as in Deformable DETR (``out_indices=(1, 2, 3)``)
    ``path/to/config.py``   a detector config (or its name: ``pit_s_deformable_detr``); the mode picks backbone,
                            forward (no post-processing) or predict
    ``hf:<peer>``           a Hugging Face transformers detector a user would pick instead, random weights, offline
                            (forward or predict; ``hf:deformable-detr@pit_s`` is this package's front door's
                            architecture on timm's PiT-S): hf:deformable-detr[@pit_s], hf:rt-detr-v2, hf:d-fine,
                            hf:deimv2, hf:rf-detr (:mod:`pit_det.benchmark.peers`; ``pip install 'pit-det[peers]'``)

Any spec may end in ``@INFERENCE``, the way it runs, named as ``FastDeformableDETR``'s inference paths: ``@eager``
(the default), ``@bf16`` (eager under CPU/CUDA bf16 autocast; a ``FastDeformableDETR`` in predict mode runs its own
``inference=dict(path='bf16')``), ``@fp16`` (CUDA fp16 autocast), ``@compile`` (``torch.compile``, inductor: a
backbone whole, a detector's backbone, neck, encoder and decoder as its ``inference=dict(path='compile')`` does),
or an exported graph (:mod:`pit_det.deploy.onnx`; detectors in predict mode, on the
CPU, compiled for the timed size as a deployment at one size is): ``@onnxruntime``, ``@openvino`` (OpenVINO's
precision for the CPU: bf16 where it has bf16 instructions) or ``@openvino-int8`` (NNCF's INT8 calibrated on
:data:`INT8_CALIBRATION` generated scenes at the timed size: a speed measurement; accuracy is ``mim test``'s). Every
inference path of one spec is built from the same seed, so they share their weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from ..configs import ConfigNotFoundError, config_names, find_config
from ..deploy.metadata import RUNTIMES
from ..models.detectors import PitDetDetector
from ..models.inference import compile_detector
from ..models.utils import image_sample
from . import peers
from .report import BenchmarkError
from .work import Work, count_work

MODES = ('backbone', 'forward', 'predict', 'train')
INFERENCE = ('eager', 'bf16', 'fp16', 'compile', *RUNTIMES)
AUTOCAST = {'bf16': torch.bfloat16, 'fp16': torch.float16}
INT8_CALIBRATION = 8


def split_inference(spec: str) -> tuple[str, str]:
    """``('configs/x.py', 'bf16')`` for ``'configs/x.py@bf16'``; the inference path defaults to ``eager``. A peer
    runs eager (its ``@`` names a backbone)."""
    if peers.is_peer_spec(spec):
        return spec, 'eager'
    base, _, inference = spec.partition('@')
    inference = inference or 'eager'
    if inference not in INFERENCE:
        raise BenchmarkError(
            f'{spec}: unknown inference path @{inference}; use one of {", ".join("@" + p for p in INFERENCE)}'
        )
    return base, inference


@dataclass
class Built:
    """A model ready to time: ``call(x)`` runs it; ``work`` is what one call computes, counted on the eager model
    (every path of a spec runs the same arithmetic; None where not counted: ``--no-macs`` and ``train`` mode);
    ``note``: what a peer row is, and why its MACs are not counted where they are not."""

    model: nn.Module
    call: Callable
    work: Work | None = None
    note: str | None = None


def is_detector_spec(spec: str) -> bool:
    """A config path, or the name of a config of pit-det (``pit_s_deformable_detr``)."""
    base = spec.partition('@')[0]
    return base.endswith('.py') or base in config_names()


def build_backbone(spec: str, size: tuple[int, int]) -> tuple[nn.Module, Callable]:
    """``(model, call)`` for a backbone spec; ``call(x)`` returns its feature maps."""
    from ..models.backbones import BACKBONE_NAMES, build_named_backbone, is_backbone_name

    if spec.startswith('pit-') or is_backbone_name(spec):
        try:
            model = build_named_backbone(spec)
        except ValueError as exc:
            raise BenchmarkError(str(exc)) from exc
        return model, model
    if spec.startswith('timm:'):
        import timm

        name = spec[5:]
        try:
            kwargs = dict(img_size=size) if name.startswith('pit_') else {}
            model = timm.create_model(name, pretrained=False, **kwargs)
        except RuntimeError as exc:
            raise BenchmarkError(f'unknown timm model {name!r}: {exc}') from exc
        return model, lambda x: model.forward_intermediates(x, intermediates_only=True)
    if spec == 'resnet50':
        from mmdet.models.backbones import ResNet

        model = ResNet(depth=50, out_indices=(1, 2, 3), frozen_stages=1, norm_eval=True)
        return model, model
    raise BenchmarkError(
        f'unknown model {spec!r}: use {BACKBONE_NAMES}, timm:<name>, resnet50 or a detector config .py'
    )


def build_benchmark_detector(
    config: str | Path, cpu_deform_attn: str = 'fused', checkpoint: str | None = None, cfg_options: dict | None = None
) -> tuple[nn.Module, object]:
    """``(model, cfg)``: the detector of ``config`` (:func:`pit_det.models.detectors.build_detector`, with
    ``cfg_options`` merged), random weights unless ``checkpoint``, with the chosen CPU deformable attention."""
    from ..models.detectors import build_detector
    from ..ops import set_cpu_deform_attn

    try:
        config = find_config(config)
    except ConfigNotFoundError as exc:
        raise BenchmarkError(f'config not found: {exc}') from None
    try:
        model = build_detector(config, checkpoint, cfg_options=cfg_options)
    except TypeError as exc:  # an argument the config (or --cfg-options) gives that a module does not take
        raise BenchmarkError(
            f'{config}: the detector cannot be built'
            + (f' with --cfg-options {cfg_options}' if cfg_options else '')
            + f': {exc}'
        ) from None
    set_cpu_deform_attn(model, cpu_deform_attn)  # any Deformable DETR config
    return model, model.cfg


def detector_call(model: nn.Module, mode: str, size: tuple[int, int], batch: int) -> Callable:
    """``call(x)`` running ``model`` in ``mode`` (see :data:`MODES`) on a batch of ``size`` images."""
    from mmengine.structures import InstanceData

    if mode == 'backbone':
        return model.backbone
    samples = []
    for _ in range(batch):
        sample = image_sample(*size)
        sample.gt_instances = InstanceData()
        samples.append(sample)
    if mode == 'forward':
        return lambda x: model._forward(x, samples)
    if mode == 'train':
        return training_step(model, samples, size)
    return lambda x: model.predict(x, samples, rescale=True)


def training_step(model: nn.Module, samples: list, size: tuple[int, int]) -> Callable:
    """``step(x)``: one training iteration's loss and backward (gradients set to None first, no optimiser step) on
    ``samples`` given two ground-truth boxes each, as mmdet's ``loss`` computes it in training mode (DINO's
    denoising queries included)."""
    from mmengine.structures import InstanceData

    h, w = size
    boxes = torch.tensor([[0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h], [0.4 * w, 0.3 * h, 0.9 * w, 0.8 * h]])
    for sample in samples:
        sample.gt_instances = InstanceData(bboxes=boxes.clone(), labels=torch.tensor([0, 1]))

    def step(x: torch.Tensor) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        on_device = [s.to(x.device) for s in samples]
        losses = model.loss(x, on_device)
        total = sum(v for k, v in losses.items() if 'loss' in k)
        total.backward()
        return total.detach()

    return step


def build_call(
    spec: str,
    mode: str,
    size: tuple[int, int],
    batch: int,
    device: str,
    cpu_deform_attn: str = 'fused',
    checkpoint: str | None = None,
    cfg_options: dict | None = None,
    count_macs: bool = False,
) -> Built:
    """The :class:`Built` model of a spec (``@INFERENCE`` included), its work counted first if ``count_macs``."""
    base, inference = split_inference(spec)
    torch.manual_seed(0)  # every inference path of a spec gets the same weights
    if peers.is_peer_spec(spec):
        return _build_peer(spec, mode, size, device, count_macs)
    model, call, counted = _build_eager(base, mode, size, batch, device, cpu_deform_attn, checkpoint, cfg_options)
    work = _count(spec, counted, model, size, device) if count_macs and counted is not None else None
    if inference in AUTOCAST:
        if inference == 'bf16' and mode == 'predict' and isinstance(model, PitDetDetector):
            model.set_inference(dict(path='bf16'))  # the detector's own bf16 path, as `mim test` runs it
            return Built(model, call, work)

        def call_autocast(x, inner=call, dtype=AUTOCAST[inference]):
            with torch.autocast(device, dtype=dtype):
                return inner(x)

        return Built(model, call_autocast, work)
    if inference == 'compile':
        if is_detector_spec(base):
            compile_detector(model)  # in place, as inference=dict(path='compile') does
            return Built(model, detector_call(model, mode, size, batch), work)
        return Built(model, torch.compile(call), work)
    if inference in RUNTIMES:
        return Built(model, _runtime_call(model, inference, size, batch), work)
    return Built(model, call, work)


def _count(spec: str, call: Callable, model: nn.Module, size: tuple[int, int], device: str) -> Work:
    try:
        return count_work(call, model, torch.rand(1, 3, *size, device=device))
    except Exception as exc:  # a model the tracer cannot follow: say so rather than print a guess
        raise BenchmarkError(
            f'{spec}: its MACs cannot be counted ({type(exc).__name__}: {exc}); run with --no-macs'
        ) from None


def _build_peer(spec: str, mode: str, size: tuple[int, int], device: str, count_macs: bool) -> Built:
    model, call, network = peers.build_peer(spec, size, mode)
    model.to(device)
    note, work = peers.describe(spec, size), None
    if count_macs:
        try:
            work = count_work(network, model, torch.rand(1, 3, *size, device=device))
        except Exception as exc:  # transformers' code the tracer cannot follow: the row says so, with no guess
            note += f'; GMACs not counted: the tracer stops at {type(exc).__name__}: {str(exc).splitlines()[0]}'
    return Built(model, call, work, note)


def check_runtime_spec(spec: str, mode: str, device: str) -> None:
    """An exported-graph path is a whole detector in predict mode, on the CPU, with its runtime installed."""
    base, inference = split_inference(spec)
    if inference not in RUNTIMES:
        return
    if not is_detector_spec(base) or mode != 'predict' or device != 'cpu':
        raise BenchmarkError(f'{spec}: the exported graph is a whole detector in predict mode, on the CPU')
    from ..deploy.onnx import ExportError
    from ..deploy.openvino import require_tools

    try:
        require_tools(inference)
    except ExportError as exc:
        raise BenchmarkError(f'{spec}: {exc}') from None


def _runtime_call(model: nn.Module, inference: str, size: tuple[int, int], batch: int) -> Callable:
    import tempfile

    import numpy as np

    from ..deploy.onnx import export, metadata
    from ..deploy.runtimes import Runtime

    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        path = export(model, *size, f'{tmp}/model.onnx')
        if inference == 'openvino-int8':
            from ..data import make_synthetic_coco
            from ..deploy.openvino import save_ir, to_openvino

            scenes = make_synthetic_coco(f'{tmp}/scenes', num_train=0, num_val=INT8_CALIBRATION, size=max(size))
            images = [
                np.ascontiguousarray(
                    np.asarray(Image.open(p).convert('RGB').resize(size[::-1]), np.float32).transpose(2, 0, 1)[None]
                )
                for p in sorted((scenes / 'val').glob('*.png'))
            ]
            path = save_ir(to_openvino(path, metadata(model, *size), inference, images), f'{tmp}/model.xml')
        runtime = Runtime(
            inference, path, threads=threads, shape=None if inference == 'onnxruntime' else (batch, 3, *size)
        )
    return lambda x: runtime((x * 255).numpy())


def _build_eager(
    spec: str,
    mode: str,
    size: tuple[int, int],
    batch: int,
    device: str,
    cpu_deform_attn: str,
    checkpoint: str | None,
    cfg_options: dict | None = None,
) -> tuple[nn.Module, Callable, Callable | None]:
    """``(model, call, counted)``: ``counted(x)`` is the call whose MACs are the row's (a detector's ``predict`` is
    counted without its post-processing, a few element-wise operations on 300 boxes; None in train mode)."""
    if is_detector_spec(spec):
        model, _ = build_benchmark_detector(spec, cpu_deform_attn, checkpoint, cfg_options)
        model.to(device)  # some mmdet modules' train() returns None: no chaining
        model.train() if mode == 'train' else model.eval()
        call = detector_call(model, mode, size, batch)
        counted = {'train': None, 'predict': detector_call(model, 'forward', size, 1)}.get(mode, call)
        return model, call, counted
    model, call = build_backbone(spec, size)
    model.to(device).eval()
    return model, call, call
