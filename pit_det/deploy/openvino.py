"""The exported detector as an OpenVINO IR: float (``openvino``) or INT8 by NNCF's post-training quantisation
(``openvino-int8``), calibrated on images of the config's training set.

OpenVINO reads the ONNX graph of :mod:`pit_det.deploy.onnx` as it is (any image size); the IR adds pit-det's metadata
(in its ``rt_info``) and its format. INT8 keeps in floating point what the boxes depend on most finely
(:data:`KEEP_FLOAT`): the linear layers that predict the deformable attention's sampling offsets and attention weights
(an offset is a fraction of the feature map: an 8-bit step moves every sampling point of a query), the box
regression branches with the reference-point arithmetic after them, and the classification branches (one small
linear layer per decoder layer: no measurable time, and their error moves every score); GridSample itself is never
quantised. NNCF's SmoothQuant (which moves activation outliers into the weights of matrix products) is off: both
choices are measured in docs/deployment.md (INT8).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .extras import MissingExtraError, require
from .metadata import BIN_KEY, FORMAT_KEY, GRAPH_KEY, file_digest, graph_digest
from .onnx import ExportError

# name fragments of the ONNX nodes that stay in floating point in the INT8 graph (NNCF ignored scope)
KEEP_FLOAT = ('sampling_offsets', 'attention_weights', 'reg_branches', 'cls_branches')
CALIBRATION_IMAGES = 64  # default; a small set has fewer and uses all of them


class QuantizationError(ValueError):
    """A quantisation request that cannot be honoured; the message says why and what to do."""


def require_tools(name: str) -> None:
    """What exporting to, or running, ``name`` (a format or an exported-graph path) needs installed: onnx and
    onnxruntime always, openvino for the OpenVINO ones, nncf for INT8.

    Raises:
        ExportError: naming the missing package and the extra that brings it.
    """
    try:
        require('onnx', 'onnxruntime', purpose='ONNX export needs')
        if name.startswith('openvino'):
            require('openvino', purpose='the OpenVINO paths need')
        if name == 'openvino-int8':
            require('nncf', purpose='INT8 needs')
    except MissingExtraError as exc:
        raise ExportError(str(exc)) from None


def _dataset_cfg(cfg):
    """The training dataset of ``cfg`` (unwrapped from mmdet's dataset wrappers) with the test pipeline."""
    from ..data.coco import unwrap_dataset

    dataset = unwrap_dataset(cfg.train_dataloader.dataset)
    return dict(dataset, pipeline=cfg.test_dataloader.dataset.pipeline, filter_cfg=None)


def calibration_images(cfg, count: int = CALIBRATION_IMAGES, seed: int = 0) -> list[np.ndarray]:
    """``count`` images of the config's training set (a seeded pick; all of them if it has fewer), each resized by
    the test pipeline, as the graph takes them: float32 ``(1, 3, H, W)`` RGB 0-255.

    Raises:
        QuantizationError: the training set cannot be read.
    """
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    register_all_modules()
    try:
        dataset = DATASETS.build(_dataset_cfg(cfg))
    except (FileNotFoundError, KeyError, ValueError, AssertionError) as exc:
        raise QuantizationError(
            f"the calibration images come from the config's training set, which cannot be read "
            f'({type(exc).__name__}: {exc}): fix train_dataloader.dataset or pass '
            '--cfg-options'
        ) from None
    if len(dataset) == 0:
        raise QuantizationError("the config's training set has no images to calibrate INT8 with")
    picked = random.Random(seed).sample(range(len(dataset)), min(count, len(dataset)))
    images = []
    for index in picked:
        bgr = dataset[index]['inputs']  # uint8 (3, H, W), BGR as mmdet loads it
        images.append(np.ascontiguousarray(bgr.numpy()[::-1][None], dtype=np.float32))
    return images


def to_openvino(
    onnx_path: str | Path,
    metadata: dict[str, str],
    fmt: str,
    calibration: list[np.ndarray] | None = None,
    keep_float: tuple[str, ...] = KEEP_FLOAT,
):
    """The OpenVINO model of the ONNX file, quantised to INT8 when ``fmt`` is ``openvino-int8``, with ``metadata``
    and its format in its ``rt_info``."""
    ov = require('openvino', purpose='the OpenVINO paths need')
    model = ov.Core().read_model(str(onnx_path))
    if fmt == 'openvino-int8':
        nncf = require('nncf', purpose='INT8 needs')
        if not calibration:
            raise QuantizationError('INT8 needs calibration images')
        from nncf.common.logging import nncf_logger

        level = nncf_logger.level
        nncf_logger.setLevel(logging.WARNING)  # not a line per node left in floating point
        try:
            no_smooth_quant = nncf.AdvancedQuantizationParameters(
                smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=-1)
            )
            model = nncf.quantize(
                model,
                nncf.Dataset(calibration, lambda image: {'image': image}),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(calibration),
                ignored_scope=nncf.IgnoredScope(patterns=[f'.*{name}.*' for name in keep_float], validate=False),
                advanced_parameters=no_smooth_quant,
            )
        finally:
            nncf_logger.setLevel(level)
    for key, value in {**metadata, FORMAT_KEY: fmt}.items():
        model.set_rt_info(value, key.split('.', 1))
    return model


def record_digests(xml: Path) -> None:
    """Record in the IR's ``rt_info`` the sha256 of the ``.bin`` beside ``xml`` (:data:`BIN_KEY`) and of the graph
    (:data:`GRAPH_KEY`, :func:`~pit_det.deploy.metadata.graph_digest`), which
    :func:`~pit_det.deploy.metadata.exported_metadata` checks: OpenVINO reads any ``.bin`` whose tensors have the
    sizes the ``.xml`` expects, and any edited ``.xml``, so another export's weights or a changed layer would run
    silently. The digests are known only once both files are written, so they go into the written ``.xml``, beside
    the metadata :func:`to_openvino` set."""
    text = xml.read_text(encoding='utf-8')
    group, bin_name = BIN_KEY.split('.', 1)
    end = text.rfind(f'</{group}>')
    if end < 0:
        raise ExportError(f'{xml}: OpenVINO wrote no <{group}> metadata to record the digests in')
    entries = (
        f'<{bin_name} value="{file_digest(xml.with_suffix(".bin"))}" />\n'
        f'<{GRAPH_KEY.split(".", 1)[1]} value="{graph_digest(text)}" />\n'
    )
    xml.write_text(text[:end] + entries + text[end:], encoding='utf-8')


def save_ir(model, out: str | Path, check: Callable[[Path], object] | None = None) -> Path:
    """Write ``model`` as ``out`` (``.xml``) and its weights beside it (``.bin``), each renamed into place only when
    both are written and ``check(written_xml)`` (if given) has returned; a failure leaves what was there."""
    ov = require('openvino', purpose='the OpenVINO paths need')
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out.stem}.', dir=out.parent))
    try:
        ov.save_model(model, str(tmp / 'model.xml'), compress_to_fp16=False)
        record_digests(tmp / 'model.xml')
        if check is not None:
            check(tmp / 'model.xml')
        for suffix in ('.bin', '.xml'):
            with open(tmp / f'model{suffix}', 'rb') as f:
                os.fsync(f.fileno())
            os.replace(tmp / f'model{suffix}', out.with_suffix(suffix))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
