from .detectors import FastDeformableDETR
from .pit import ARCH_ZOO, PiT, resize_pos_embed, resolve_arch
from .vit import ViTPyramid
from .fit import CheckpointMismatchError, ConversionReport
from .pit_checkpoint import convert_pit_checkpoint, load_pit_weights
from .sources import CheckpointReadError, read_checkpoint

__all__ = ['ARCH_ZOO', 'CheckpointMismatchError', 'CheckpointReadError', 'ConversionReport', 'FastDeformableDETR',
           'PiT', 'ViTPyramid', 'convert_pit_checkpoint', 'load_pit_weights', 'read_checkpoint', 'resize_pos_embed',
           'resolve_arch']
