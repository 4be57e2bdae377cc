"""The GPU acceptance run: what a first slot on a GPU machine checks (``scripts/gpu_check.sh OUT_DIR``).

Each check is a function of its device so that it also runs on the CPU (the tests run them there, small); only
:func:`require_gpu` insists on a GPU. Every check returns a JSON-able dict with ``ok`` and what it measured.
"""

from __future__ import annotations

from .checks import AcceptanceError, kernel_parity, latency_table, mim_test, require_gpu, run_cuda_tests, training_check

__all__ = [
    'AcceptanceError',
    'kernel_parity',
    'latency_table',
    'mim_test',
    'require_gpu',
    'run_cuda_tests',
    'training_check',
]
