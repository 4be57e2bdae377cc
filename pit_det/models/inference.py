"""How a detector's ``predict`` runs: the inference options, checked once, and the inference path they choose.

:class:`InferenceOptions` is the one reading of ``model.inference`` (``path``, ``model_file``, ``precision``): the
detector, the preflight and ``pit-det-infer`` all call :meth:`InferenceOptions.parse`. Each path is an
:class:`InferencePath` registered by name in :data:`PATHS`: ``eager``, ``bf16`` and ``compile`` here, the exported-graph
paths (``onnxruntime``, ``openvino``, ``openvino-int8``) by :mod:`pit_det.deploy`, which registers them when pit_det is
imported (models never import deployment). A detector class takes :class:`RunsInferencePaths` to gain them all.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

PATHS: dict[str, type[InferencePath]] = {}
OPTIONS = ('path', 'model_file', 'precision')


def register_path(cls: type[InferencePath]) -> type[InferencePath]:
    """Class decorator: ``cls`` runs the inference path ``cls.name``."""
    PATHS[cls.name] = cls
    return cls


def config_key(option: str, value: str | None = None) -> str:
    """How a config sets an inference option (the preflight's and the detector's messages)."""
    return f'model.inference.{option}' + ('' if value is None else f'={value}')


@dataclass(frozen=True)
class InferenceOptions:
    """``model.inference``, checked: the path's name, the exported file it runs, OpenVINO's precision."""

    path: str = 'eager'
    model_file: str | None = None
    precision: str | None = None

    @classmethod
    def parse(cls, options: dict | InferenceOptions | None, spell: Callable[..., str] = config_key) -> InferenceOptions:
        """The options of ``options`` (a config's ``model.inference`` dict), each rule of every path checked.

        Args:
            spell: how the caller's user writes an option and its value (``spell('path', 'bf16')``:
                ``model.inference.path=bf16``, or a command's ``--path bf16``), for the messages.

        Raises:
            ValueError: naming the option as ``spell`` writes it, and its valid values.
        """
        if isinstance(options, InferenceOptions):
            return options
        options = dict(options or {})
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(
                f'{spell(unknown[0])}: no such inference option; the options are {", ".join(map(spell, OPTIONS))}'
            )
        parsed = cls(**options)
        if parsed.path not in PATHS:
            raise ValueError(f'{spell("path", repr(parsed.path))}: use one of {", ".join(PATHS)}')
        runtimes = [name for name, path in PATHS.items() if path.runs_file]
        if PATHS[parsed.path].runs_file != bool(parsed.model_file):
            raise ValueError(
                f'{spell("model_file", "FILE")} goes with {spell("path", "/".join(runtimes))} (and only '
                'with them): export one with pit-det-export-onnx CONFIG CHECKPOINT --out FILE --size HxW '
                '[--format openvino|openvino-int8]'
            )
        if parsed.precision is not None:
            path = PATHS[parsed.path]
            if not path.takes_precision:
                takes = [name for name, other in PATHS.items() if other.takes_precision]
                raise ValueError(
                    f'{spell("precision", parsed.precision)}: only the paths {" and ".join(takes)} take a precision'
                )
            given = spell('precision', repr(parsed.precision))
            parsed = replace(parsed, precision=path.parse_precision(parsed.precision, given))
        return parsed

    def build(self) -> InferencePath:
        """The path object that runs these options."""
        return PATHS[self.path](self)


class InferencePath:
    """How ``predict`` runs; a detector holds one, built from its options when they are set.

    Subclasses set ``name`` and override :meth:`predict`; one that runs an exported file sets ``runs_file`` and
    overrides :meth:`check_file` (and sets ``takes_precision`` and :meth:`parse_precision` if it takes one).
    """

    name = ''
    runs_file = False
    takes_precision = False

    def __init__(self, options: InferenceOptions) -> None:
        self.options = options

    @staticmethod
    def parse_precision(text: str, given: str) -> str:
        """The path's name of the precision ``text`` (for a path that ``takes_precision``).

        Raises:
            ValueError: a spelling the path does not know, the message starting with ``given`` (the option as the
                user wrote it).
        """
        raise ValueError(f'{given}: this path takes no precision')

    def check_file(self, num_classes: int, source: str) -> None:
        """Raise unless the options' ``model_file`` fits a detector of ``num_classes`` (of ``source``, a config or a
        detector), before any model is built."""

    def predict(self, detector: nn.Module, predict: Callable, batch_inputs, batch_data_samples, rescale: bool):
        """``predict(batch_inputs, batch_data_samples, rescale)`` is mmdet's own ``predict`` of ``detector``."""
        return predict(batch_inputs, batch_data_samples, rescale)


