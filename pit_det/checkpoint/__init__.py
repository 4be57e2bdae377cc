"""Checkpoints: where weights come from, how they are read, whether they fit, and converted files.

- :mod:`.serialization`: mmengine's checkpoint classes allow-listed for ``torch.load(weights_only=True)``.
- :mod:`.sources`: local files, ``hf-hub:`` tags and URLs as mmengine ``CheckpointLoader`` schemes, read weights-only.
- :mod:`.matching`: whether a state dict fits a model (backbones' and detectors' checks, the load report).
- :mod:`.convert`: a checkpoint file converted to another layout and written (``pit-det-convert``'s library).

Model-specific layouts live beside their models (PiT's in :mod:`pit_det.models.pit_layout`); nothing here imports
:mod:`pit_det.models`.
"""

from .matching import CheckpointMismatchError, ConversionReport
from .sources import CheckpointReadError, WeightsUnavailableError, read_checkpoint

__all__ = [
    'CheckpointMismatchError',
    'CheckpointReadError',
    'ConversionReport',
    'WeightsUnavailableError',
    'read_checkpoint',
]
