"""How mmengine checkpoints load under ``torch.load(weights_only=True)`` (torch >= 2.6's default): the allow-list.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, so since torch 2.6 its own checkpoints fail to load
(``Unsupported global: mmengine.logging.history_buffer.HistoryBuffer``). Rather than turning the check off,
:func:`mmengine_safe_globals` lists exactly what an mmengine training checkpoint holds, for torch's allow-list
(:mod:`pit_det.extensions` adds it). Two of those names are read as pit-det's own, stricter objects:

* a ``HistoryBuffer`` (every checkpoint's message hub) is read as a :class:`CheckedHistoryBuffer`: mmengine's
  ``__setstate__`` merges whatever table of statistics methods a file holds into the class-wide one, so a crafted
  weights-only file could install any allow-listed callable there for every buffer in the process; the checked
  buffer takes only its own validated fields.
* mmengine pickles that table as ``builtins.getattr(HistoryBuffer, 'min')`` and so on. ``getattr`` must never be
  allow-listed (it reaches any attribute of any allowed object), so that name is read as
  :func:`history_buffer_method`, which returns HistoryBuffer's four statistics methods and refuses anything else.
"""

from __future__ import annotations

import collections
import pickle

import numpy as np
from mmengine.logging.history_buffer import HistoryBuffer

_FIELDS = {'max_length': int, '_log_history': np.ndarray, '_count_history': np.ndarray}
STATISTICS = ('min', 'max', 'current', 'mean')  # the methods mmengine registers for every buffer


class CheckedHistoryBuffer(HistoryBuffer):
    """A ``HistoryBuffer`` read from a checkpoint: its three own fields, checked; the class-wide statistics table is
    never touched. It saves as mmengine's ``HistoryBuffer`` (without the table), so that a checkpoint written after
    a resume loads wherever mmengine's would."""

    def __setstate__(self, state: dict) -> None:
        """Raises:
        pickle.UnpicklingError: a field is missing, of the wrong type, or the histories do not pair up.
        """
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f'HistoryBuffer state must be a dict, got {type(state).__name__}')
        state = {k: v for k, v in state.items() if k != 'statistics_methods'}  # mmengine's own pickles carry it
        if set(state) != set(_FIELDS) or not all(isinstance(state[k], t) for k, t in _FIELDS.items()):
            raise pickle.UnpicklingError(
                f'HistoryBuffer state has fields {sorted(state)}; expected {sorted(_FIELDS)} of types int, ndarray, '
                'ndarray'
            )
        log, count = state['_log_history'], state['_count_history']
        if (
            log.ndim != 1
            or count.ndim != 1
            or len(log) != len(count)
            or log.dtype.kind not in 'iuf'
            or count.dtype.kind not in 'iuf'
        ):
            raise pickle.UnpicklingError('HistoryBuffer histories must be two 1-D numeric arrays of equal length')
        self._set_default_statistics()  # as HistoryBuffer() does: the four built-in statistics, nothing from the file
        self.__dict__.update(max_length=state['max_length'], _log_history=log, _count_history=count)

    def __reduce__(self):
        state = {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}
        return HistoryBuffer, (), state


def history_buffer_method(owner, name: str):
    """What ``builtins.getattr`` in a weights-only checkpoint is read as: one of HistoryBuffer's statistics methods.

    Raises:
        pickle.UnpicklingError: anything else a file asks ``getattr`` for.
    """
    buffer = owner in (HistoryBuffer, CheckedHistoryBuffer)  # the file's HistoryBuffer is read as the checked one
    if not buffer or name not in STATISTICS:
        spelled = 'HistoryBuffer' if buffer else getattr(owner, '__name__', type(owner).__name__)
        raise pickle.UnpicklingError(
            f"a weights-only checkpoint asked for getattr({spelled}, {name!r}); only HistoryBuffer's statistics "
            f'methods ({", ".join(STATISTICS)}) are read'
        )
    return getattr(HistoryBuffer, name)


def _numpy_globals() -> list:
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [
        type(np.dtype(name))
        for name in (
            *('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64'),
            *('float16', 'float32', 'float64'),
        )
    ]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes]


def mmengine_safe_globals() -> list:
    """Every global an mmengine training checkpoint (model, optimizer, schedulers, message hub) refers to, for
    ``torch.serialization.add_safe_globals``: ``(object, name)`` where a name is read as pit-det's object."""
    import _codecs

    return [
        (CheckedHistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
        (history_buffer_method, 'builtins.getattr'),
        _codecs.encode,
        collections.Counter,
        *_numpy_globals(),
    ]
