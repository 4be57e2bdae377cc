from .detectors import FastDeformableDETR, FastDINO
from .pit import ARCH_ZOO, PiT, resize_pos_embed, resolve_arch
from .vit import ViTPyramid
from ..checkpoint import CheckpointMismatchError, CheckpointReadError, ConversionReport, read_checkpoint
from .pit_layout import convert_pit_checkpoint, load_pit_weights

__all__ = ['ARCH_ZOO', 'CheckpointMismatchError', 'CheckpointReadError', 'ConversionReport', 'FastDINO',
           'FastDeformableDETR', 'PiT', 'ViTPyramid', 'convert_pit_checkpoint', 'load_pit_weights', 'read_checkpoint',
           'resize_pos_embed', 'resolve_arch']
