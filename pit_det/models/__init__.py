from ..checkpoint import CheckpointMismatchError, CheckpointReadError, ConversionReport, read_checkpoint
from .detectors import FastDeformableDETR, FastDINO
from .pit import ARCH_ZOO, PiT, resize_pos_embed, resolve_arch
from .pit_layout import convert_pit_checkpoint, load_pit_weights
from .vit import ViTPyramid

__all__ = [
    'ARCH_ZOO',
    'CheckpointMismatchError',
    'CheckpointReadError',
    'ConversionReport',
    'FastDINO',
    'FastDeformableDETR',
    'PiT',
    'ViTPyramid',
    'convert_pit_checkpoint',
    'load_pit_weights',
    'read_checkpoint',
    'resize_pos_embed',
    'resolve_arch',
]
