"""Models the benchmarks time: backbones by name, detectors from configs, and the call each mode times.

Model specs:
    ``pit-<arch>``          this package's PiT backbone (``ti``, ``xs``, ``s``, ``b``, ``*-distilled``)
    ``timm:<name>``         a timm model's three stage maps via ``forward_intermediates`` (e.g. timm:pit_s_224)
    ``vit-s``               ViT-S (DeiT-S) with this package's three-level pyramid (``ViTPyramid``)
    ``resnet50``            mmdet's ResNet-50 as in Deformable DETR (``out_indices=(1, 2, 3)``)
    ``path/to/config.py``   a detector config; the mode picks backbone, forward (no post-processing) or predict

Any spec may end in ``@PATH``, the way it runs: ``@fp32`` (eager, the default), ``@bf16`` (eager under CPU/CUDA
bf16 autocast; a ``FastDeformableDETR`` in predict mode runs its own ``inference=dict(path='bf16')``), ``@compile``
(``torch.compile`` of the backbone, inductor; the rest eager) or ``@onnxruntime`` (detectors in predict mode:
exported with :mod:`pit_det.export.onnx`, run by onnxruntime on the CPU). Every path of one spec is built from the
same seed, so they share their weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..models import FastDeformableDETR
from ..models.utils import explicit_attention, image_sample
from .report import BenchmarkError

MODES = ('backbone', 'forward', 'predict')
PATHS = ('fp32', 'bf16', 'compile', 'onnxruntime')


def split_path(spec: str) -> tuple[str, str]:
    """``('configs/x.py', 'bf16')`` for ``'configs/x.py@bf16'``; the path defaults to ``fp32``."""
    base, _, path = spec.partition('@')
    path = path or 'fp32'
    if path not in PATHS:
        raise BenchmarkError(f'{spec}: unknown path @{path}; use one of {", ".join("@" + p for p in PATHS)}')
    return base, path


def is_detector_spec(spec: str) -> bool:
    return spec.partition('@')[0].endswith('.py')


def build_backbone(spec: str, size: tuple[int, int]) -> tuple[nn.Module, Callable]:
    """``(model, call)`` for a backbone spec; ``call(x)`` returns its feature maps."""
    if spec.startswith('pit-'):
        from ..models import PiT
        try:
            model = PiT(arch=spec[4:])
        except ValueError as exc:
            raise BenchmarkError(str(exc)) from exc
        return model, model
    if spec == 'vit-s':
        from ..models import ViTPyramid
        model = ViTPyramid()
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
    raise BenchmarkError(f'unknown model {spec!r}: use pit-<ti|xs|s|b>[-distilled], vit-s, timm:<name>, resnet50 '
                         'or a detector config .py')


def build_detector(config: str | Path, cpu_deform_attn: str = 'fused') -> tuple[nn.Module, object]:
    """``(model, cfg)``: the detector of ``config`` with random weights (its backbone's ``init_cfg`` dropped)."""
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from ..ops import use_fused_cpu_deform_attn

    if not Path(config).is_file():
        raise BenchmarkError(f'config not found: {config}')
    register_all_modules()
    cfg = Config.fromfile(str(config))
    cfg.model.backbone.pop('init_cfg', None)
    model = MODELS.build(cfg.model)
    use_fused_cpu_deform_attn(model, enable=cpu_deform_attn == 'fused')  # any Deformable DETR config
    return model, cfg


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
    return lambda x: model.predict(x, samples, rescale=True)


def build_call(spec: str, mode: str, size: tuple[int, int], batch: int, device: str,
               cpu_deform_attn: str = 'fused', checkpoint: str | None = None):
    """``(model, call, macs_model, macs_call)`` for a spec (``@PATH`` included); ``macs_model`` is None where MACs
    are not counted (and for the compiled and onnxruntime paths, whose graphs differ)."""
    base, path = split_path(spec)
    torch.manual_seed(0)  # every path of a spec gets the same weights
    model, call, macs_model, macs_call = _build_eager(base, mode, size, batch, device, cpu_deform_attn, checkpoint)
    if path == 'bf16':
        if mode == 'predict' and isinstance(model, FastDeformableDETR):
            model.inference['path'] = 'bf16'  # FastDeformableDETR's own bf16 path, as `mim test` runs it
            return model, call, None, None

        def call_bf16(x, inner=call):
            with torch.autocast(device, dtype=torch.bfloat16):
                return inner(x)
        return model, call_bf16, None, None
    if path == 'compile':
        if is_detector_spec(base):
            model.backbone.compile()  # in place, as FastDeformableDETR(inference=dict(path='compile')) does
            return model, detector_call(model, mode, size, batch), None, None
        return model, torch.compile(call), None, None
    if path == 'onnxruntime':
        return model, _onnxruntime_call(model, base, mode, size, batch, device), None, None
    return model, call, macs_model, macs_call


def _onnxruntime_call(model: nn.Module, spec: str, mode: str, size: tuple[int, int], batch: int,
                      device: str) -> Callable:
    import tempfile

    from ..export.onnx import export, require_runtime
    if not is_detector_spec(spec) or mode != 'predict' or device != 'cpu':
        raise BenchmarkError(f'{spec}@onnxruntime: the exported graph is a whole detector in predict mode, on the '
                             'CPU')
    _, ort = require_runtime()
    with tempfile.TemporaryDirectory() as tmp:
        path = export(model, *size, f'{tmp}/model.onnx')
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    return lambda x: session.run(None, {'image': (x * 255).numpy()})


def _build_eager(spec: str, mode: str, size: tuple[int, int], batch: int, device: str, cpu_deform_attn: str,
                 checkpoint: str | None):
    if is_detector_spec(spec):
        model, _ = build_detector(spec, cpu_deform_attn)
        if checkpoint:
            from mmengine.runner import load_checkpoint
            load_checkpoint(model, checkpoint, map_location='cpu')
        model.to(device).eval()  # some mmdet modules' train() returns None: no chaining
        call = detector_call(model, mode, size, batch)
        return (model, call, model.backbone, call) if mode == 'backbone' else (model, call, None, None)
    model, call = build_backbone(spec, size)
    model.to(device).eval()
    return model, call, model, call


def count_gmacs(call: Callable, model: nn.Module, x: torch.Tensor) -> float | None:
    """GMACs of ``call(x)`` through mmengine's FlopAnalyzer (one multiply-add counts one), attention explicit."""
    from mmengine.analysis import FlopAnalyzer

    class _Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, inp):
            return call(inp)
    try:
        with explicit_attention(model), torch.no_grad():
            analyzer = FlopAnalyzer(_Wrap(), (x,))
            analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return analyzer.total() / 1e9
    except Exception:  # detectors with data-dependent control flow do not trace; report n/a, not a guess
        return None
