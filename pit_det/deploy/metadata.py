"""What an exported file records of its origin, and the checks of a file against a detector or a config.

An ONNX file keeps :data:`EXPORT_METADATA` in its ``metadata_props``; an OpenVINO IR in its ``rt_info``, with its
format (:data:`FORMAT_KEY`), the sha256 of its ``.bin`` (:data:`BIN_KEY`) and of its graph (:data:`GRAPH_KEY`,
:func:`graph_digest`). :func:`exported_metadata` reads them
back (the one reader), :func:`check_exported` refuses a file of another format, class count or weights than a
detector's, :func:`check_fits` (with :func:`format_mismatch` and :func:`classes_mismatch`) a file that does not fit a
config, before any model is built.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from torch import nn

from ..checkpoint import CheckpointMismatchError, CheckpointReadError
from .extras import require

# What an exported graph carries of its origin, checked when a detector runs the file.
EXPORT_METADATA = (
    'pit_det.config',
    'pit_det.checkpoint',
    'pit_det.weights_sha256',
    'pit_det.num_classes',
    'pit_det.classes',
    'pit_det.input_size',
)
FORMATS = ('onnx', 'openvino', 'openvino-int8')
FORMAT_KEY = 'pit_det.format'
BIN_KEY = 'pit_det.bin_sha256'  # an IR's record of its .bin: the weights file must be the one written with it
GRAPH_KEY = 'pit_det.graph_sha256'  # and of its .xml: an edited layer (a Sigmoid made a Relu) ran with exit 0
# the formats each runtime path runs: OpenVINO reads the ONNX graph as well as its own IR
RUNS = {'onnxruntime': ('onnx',), 'openvino': ('onnx', 'openvino'), 'openvino-int8': ('openvino-int8',)}
RUNTIMES = tuple(RUNS)  # the exported-graph inference paths (pit_det.deploy.runtimes registers one of each)


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


def graph_digest(xml_text: str) -> str:
    """sha256 of an IR's ``.xml`` without its ``<pit_det>`` metadata block (which holds this digest): every layer,
    edge and setting of the graph. OpenVINO escapes ``<`` in values, so the block's tags occur once."""
    group = BIN_KEY.split('.', 1)[0]
    start, end = xml_text.find(f'<{group}>'), xml_text.rfind(f'</{group}>')
    if 0 <= start < end:
        xml_text = xml_text[:start] + xml_text[end + len(f'</{group}>') :]
    return hashlib.sha256(xml_text.encode('utf-8')).hexdigest()


