#!/usr/bin/env bash
# The GPU acceptance run (pit-det-gpu-check; see docs/getting_started.md, "Checking a GPU machine"):
#   scripts/gpu_check.sh OUT_DIR [--iters 50] [--skip STEP ...] [--warmup 10] [--latency-iters 30]
# after scripts/setup.sh (or setup.sh --offline DIR) on the GPU machine. Without a GPU it stops at once.
set -euo pipefail
if [[ $# -lt 1 || $1 == -* ]]; then
    echo "usage: scripts/gpu_check.sh OUT_DIR [--iters N] [--skip STEP ...] [--warmup N] [--latency-iters N]" >&2
    exit 2
fi
out=$(realpath -m "$1"); shift
cd "$(dirname "$0")/.."
PY=${PIT_DET_PYTHON:-${PIT_DET_VENV:-.venv}/bin/python}
if [[ ! -x "$PY" ]]; then
    echo "ERROR: no Python at $PY: run scripts/setup.sh first (--offline DIR without an index), or set" \
         "PIT_DET_PYTHON to the environment it set up." >&2
    exit 1
fi
# torch alone answers in seconds; importing pit_det (mmdet, mmengine) takes longer. The command checks the rest.
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "ERROR: the GPU check needs an NVIDIA GPU that torch can use; $PY sees none" \
         "(torch.cuda.is_available() is False). Run it on the GPU machine, after scripts/setup.sh there." >&2
    exit 1
fi
exec "$PY" -m pit_det.cli.gpu_check --out-dir "$out" "$@"
