"""Export and verify, as ``pit-det-export-onnx`` does: every argument checked before the model is built, the graph
written in its format, run in its runtime at several sizes against mmdet's ``predict``, and kept only if it
reproduces it (:func:`export_checked`). The command is argument handling over :class:`ExportRequest`."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointReadError
from ..outputs import atomic_write, check_file_output
from .metadata import FORMATS, exported_metadata
from .onnx import (
    MIN_SIDE,
    Comparison,
    ExportError,
    build_exportable,
    check_opset,
    check_shape,
    compare,
    load_image,
    metadata,
    one_pixel_size,
    shape_problem,
    write_onnx,
)
from .openvino import require_tools
from .runtimes import Runtime


@dataclass
class ExportRequest:
    """What to export and how to check it (the command's arguments, ``pit-det-export-onnx --help``)."""

    config: str
    checkpoint: str
    out: Path
    size: tuple[int, int]
    format: str = 'onnx'
    image: str | None = None
    calibration_images: int | None = None
    seed: int = 0
    opset: int = 17
    topk: int = 20
    force: bool = False


class NotReproduced(ExportError):
    """The exported graph does not reproduce mmdet's ``predict``: it is not kept."""


def is_export(path: Path) -> bool:
    """Whether ``path`` is a file this exporter wrote (it carries pit-det's metadata)."""
    try:
        exported_metadata(path)
    except (CheckpointReadError, FileNotFoundError, ImportError):
        return False
    return True


def check_request(request: ExportRequest) -> None:
    """Every argument, before a model is built (the config and the size the model needs are checked again only
    once it is: :func:`~pit_det.deploy.onnx.check_shape`).

    Raises:
        ExportError, OutputError: naming the argument and what to do.
    """
    if request.format not in FORMATS:
        raise ExportError(f'--format {request.format}: use one of {", ".join(FORMATS)}')
    require_tools(request.format)
    if request.format != 'openvino-int8' and request.calibration_images is not None:
        raise ExportError('--calibration-images goes with --format openvino-int8')
    if request.calibration_images is not None and request.calibration_images < 1:
        raise ExportError(f'--calibration-images {request.calibration_images}: at least 1')
    for path, what in ((request.checkpoint, 'checkpoint'), (request.image, '--image')):
        if path is not None and not Path(path).is_file():
            raise ExportError(f'{what} not found: {path}')
    if request.topk < 1:
        raise ExportError(f'--topk {request.topk}: compare at least 1 detection')
    check_opset(request.opset)
    height, width = request.size
    if min(height, width) < MIN_SIDE:  # every detector's own minimum (min_side) is at least this
        raise ExportError(f'--size {height}x{width}: this detector needs at least {MIN_SIDE} px per side')
    inputs = [('config', request.config), ('checkpoint', request.checkpoint), ('image', request.image)]
    out = Path(request.out)
    check_file_output(out, inputs, option='--out', own=is_export, force=request.force)
    suffix = '.onnx' if request.format == 'onnx' else '.xml'
    if out.suffix != suffix:
        raise ExportError(f'--out {out}: a --format {request.format} file is named *{suffix}')
    if suffix == '.xml':  # the weights file beside it
        bin_file = out.with_suffix('.bin')
        force = request.force or is_export(out) or not bin_file.exists()
        check_file_output(bin_file, inputs, option="--out's weights file", force=force)


def check_sizes(model, height: int, width: int) -> list[tuple[int, int]]:
    """The sizes the graph is checked at besides the traced one: three quarters of the height (another aspect ratio)
    and the smallest 1:4 size with a one-pixel level (:func:`~pit_det.deploy.onnx.one_pixel_size`), each where the
    detector runs it."""
    sizes = [(max(32, height * 3 // 4 // 8 * 8), width), one_pixel_size(model)]
    return [size for size in sizes if size is not None and shape_problem(model, *size) is None]


def _default_image(folder: Path) -> Path:
    from ..data import make_synthetic_coco

    return make_synthetic_coco(folder / 'scene', num_train=0, num_val=1, size=256) / 'val' / '000000.png'


def export_checked(request: ExportRequest, cfg, log: Callable[[str], None] = print) -> list[Comparison]:
    """Build the detector of ``cfg`` (the request's config, read once by the caller) with the checkpoint, export it
    in the request's format and check the file in its runtime (:func:`~pit_det.deploy.onnx.compare`, a batch of two
    at the traced size and :func:`check_sizes`); write it to ``request.out`` only if a float graph reproduces
    mmdet's ``predict`` (INT8 changes the numbers by design: its differences are logged).

    Raises:
        NotReproduced: the float graph differs beyond the tolerances; nothing is written.
    """
    height, width = request.size
    model = build_exportable(cfg, request.checkpoint)
    check_shape(model, height, width)
    calibration = None
    if request.format == 'openvino-int8':
        from .openvino import CALIBRATION_IMAGES, calibration_images

        calibration = calibration_images(model.cfg, request.calibration_images or CALIBRATION_IMAGES, request.seed)
    with tempfile.TemporaryDirectory() as tmp:
        source = request.image or _default_image(Path(tmp))
        images = [load_image(source, height, width)]
        images += [load_image(source, *size) for size in check_sizes(model, height, width)]
    results = []

    def check(runtime: Runtime) -> None:
        for batch in (torch.cat([images[0], images[0].flip(-1)]), *images[1:]):  # a batch of two, other sizes
            results.append(compare(model, runtime, batch, request.topk))
            log(str(results[-1]))
        if request.format != 'openvino-int8' and not all(result.ok for result in results):
            raise NotReproduced(
                f"the exported graph does not reproduce mmdet's predict within the tolerances above; {request.out} "
                'was not written'
            )

    def write(tmp: Path) -> None:
        write_onnx(model, height, width, tmp, request.opset)
        log(
            f'exported {request.out} ({tmp.stat().st_size / 2**20:.1f} MiB), onnx.checker: valid, opset {request.opset}'
        )
        check(Runtime('onnxruntime', tmp))

    if request.format == 'onnx':
        atomic_write(request.out, write)
    else:
        _write_ir(request, model, calibration, check, log)
    return results


def _write_ir(request: ExportRequest, model, calibration, check, log) -> None:
    """The IR of ``--format openvino``/``openvino-int8``, checked in OpenVINO f32 before it is written."""
    from .openvino import save_ir, to_openvino

    height, width = request.size
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = write_onnx(model, height, width, Path(tmp) / 'model.onnx', request.opset)
        start = time.perf_counter()
        ir = to_openvino(onnx_file, metadata(model, height, width), request.format, calibration)
        if calibration:
            log(
                f'quantised to INT8 with NNCF on {len(calibration)} calibration images of the training set '
                f'(seed {request.seed}) in {time.perf_counter() - start:.0f} s'
            )
        save_ir(ir, request.out, check=lambda written: check(Runtime(request.format, written, precision='f32')))
