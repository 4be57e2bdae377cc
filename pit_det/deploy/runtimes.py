"""An exported detector in a CPU runtime (onnxruntime, or OpenVINO in f32/bf16 or NNCF's INT8), and the inference
paths of a detector that run one.

The file is what ``pit-det-export-onnx`` writes: an ONNX graph (``--format onnx``, run by onnxruntime or OpenVINO) or
an OpenVINO IR (``--format openvino`` / ``openvino-int8``: ``NAME.xml`` with its ``NAME.bin``). :class:`Runtime` runs
one at any size; :class:`RuntimePath` (registered as ``onnxruntime``, ``openvino`` and ``openvino-int8`` in
:data:`pit_det.models.inference.PATHS`) is a detector's ``predict`` through one, after :func:`open_exported` has
refused a file of other weights, classes or format (:mod:`.metadata`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from mmengine.logging import print_log
from mmengine.structures import InstanceData
from torch import nn

from ..models.inference import InferencePath, register_path
from .extras import require
from .metadata import RUNTIMES, check_exported, check_fits, exported_metadata

# OpenVINO's inference precisions under every spelling users write them; OpenVINO itself takes the first of each
PRECISIONS = {
    'f32': 'f32',
    'fp32': 'f32',
    'float32': 'f32',
    'bf16': 'bf16',
    'bfloat16': 'bf16',
    'f16': 'f16',
    'fp16': 'f16',
    'float16': 'f16',
}


def openvino_precision(text: str, given: str | None = None) -> str:
    """OpenVINO's name (``f32``, ``bf16``, ``f16``) of a precision spelled ``F32``, ``fp32``, ``float32``, ...

    Raises:
        ValueError: starting with ``given`` (how the user wrote it; default ``precision 'TEXT'``), naming the
            spellings that exist.
    """
    name = PRECISIONS.get(str(text).lower())
    if name is None:
        given = given or f'precision {text!r}'
        raise ValueError(
            f'{given}: OpenVINO runs f32, bf16 or f16 (also written fp32/float32, bfloat16, fp16/float16, in any case)'
        )
    return name


def onnxruntime_session(path, threads: int | None = None):
    """An onnxruntime session of ``path`` on the CPU (``threads``: intra-op threads, default onnxruntime's)."""
    onnxruntime = require('onnxruntime', purpose='running an exported graph needs')
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


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

    def __init__(
        self,
        runtime: str,
        path: str | Path,
        threads: int | None = None,
        precision: str | None = None,
        shape: tuple[int, int, int, int] | None = None,
    ) -> None:
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
        ov = require('openvino', purpose='the OpenVINO paths need')
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
                warnings.warn(
                    f'OpenVINO cannot compile {path} for the input shape {shape} '
                    f'({str(exc).strip().splitlines()[0][:160]}): it runs the graph with dynamic shapes',
                    stacklevel=2,
                )
        if compiled is None:
            try:
                compiled = core.compile_model(core.read_model(str(path)), 'CPU', config)
            except RuntimeError as exc:
                raise ValueError(
                    f'OpenVINO cannot compile {path} with {config}: {str(exc).strip().splitlines()[-1][:200]}'
                ) from None
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


class RuntimePath(InferencePath):
    """A detector's ``predict`` through its exported file (``model_file``): each de-normalised RGB image, cropped to
    its own size (``img_shape``), run by the graph (which normalises itself), as mmdet's ``predict`` computes a batch
    of one. The file is opened, and checked against the detector's weights, on the first ``predict``."""

    runs_file = True

    def __init__(self, options) -> None:
        super().__init__(options)
        self.session: Runtime | None = None

    def check_file(self, num_classes: int, source: str) -> None:
        """Raise unless ``model_file`` is pit-det's export, of a format this path runs, of ``num_classes``.

        Raises:
            FileNotFoundError, CheckpointReadError: no such file, or not pit-det's export.
            CheckpointMismatchError: another format or number of classes, with the export command.
            MissingExtraError: the runtime is not installed.
        """
        check_fits(exported_metadata(self.options.model_file), self.options.model_file, self.name, num_classes, source)

    def predict(self, detector, predict, batch_inputs, batch_data_samples, rescale):
        if self.session is None:
            self.session = open_exported(self.name, self.options.model_file, detector, self.options.precision)
            print_log(
                f'inference: {self.name} runs {self.options.model_file} in {self.session.precision}', logger='current'
            )
        preprocessor = detector.data_preprocessor
        images = (batch_inputs.float() * preprocessor.std + preprocessor.mean).cpu().numpy()
        for image, sample in zip(images, batch_data_samples, strict=True):
            height, width = sample.metainfo['img_shape'][:2]
            boxes, scores, labels = (torch.from_numpy(out[0]) for out in self.session(image[None, :, :height, :width]))
            instances = InstanceData(bboxes=boxes, scores=scores, labels=labels)
            if rescale:
                instances.bboxes /= instances.bboxes.new_tensor(sample.metainfo['scale_factor']).repeat((1, 2))
            sample.pred_instances = instances
        return batch_data_samples


@register_path
class OnnxruntimePath(RuntimePath):
    name = 'onnxruntime'


class _OpenVINOPath(RuntimePath):
    takes_precision = True
    parse_precision = staticmethod(openvino_precision)


@register_path
class OpenVINOPath(_OpenVINOPath):
    name = 'openvino'


@register_path
class OpenVINOInt8Path(_OpenVINOPath):
    name = 'openvino-int8'