def exported_metadata(path: str | Path) -> dict[str, str]:
    """What an exported file records of its origin, and its format (``pit_det.format``).

    Raises:
        FileNotFoundError: no such file.
        CheckpointReadError: not an ONNX file or OpenVINO IR, or one without pit-det's metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'exported file not found: {path}')
    again = 'export it again with pit-det-export-onnx CONFIG CHECKPOINT --out OUT --size HxW [--format ...]'
    if path.suffix == '.xml':
        ov = require('openvino', purpose='the OpenVINO paths need')
        try:
            model = ov.Core().read_model(str(path))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1][:200]
            raise CheckpointReadError(
                f'{path} is not a readable OpenVINO IR ({first}): give the .xml written by '
                'pit-det-export-onnx --format openvino, with its .bin beside it'
            ) from None
        keys = [*EXPORT_METADATA, FORMAT_KEY]
        meta = {
            key: model.get_rt_info(key.split('.', 1)).astype(str)
            for key in keys
            if model.has_rt_info(key.split('.', 1))
        }
        meta.setdefault(FORMAT_KEY, 'openvino')
        bin_key, weights = BIN_KEY.split('.', 1), path.with_suffix('.bin')
        if set(EXPORT_METADATA) <= set(meta):  # pit-det's IR: its .bin must be the one written with it
            if not model.has_rt_info(bin_key):
                raise CheckpointReadError(
                    f'{path} does not record the digest of its weights file (an older pit-det): {again}'
                )
            if model.get_rt_info(bin_key).astype(str) != file_digest(weights):
                raise CheckpointReadError(
                    f'{weights} is not the weights file written with {path} (its sha256 differs '
                    "from the one the .xml records: another export's .bin, or a damaged "
                    f'copy): copy the .xml and .bin of one export together, or {again}'
                )
            graph_key = GRAPH_KEY.split('.', 1)
            if not model.has_rt_info(graph_key):
                raise CheckpointReadError(f'{path} does not record the digest of its graph (an older pit-det): {again}')
            if model.get_rt_info(graph_key).astype(str) != graph_digest(path.read_text(encoding='utf-8')):
                raise CheckpointReadError(
                    f'{path} is not the graph pit-det exported (its layers differ from the '
                    'digest it records: edited, or damaged): use the file as exported, or '
                    f'{again}'
                )
    else:
        onnx = require('onnx', purpose='reading an ONNX file needs')
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError and others for a file of another format
            raise CheckpointReadError(
                f'{path} is not an ONNX file ({type(exc).__name__}): give the .onnx file written by pit-det-export-onnx'
            ) from None
        meta = {p.key: p.value for p in proto.metadata_props if p.key in EXPORT_METADATA}
        meta.setdefault(FORMAT_KEY, 'onnx')
    if not set(EXPORT_METADATA) <= set(meta):
        raise CheckpointReadError(
            f'{path} does not say what it was exported from (no pit-det metadata: another '
            f'exporter or an older pit-det): {again}'
        )
    return meta


def classes_mismatch(meta: dict[str, str], path: str | Path, num_classes: int, source: str) -> str | None:
    """The message when the file's detector has another number of classes than ``num_classes`` (of ``source``, a
    config or a detector), else None."""
    if meta['pit_det.num_classes'] == str(num_classes):
        return None
    return (
        f'{path} was exported from a detector of {meta["pit_det.num_classes"]} classes ({meta["pit_det.config"]}), '
        f'{source} has {num_classes}: export this config and checkpoint with pit-det-export-onnx CONFIG '
        f'CHECKPOINT --out {path} --size HxW'
    )


def format_mismatch(meta: dict[str, str], path: str | Path, runtime: str) -> str | None:
    """The message when ``runtime`` does not run a file of this format, else None."""
    fmt = meta[FORMAT_KEY]
    if fmt in RUNS[runtime]:
        return None
    fits = [r for r, formats in RUNS.items() if fmt in formats]
    return (
        f'{path} is exported as {fmt}, which the {runtime} path does not run: use the path {" or ".join(fits)}, '
        f'or export with pit-det-export-onnx CONFIG CHECKPOINT --out OUT --size HxW --format {RUNS[runtime][-1]}'
    )


def check_fits(meta: dict[str, str], path: str | Path, runtime: str, num_classes: int, source: str) -> None:
    """Refuse a file of another format than ``runtime`` runs, or of another number of classes than ``source`` (a
    config or a detector) has: what can be checked before any model is built.

    Raises:
        CheckpointMismatchError: naming both sides and the export command.
    """
    problem = format_mismatch(meta, path, runtime) or classes_mismatch(meta, path, num_classes, source)
    if problem:
        raise CheckpointMismatchError(problem)


def check_exported(meta: dict[str, str], path: str | Path, model: nn.Module, runtime: str) -> None:
    """Refuse a file of another format than ``runtime`` runs, or whose classes or weights differ from ``model``'s.

    Raises:
        CheckpointMismatchError: naming both sides and the export command.
    """
    check_fits(meta, path, runtime, model.bbox_head.num_classes, 'this detector')
    if meta['pit_det.weights_sha256'] != weights_digest(model):
        raise CheckpointMismatchError(
            f'{path} was exported from other weights ({meta["pit_det.checkpoint"]}, config {meta["pit_det.config"]}) '
            f'than this detector holds: export this checkpoint with pit-det-export-onnx CONFIG CHECKPOINT --out {path} '
            '--size HxW'
        )


def weights_digest(model: nn.Module) -> str:
    """sha256 of ``model``'s state dict (names, shapes, dtypes and values): what an exported file records of the
    weights it was exported from."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f'{name}:{tuple(tensor.shape)}:{tensor.dtype};'.encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b'')
    return digest.hexdigest()
