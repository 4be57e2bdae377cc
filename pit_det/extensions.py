"""Everything pit-det changes in other libraries, in one place, each through that library's extension point.

Importing ``pit_det`` calls :func:`install` once:

* **torch**: ``torch.serialization.add_safe_globals`` with what an mmengine checkpoint holds
  (:func:`pit_det.checkpoint.serialization.mmengine_safe_globals`), so that ``torch.load(weights_only=True)``
  (torch >= 2.6's default, which mmengine relies on) reads mmengine checkpoints, a ``HistoryBuffer`` as a checked
  one and ``getattr`` as HistoryBuffer's statistics methods only.
* **mmengine**: ``CheckpointLoader.register_scheme`` for local files, ``hf-hub:`` tags and URLs
  (:data:`pit_det.checkpoint.sources.LOADERS`, read weights-only with clear errors; ``force=True`` where they take
  over mmengine's own local and http loaders).

The classes register themselves where they are defined, in mmdet's and mmengine's registries (``MODELS``: PiT, the
ViT baseline, ``FastDeformableDETR``, ``FastDINO``; ``TRANSFORMS``: the robustness benchmark's two; ``RUNNERS``:
``CheckedRunner``; ``OPTIM_WRAPPERS``: ``BF16AutocastOptimWrapper``). And a :class:`~pit_det.runner.CheckedRunner`,
when built, sets Python's ``sys.excepthook`` (:func:`show_without_traceback`): mmdet's own ``tools/train.py`` and
``tools/test.py``, which ``mim train`` and ``mim test`` run, catch nothing, and this is Python's place for how an
uncaught exception is shown.
Nothing else is changed; ``tests/test_layout.py`` fails on any assignment to an attribute of torch, mmengine, mmdet,
mmcv, timm or sys in ``pit_det/``. docs/extensions.md lists the same.
"""

from __future__ import annotations

import sys

import torch
from mmengine.runner import CheckpointLoader

from .checkpoint.serialization import mmengine_safe_globals
from .checkpoint.sources import LOADERS


def install() -> None:
    """The allow-list and the checkpoint loaders (idempotent: both are keyed by name)."""
    torch.serialization.add_safe_globals(mmengine_safe_globals())
    for prefixes, loader in LOADERS.items():
        CheckpointLoader.register_scheme(prefixes=prefixes, loader=loader, force=True)


def show_without_traceback(errors: tuple[type[BaseException], ...]) -> None:
    """Make an uncaught exception of ``errors`` end the process with ``error: MESSAGE`` (exit status 1, as for any
    uncaught exception) instead of a traceback; every other exception goes to the hook that was there. Only
    uncaught exceptions reach the hook: code that catches these errors is unaffected."""
    previous = sys.excepthook
    if getattr(previous, 'pit_det_errors', None) == errors:
        return

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, errors):
            print(f'error: {exc}', file=sys.stderr)
        else:
            previous(exc_type, exc, tb)

    hook.pit_det_errors = errors
    sys.excepthook = hook
