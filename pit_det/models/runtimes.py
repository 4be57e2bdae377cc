"""An exported detector in a CPU runtime: onnxruntime, or OpenVINO (f32/bf16, or NNCF's INT8).

The file is what ``pit-det-export-onnx`` writes: an ONNX graph (``--format onnx``, run by onnxruntime or OpenVINO) or
an OpenVINO IR (``--format openvino`` / ``openvino-int8``: ``NAME.xml`` with its ``NAME.bin``). Each takes an image of
any size and records what it was exported from (:data:`~pit_det.models.utils.EXPORT_METADATA`, and its format); a
detector refuses a file of other weights or another number of classes, and a path refuses a file of another format.
"""
from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
from torch import nn

from .fit import CheckpointMismatchError
from .sources import CheckpointReadError
from .utils import EXPORT_METADATA, onnxruntime_session, weights_digest

RUNTIMES = ('onnxruntime', 'openvino', 'openvino-int8')
FORMATS = ('onnx', 'openvino', 'openvino-int8')
FORMAT_KEY = 'pit_det.format'
BIN_KEY = 'pit_det.bin_sha256'  # an IR's record of its .bin: the weights file must be the one written with it
# the formats each runtime path runs: OpenVINO reads the ONNX graph as well as its own IR
RUNS = {'onnxruntime': ('onnx',), 'openvino': ('onnx', 'openvino'), 'openvino-int8': ('openvino-int8',)}


# OpenVINO's inference precisions under every spelling users write them; OpenVINO itself takes the first of each
PRECISIONS = {'f32': 'f32', 'fp32': 'f32', 'float32': 'f32', 'bf16': 'bf16', 'bfloat16': 'bf16', 'f16': 'f16',
              'fp16': 'f16', 'float16': 'f16'}


def openvino_precision(text: str) -> str:
    """OpenVINO's name (``f32``, ``bf16``, ``f16``) of a precision spelled ``F32``, ``fp32``, ``float32``, ...

    Raises:
        ValueError: naming the spellings that exist.
    """
    name = PRECISIONS.get(str(text).lower())
    if name is None:
        raise ValueError(f'precision {text!r}: OpenVINO runs f32, bf16 or f16 (also written fp32/float32, '
                         'bfloat16, fp16/float16, in any case)')
    return name


def require_openvino():
    """The ``openvino`` module, or an error naming the extra that brings it."""
    try:
        import openvino
    except ImportError as exc:
        raise ImportError(f'the OpenVINO paths need openvino ({exc}): pip install "pit-det[export]"') from None
    return openvino


@functools.lru_cache(maxsize=8)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 22), b''):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (computed once per size and modification time)."""
    stat = os.stat(path)
    return _digest(str(path), stat.st_size, stat.st_mtime_ns)


def exported_metadata(path: str | Path) -> dict[str, str]:
    """What an exported file records of its origin, and its format (``pit_det.format``).

    Raises:
        FileNotFoundError: no such file.
        CheckpointReadError: not an ONNX file or OpenVINO IR, or one without pit-det's metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'exported file not found: {path}')
    again = 'export it again with pit-det-export-onnx CONFIG CHECKPOINT OUT [--format ...]'
    if path.suffix == '.xml':
        ov = require_openvino()
        try:
            model = ov.Core().read_model(str(path))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1][:200]
            raise CheckpointReadError(f'{path} is not a readable OpenVINO IR ({first}): give the .xml written by '
                                      'pit-det-export-onnx --format openvino, with its .bin beside it') from None
        keys = [*EXPORT_METADATA, FORMAT_KEY]
        meta = {key: model.get_rt_info(key.split('.', 1)).astype(str) for key in keys
                if model.has_rt_info(key.split('.', 1))}
        meta.setdefault(FORMAT_KEY, 'openvino')
        weights = path.with_suffix('.bin')
        if set(EXPORT_METADATA) <= set(meta) and not model.has_rt_info(BIN_KEY.split('.', 1)):
            raise CheckpointReadError(f'{path} does not record the digest of its weights file (an older pit-det): '
                                      f'{again}')
        if set(EXPORT_METADATA) <= set(meta) and \
                model.get_rt_info(BIN_KEY.split('.', 1)).astype(str) != file_digest(weights):
            raise CheckpointReadError(f'{weights} is not the weights file written with {path} (its sha256 differs '
                                      'from the one the .xml records: another export\'s .bin, or a damaged copy): '
                                      f'copy the .xml and .bin of one export together, or {again}')
    else:
        try:
            import onnx
        except ImportError as exc:
            raise ImportError(f'reading an ONNX file needs onnx ({exc}): pip install "pit-det[export]"') from None
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError and others for a file of another format
            raise CheckpointReadError(f'{path} is not an ONNX file ({type(exc).__name__}): give the .onnx file written '
                                      'by pit-det-export-onnx') from None
        meta = {p.key: p.value for p in proto.metadata_props if p.key in EXPORT_METADATA}
        meta.setdefault(FORMAT_KEY, 'onnx')
    if not set(EXPORT_METADATA) <= set(meta):
        raise CheckpointReadError(f'{path} does not say what it was exported from (no pit-det metadata: another '
                                  f'exporter or an older pit-det): {again}')
    return meta


