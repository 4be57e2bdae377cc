from .detectors import FastDeformableDETR
from .pit import ARCH_ZOO, PiT, resolve_arch

__all__ = ['ARCH_ZOO', 'FastDeformableDETR', 'PiT', 'resolve_arch']
