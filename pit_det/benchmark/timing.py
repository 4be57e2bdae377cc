"""Interleaved timing and memory measurement shared by the benchmarks.

Calls are timed round-robin (one call of each per round) so that machine noise hits all of them alike and the
ratios between them are fair.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from torch import nn


def interleaved(
    calls: dict[str, Callable[[], object]],
    warmup: int,
    iters: int,
    sync: Callable[[], None] = lambda: None,
    on_round: Callable[[int, dict[str, list[float]]], None] | None = None,
) -> dict[str, list[float]]:
    """Time every call ``iters`` times, one of each per round, after ``warmup`` untimed rounds.

    Args:
        calls: name -> zero-argument callable.
        sync: called before starting and after stopping each clock (CUDA synchronisation on GPU).
        on_round: called after each timed round with its 1-based index and the times so far.

    Returns:
        name -> the ``iters`` wall times in milliseconds, in order.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(warmup):
        for call in calls.values():
            call()
    sync()
    for i in range(iters):
        for name, call in calls.items():
            sync()
            start = time.perf_counter()
            call()
            sync()
            times[name].append((time.perf_counter() - start) * 1000)
        if on_round is not None:
            on_round(i + 1, times)
    return times


class PartTimer:
    """Wall time (ms) of each named child of ``model`` per forward, through forward hooks; ``times[name]`` keeps the
    last ``keep`` calls (the timed rounds, not the warm-up). ``sync`` runs at each clock (CUDA synchronisation)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...], keep: int, sync: Callable[[], None] = lambda: None):
        self.times: dict[str, list[float]] = {}
        self._handles = []
        for name in names:
            module = getattr(model, name, None)
            if not isinstance(module, nn.Module):
                continue
            self.times[name] = []
            self._handles.append(module.register_forward_pre_hook(self._start_hook(name)))
            self._handles.append(module.register_forward_hook(self._stop_hook(name)))
        self._keep, self._sync, self._started = keep, sync, {}

    def _start_hook(self, name: str):
        def start(module, args):
            self._sync()
            self._started[name] = time.perf_counter()

        return start

    def _stop_hook(self, name: str):
        def stop(module, args, output):
            self._sync()
            times = self.times[name]
            times.append((time.perf_counter() - self._started.pop(name)) * 1000)
            del times[: -self._keep]

        return stop

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in times.items()}


def _status_kib(field_name: str) -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field_name + ':'):
            return int(line.split()[1])
    return 0


def can_measure_rss() -> bool:
    return Path('/proc/self/clear_refs').exists()


def rss_growth_mib(call: Callable[[], object]) -> float:
    """Growth of the peak resident set (MiB) during ``call()``: VmHWM reset to the current RSS, then read."""
    Path('/proc/self/clear_refs').write_text('5')
    base = _status_kib('VmRSS')
    call()
    return max(_status_kib('VmHWM') - base, 0) / 1024


def release_freed_memory() -> None:
    """Hand memory that the process freed back to the system (glibc's ``malloc_trim``), so that a later
    :func:`rss_growth_mib` sees the peak of its own call rather than pages an earlier call left resident."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library('c')
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass
