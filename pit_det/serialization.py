"""Let mmengine checkpoints load under ``torch.load(weights_only=True)`` (torch >= 2.6's default).

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, so since torch 2.6 its own checkpoints fail to load
(``Unsupported global: mmengine.logging.history_buffer.HistoryBuffer``). Rather than turning the check off, this
module allow-lists exactly the classes an mmengine training checkpoint holds. One of them needs care: a
``HistoryBuffer`` pickles its class-wide table of statistics methods, which unpickles through ``builtins.getattr``,
a global that must never be allow-listed (it reaches any attribute of any allowed object). The buffer is therefore
pickled without that table; ``HistoryBuffer.__setstate__`` rebuilds it on loading, as it always did.
"""
from __future__ import annotations

import collections

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer


def _history_buffer_getstate(self: HistoryBuffer) -> dict:
    """State without ``statistics_methods`` (a class-level table restored by ``__setstate__``)."""
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    return state


def _numpy_globals() -> list:
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(name)) for name in
                     ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64',
                      'float16', 'float32', 'float64')]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes]


def mmengine_safe_globals() -> list:
    """Every global an mmengine training checkpoint (model, optimizer, schedulers, message hub) refers to."""
    import _codecs
    return [HistoryBuffer, _codecs.encode, collections.Counter, *_numpy_globals()]


def register_mmengine_safe_globals() -> None:
    """Allow-list :func:`mmengine_safe_globals` for weights-only loading and make HistoryBuffer pickle safely."""
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    torch.serialization.add_safe_globals(mmengine_safe_globals())
