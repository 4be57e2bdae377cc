#!/usr/bin/env bash
# Set up pit-det: a virtual environment (or an existing one), torch, mmcv 2.1.0 with compiled ops, the package.
#
#   scripts/setup.sh                       # creates .venv in the repository (PIT_DET_VENV overrides the path)
#   PIT_DET_PYTHON=/path/bin/python scripts/setup.sh   # installs into an existing environment, keeps its torch
#
# The mmcv wheel is built once per (mmcv, torch, CUDA ops, Python) and cached under ~/.cache/pit-det/wheels.
# See scripts/build_mmcv.py for PIT_DET_CUDA_OPS and TORCH_CUDA_ARCH_LIST.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

TORCH_VERSION=${PIT_DET_TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${PIT_DET_TORCHVISION_VERSION:-0.29.1}

if [[ -n "${PIT_DET_PYTHON:-}" ]]; then
    PY=$PIT_DET_PYTHON
    "$PY" -c 'import torch, torchvision' 2>/dev/null || {
        echo "ERROR: $PY lacks torch or torchvision. An existing environment keeps its own torch: install torch and" \
             "the torchvision matching it there first (https://pytorch.org/get-started/previous-versions/)," \
             "or unset PIT_DET_PYTHON to let the setup create .venv with torch $TORCH_VERSION." >&2
        exit 1
    }
    # pit-det supports torch 2.6 - 2.14 (pyproject.toml); anything else would make pip replace the user's torch.
    "$PY" -c 'import sys, torch; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if (2, 6) <= v < (2, 15) else 1)' || {
        echo "ERROR: $PY has torch $("$PY" -c 'import torch; print(torch.__version__)'); pit-det supports 2.6 to 2.14." \
             "Use an environment with such a torch, or unset PIT_DET_PYTHON." >&2
        exit 1
    }
else
    VENV=${PIT_DET_VENV:-.venv}
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "== creating virtual environment $VENV"
        python3 -m venv "$VENV"
    fi
    PY=$VENV/bin/python
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "pit-det needs Python >= 3.10"'
pip() { "$PY" -m pip "$@"; }

if [[ -z "${PIT_DET_PYTHON:-}" ]] && ! "$PY" -c 'import torch, torchvision' 2>/dev/null; then
    echo "== installing torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION"
    pip install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi
# mmcv's setup.py and mim import pkg_resources, removed in setuptools 81.
pip install -q "setuptools<81" wheel ninja numpy

versions() {
    "$PY" -c 'import importlib.metadata as m
def v(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return "absent"
print(" ".join(f"{n}=={v(n)}" for n in ("torch", "torchvision", "setuptools")))'
}
before=$(versions)

echo "== mmcv with compiled ops"
"$PY" scripts/build_mmcv.py install

echo "== pit-det and its dependencies"
pip install -q -e ".[test,eval,export]"
# openmim's own requirements pull opendatalab/openxlab, which downgrade torch and setuptools: install mim alone;
# its usable requirements are pit-det dependencies.
pip install -q --no-deps "openmim==0.3.9"

after=$(versions)
if [[ "$before" != "$after" ]]; then
    echo "ERROR: installing the project changed torch/torchvision/setuptools: '$before' -> '$after'." >&2
    exit 1
fi
echo "torch, torchvision, setuptools unchanged by the install: $after"

"$PY" scripts/build_mmcv.py verify
echo "== fused CPU deformable attention kernel"
"$PY" -c 'from pit_det.ops.ms_deform_attn import extension_dir, load_extension
assert load_extension() is not None
print("kernel ready in", extension_dir())' || echo "WARNING: the fused CPU kernel did not compile; detectors fall back to mmcv's CPU op (slower)." >&2
"$PY" -c 'import pit_det, mmdet; print(f"pit_det {pit_det.__version__} with mmdet {mmdet.__version__}")'
echo "== setup done in $(( $(date +%s) - start )) s; python: $PY"