def classes_mismatch(meta: dict[str, str], path: str | Path, num_classes: int, source: str) -> str | None:
    """The message when the file's detector has another number of classes than ``num_classes`` (of ``source``, a
    config or a detector), else None."""
    if meta['pit_det.num_classes'] == str(num_classes):
        return None
    return (f'{path} was exported from a detector of {meta["pit_det.num_classes"]} classes ({meta["pit_det.config"]}), '
            f'{source} has {num_classes}: export this config and checkpoint with pit-det-export-onnx CONFIG '
            f'CHECKPOINT {path}')


def format_mismatch(meta: dict[str, str], path: str | Path, runtime: str) -> str | None:
    """The message when ``runtime`` does not run a file of this format, else None."""
    fmt = meta[FORMAT_KEY]
    if fmt in RUNS[runtime]:
        return None
    fits = [r for r, formats in RUNS.items() if fmt in formats]
    return (f'{path} is exported as {fmt}, which the {runtime} path does not run: use the path {" or ".join(fits)}, '
            f'or export with pit-det-export-onnx CONFIG CHECKPOINT OUT --format {RUNS[runtime][-1]}')


def check_exported(meta: dict[str, str], path: str | Path, model: nn.Module, runtime: str) -> None:
    """Refuse a file of another format than ``runtime`` runs, or whose classes or weights differ from ``model``'s.

    Raises:
        CheckpointMismatchError: naming both sides and the export command.
    """
    problem = format_mismatch(meta, path, runtime) or classes_mismatch(meta, path, model.bbox_head.num_classes,
                                                                       'this detector')
    if problem:
        raise CheckpointMismatchError(problem)
    if meta['pit_det.weights_sha256'] != weights_digest(model):
        raise CheckpointMismatchError(
            f'{path} was exported from other weights ({meta["pit_det.checkpoint"]}, config {meta["pit_det.config"]}) '
            f'than this detector holds: export this checkpoint with pit-det-export-onnx CONFIG CHECKPOINT {path}')


class Runtime:
    """An exported detector: ``runtime(image)`` with ``image`` float32 ``(N, 3, H, W)`` RGB 0-255, any H and W,
    returns ``boxes`` ``(N, K, 4)``, ``scores`` ``(N, K)``, ``labels`` ``(N, K)`` as numpy arrays.

    Args:
        runtime: ``onnxruntime``, ``openvino`` or ``openvino-int8``.
        path: the exported file.
        threads: intra-op threads (default: the runtime's).
        precision: OpenVINO's inference precision (``f32``, ``bf16``, ``f16``); default OpenVINO's choice for the
            CPU (bf16 where the CPU has bf16 instructions, else f32).
        shape: ``(N, 3, H, W)`` to compile OpenVINO for one input shape (faster than the dynamic graph: what a
            deployment at one size does); default any batch and size.
    """

    def __init__(self, runtime: str, path: str | Path, threads: int | None = None, precision: str | None = None,
                 shape: tuple[int, int, int, int] | None = None) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f'runtime {runtime!r}: use one of {", ".join(RUNTIMES)}')
        self.runtime, self.path = runtime, Path(path)
        if runtime == 'onnxruntime':
            if precision is not None and openvino_precision(precision) != 'f32':
                raise ValueError(f'precision {precision!r}: onnxruntime runs the graph in f32')
            session = onnxruntime_session(path, threads)
            self.precision = 'f32'
            self._run = lambda image: session.run(['boxes', 'scores', 'labels'], {'image': image})
            return
        ov = require_openvino()
        core = ov.Core()
        config = {'PERFORMANCE_HINT': 'LATENCY'}
        if threads:
            config['INFERENCE_NUM_THREADS'] = threads
        if precision:
            config['INFERENCE_PRECISION_HINT'] = openvino_precision(precision)
        compiled = None
        if shape is not None:
            model = core.read_model(str(path))
            model.reshape({'image': list(shape)})
            try:
                compiled = core.compile_model(model, 'CPU', config)
            except RuntimeError as exc:  # OpenVINO 2026.4 fails on some INT8 graphs made static at small sizes
                warnings.warn(f'OpenVINO cannot compile {path} for the input shape {shape} '
                              f'({str(exc).strip().splitlines()[0][:160]}): it runs the graph with dynamic shapes')
        if compiled is None:
            try:
                compiled = core.compile_model(core.read_model(str(path)), 'CPU', config)
            except RuntimeError as exc:
                raise ValueError(f'OpenVINO cannot compile {path} with {config}: '
                                 f'{str(exc).strip().splitlines()[-1][:200]}') from None
        hint = compiled.get_property('INFERENCE_PRECISION_HINT')
        self.precision = hint.get_type_name()  # f32, bf16 or f16
        if runtime == 'openvino-int8':
            self.precision = f'int8 ({self.precision} elsewhere)'
        request = compiled.create_infer_request()
        outputs = [compiled.output(name) for name in ('boxes', 'scores', 'labels')]

        def run(image):
            result = request.infer({'image': image})
            return [np.array(result[output]) for output in outputs]
        self._run = run

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        return self._run(np.ascontiguousarray(image, dtype=np.float32))


def open_exported(runtime: str, path: str | Path, model: nn.Module, precision: str | None = None) -> Runtime:
    """The :class:`Runtime` of ``path``, after checking it is an export of ``model`` that ``runtime`` runs."""
    check_exported(exported_metadata(path), path, model, runtime)
    return Runtime(runtime, path, precision=precision)
