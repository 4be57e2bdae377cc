"""pit-det: Pooling-based Vision Transformer (PiT) backbones for MMDetection's Deformable DETR and DINO.

Importing this package registers :class:`PiT`, :class:`FastDeformableDETR` and :class:`FastDINO` in mmdet's
``MODELS`` registry, :class:`CheckedRunner` in mmengine's ``RUNNERS``, the checkpoint sources of
:mod:`pit_det.checkpoint.sources` (local files, ``hf-hub:`` tags, checked URLs) in mmengine's ``CheckpointLoader``,
and allow-lists the classes of mmengine checkpoints for ``torch.load(weights_only=True)`` (see
:mod:`pit_det.checkpoint.serialization`). It also registers the exported-graph inference paths of
:mod:`pit_det.deploy` (``onnxruntime``, ``openvino``, ``openvino-int8``).
"""

from . import deploy  # noqa: F401  (the exported-graph inference paths)
from .extensions import install
from .models import (
    ARCH_ZOO,
    CheckpointMismatchError,
    FastDeformableDETR,
    FastDINO,
    PiT,
    convert_pit_checkpoint,
    load_pit_weights,
)
from .runner import CheckedRunner

__version__ = '0.1.0'
__all__ = [
    'ARCH_ZOO',
    'CheckpointMismatchError',
    'FastDeformableDETR',
    'FastDINO',
    'PiT',
    'CheckedRunner',
    'convert_pit_checkpoint',
    'load_pit_weights',
]

install()