register_path(type('EagerPath', (InferencePath,), {'name': 'eager', '__doc__': "mmdet's predict, as it is."}))


def _autocast_bf16(method: Callable, device: str, convert: Callable) -> Callable:
    @functools.wraps(method)
    def run(*args, **kwargs):
        with torch.autocast(device, dtype=torch.bfloat16):
            out = method(*args, **kwargs)
        return convert(out)

    return run


@register_path
class Bf16Path(InferencePath):
    """The backbone, the neck and the encoder (nearly all the work: thousands of tokens) under bf16 autocast, the
    rest in float32: the decoder's queries, the reference points, the proposals and the boxes.

    bf16 keeps 8 bits of mantissa, so a normalised coordinate near 0.5 moves in steps of 1/512, 1.3 px at 666 px:
    the boxes must come from float32 (docs/inference.md measures both splits).
    """

    name = 'bf16'

    def predict(self, detector, predict, batch_inputs, batch_data_samples, rescale):
        extract, encode, device = detector.extract_feat, detector.forward_encoder, batch_inputs.device.type
        try:  # for this call only: instance attributes over the class's methods, removed after
            detector.extract_feat = _autocast_bf16(extract, device, lambda feats: tuple(f.float() for f in feats))
            detector.forward_encoder = _autocast_bf16(
                encode, device, lambda out: {**out, 'memory': out['memory'].float()}
            )
            return predict(batch_inputs, batch_data_samples, rescale)
        finally:
            del detector.extract_feat, detector.forward_encoder


COMPILED_PARTS = ('backbone', 'neck', 'encoder', 'decoder')


def compile_detector(detector: nn.Module) -> list[str]:
    """``torch.compile`` (inductor) of a DETR's backbone, neck, encoder and decoder, each in place (parameter names,
    and so checkpoints, stay as they are); returns the parts compiled. The fused deformable attention is a registered
    operator, so the graphs run through it; mmdet's reference points (a ``linspace`` per level sized by a tensor)
    and the post-processing stay eager. Inductor's freezing folds the weights into the graph where gradients are
    off, as in ``predict``."""
    parts = [name for name in COMPILED_PARTS if isinstance(getattr(detector, name, None), nn.Module)]
    for name in parts:
        getattr(detector, name).compile(options={'freezing': True})
    return parts


@register_path
class CompilePath(InferencePath):
    """:func:`compile_detector` on the first ``predict``; compiling takes a minute or more on a CPU, and again at
    each new image size until shapes are dynamic."""

    name = 'compile'

    def __init__(self, options: InferenceOptions) -> None:
        super().__init__(options)
        self.compiled = False

    def predict(self, detector, predict, batch_inputs, batch_data_samples, rescale):
        if not self.compiled:
            compile_detector(detector)
            self.compiled = True
        return predict(batch_inputs, batch_data_samples, rescale)


class RunsInferencePaths:
    """A detector whose ``predict`` runs along its inference path (``inference=dict(path=...)`` in its config),
    returning boxes and scores in float32 even under autocast (mmdet's metrics and visualiser convert them to numpy,
    which has no bfloat16). Training is always eager. Put before the mmdet detector class in the bases."""

    def set_inference(self, inference: dict | InferenceOptions | None) -> None:
        """Choose the inference path (``model.inference``), checked by :meth:`InferenceOptions.parse`."""
        self.inference = InferenceOptions.parse(inference)
        self.inference_path = self.inference.build()

    def predict(self, batch_inputs, batch_data_samples, rescale: bool = True):
        """mmdet's ``predict`` along the inference path (:mod:`pit_det.models.inference`)."""
        results = self.inference_path.predict(self, super().predict, batch_inputs, batch_data_samples, rescale)
        for result in results:
            result.pred_instances.bboxes = result.pred_instances.bboxes.float()
            result.pred_instances.scores = result.pred_instances.scores.float()
        return results
