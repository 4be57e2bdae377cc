"""Let mmengine checkpoints load under ``torch.load(weights_only=True)`` (torch >= 2.6's default).

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, so since torch 2.6 its own checkpoints fail to load
(``Unsupported global: mmengine.logging.history_buffer.HistoryBuffer``). Rather than turning the check off, this
module allow-lists exactly the classes an mmengine training checkpoint holds. One of them needs care: a
``HistoryBuffer`` pickles its class-wide table of statistics methods, which unpickles through ``builtins.getattr``,
a global that must never be allow-listed (it reaches any attribute of any allowed object). The buffer is therefore
pickled without that table, and unpickled by :func:`_history_buffer_setstate`, which takes only the buffer's own
validated fields: mmengine's ``__setstate__`` merges whatever a file holds into the class-wide table, so a crafted
weights-only file could install any allow-listed callable there for every buffer in the process.
"""
from __future__ import annotations

import collections
import pickle

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer


def _history_buffer_getstate(self: HistoryBuffer) -> dict:
    """State without ``statistics_methods`` (a class-level table restored by ``__setstate__``)."""
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    return state


_FIELDS = {'max_length': int, '_log_history': np.ndarray, '_count_history': np.ndarray}


def _history_buffer_setstate(self: HistoryBuffer, state: dict) -> None:
    """Restore a buffer from its three own fields, checked; never touch the class-wide statistics table.

    Raises:
        pickle.UnpicklingError: a field is missing, of the wrong type, or the histories do not pair up.
    """
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f'HistoryBuffer state must be a dict, got {type(state).__name__}')
    state = {k: v for k, v in state.items() if k != 'statistics_methods'}  # mmengine's own pickles carry it
    if set(state) != set(_FIELDS) or not all(isinstance(state[k], t) for k, t in _FIELDS.items()):
        raise pickle.UnpicklingError(f'HistoryBuffer state has fields {sorted(state)}; expected {sorted(_FIELDS)} '
                                     'of types int, ndarray, ndarray')
    log, count = state['_log_history'], state['_count_history']
    if log.ndim != 1 or count.ndim != 1 or len(log) != len(count) or log.dtype.kind not in 'iuf' \
            or count.dtype.kind not in 'iuf':
        raise pickle.UnpicklingError('HistoryBuffer histories must be two 1-D numeric arrays of equal length')
    self._set_default_statistics()  # as HistoryBuffer() does: the four built-in statistics, nothing from the file
    self.__dict__.update(max_length=state['max_length'], _log_history=log, _count_history=count)


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
    HistoryBuffer.__setstate__ = _history_buffer_setstate
    torch.serialization.add_safe_globals(mmengine_safe_globals())
