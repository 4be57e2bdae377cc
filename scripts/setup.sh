#!/usr/bin/env bash
# Set up pit-det: a virtual environment (or an existing one), torch, mmcv 2.1.0 with compiled ops, the package.
#
#   scripts/setup.sh                       # creates .venv in the repository (PIT_DET_VENV overrides the path)
#   PIT_DET_PYTHON=/path/bin/python scripts/setup.sh   # installs into an existing environment, keeps its torch
#   scripts/setup.sh --extras none         # without the extras (what `make demo` runs); default test,eval,export,peers
#   scripts/setup.sh --offline DIR         # no package index: everything from a wheelhouse (scripts/wheelhouse.sh)
#
# --offline DIR (or PIT_DET_WHEELHOUSE=DIR) installs with pip --no-index from DIR alone and keeps the
# environment's torch; a new .venv then sees the system's packages (torch among them). The extras default to the
# wheelhouse's. The mmcv wheel is built once per (mmcv, torch, CUDA ops, Python) and cached under
# ~/.cache/pit-det/wheels; with a GPU and nvcc it gets CUDA ops for the GPUs present (scripts/build_mmcv.py).
# mmcv's build, the fused kernel's and the installation of the other packages run side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
OFFLINE=${PIT_DET_WHEELHOUSE:-}
EXTRAS=${PIT_DET_EXTRAS:-}
while [[ $# -gt 0 ]]; do
    case $1 in
        --offline) [[ $# -ge 2 ]] || { echo "ERROR: --offline needs a folder (a wheelhouse)" >&2; exit 2; }
                   OFFLINE=$2; shift 2 ;;
        --extras) [[ $# -ge 2 ]] || { echo "ERROR: --extras needs a list, e.g. test,eval,export or none" >&2; exit 2; }
                  EXTRAS=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "ERROR: unknown argument '$1'." >&2; usage >&2; exit 2 ;;
    esac
done

TORCH_VERSION=${PIT_DET_TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${PIT_DET_TORCHVISION_VERSION:-0.29.1}

if [[ -n "$OFFLINE" ]]; then
    [[ -d "$OFFLINE" ]] || { echo "ERROR: --offline $OFFLINE is not a folder: give the wheelhouse that" \
                                  "scripts/wheelhouse.sh built." >&2; exit 2; }
    OFFLINE=$(cd "$OFFLINE" && pwd)
    # pip reads these before its configuration: no index at all, the wheelhouse the only source. pip splits
    # PIP_FIND_LINKS on whitespace ("DIR WITH SPACE" would be three folders, two never named): the folder goes as a
    # file: URL, its spaces percent-encoded.
    export PIP_NO_INDEX=1 PIP_FIND_LINKS=$("${PIT_DET_PYTHON:-python3}" -c 'import pathlib, sys; print(pathlib.Path(sys.argv[1]).as_uri())' "$OFFLINE")
    unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL
fi

if [[ -n "${PIT_DET_PYTHON:-}" ]]; then
    PY=$PIT_DET_PYTHON
    "$PY" -c 'import torch, torchvision' 2>/dev/null || {
        echo "ERROR: $PY lacks torch or torchvision. An existing environment keeps its own torch: install torch and" \
             "the torchvision matching it there first (https://pytorch.org/get-started/previous-versions/)," \
             "or unset PIT_DET_PYTHON to let the setup create .venv with torch $TORCH_VERSION." >&2
        exit 1
    }
    # the ranges of pyproject.toml: anything else would make pip replace the user's torch
    outside=$("$PY" scripts/requirements.py --check-installed torch torchvision 2>&1) || {
        echo "ERROR: $PY has $(echo "$outside" | paste -sd ';' -). Use an environment with such a torch, or unset" \
             "PIT_DET_PYTHON." >&2
        exit 1
    }
else
    VENV=${PIT_DET_VENV:-.venv}
    if [[ ! -x "$VENV/bin/python" ]]; then
        if [[ -n "$OFFLINE" ]]; then
            echo "== creating virtual environment $VENV (seeing the system's packages: no index to fetch torch from)"
            python3 -m venv --system-site-packages "$VENV"
        else
            echo "== creating virtual environment $VENV"
            python3 -m venv "$VENV"
        fi
    fi
    PY=$VENV/bin/python
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "pit-det needs Python >= 3.10"'
pip() { "$PY" -m pip "$@"; }

if [[ -n "$OFFLINE" ]]; then
    "$PY" scripts/wheelhouse.py check "$OFFLINE" ${EXTRAS:+--extras "$EXTRAS"}
    [[ -n "$EXTRAS" ]] || EXTRAS=$("$PY" scripts/wheelhouse.py check "$OFFLINE" --print-extras)
fi
EXTRAS=${EXTRAS:-test,eval,export,peers}
[[ "$EXTRAS" == none ]] && EXTRAS=
if [[ -z "${PIT_DET_PYTHON:-}" ]] && ! "$PY" -c 'import torch, torchvision' 2>/dev/null; then
    if [[ -n "$OFFLINE" ]]; then
        echo "ERROR: no torch in $PY or the system's Python, and an offline setup installs none (the wheelhouse" \
             "leaves torch out). Install torch and torchvision, or point PIT_DET_PYTHON at an environment that" \
             "has them." >&2
        exit 1
    fi
    echo "== installing torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION"
    pip install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi
# mmcv's setup.py and mim import pkg_resources, removed in setuptools 81. The installed torch is named too, so
# that setuptools also meets what torch asks (torch 2.14 wants >= 77): the later steps then leave it alone.
kept=$("$PY" -c 'import importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in ("torch", "torchvision")))')
pip install -q "setuptools<81" wheel ninja numpy $kept

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

logs=$(mktemp -d)
# a step that fails stops the setup: the builds still running beside it stop with it
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$logs"' EXIT
elapsed() { echo "$(( $(date +%s) - start )) s"; }
# Three independent steps side by side: mmcv's build (the longest; its ops need only torch), the fused kernel's
# (torch alone: pit_det/ops/build.py is loaded by its path) and the packages that need neither.
echo "== mmcv with compiled ops, the fused CPU kernel and the other packages, side by side (logs follow each)"
"$PY" scripts/build_mmcv.py build >"$logs/mmcv" 2>&1 &
mmcv_job=$!
"$PY" -c 'import importlib.util as u, sys
spec = u.spec_from_file_location("pit_det_kernel_build", sys.argv[1])
build = u.module_from_spec(spec)
spec.loader.exec_module(build)
build.compile_extension()
print("kernel ready in", build.extension_dir())' pit_det/ops/build.py >"$logs/kernel" 2>&1 &
kernel_job=$!
# pit-det's requirements but mmcv (being built) and torch (kept), then mim alone: openmim's own requirements pull
# opendatalab/openxlab, which downgrade torch and setuptools; its usable requirements are pit-det dependencies.
"$PY" scripts/requirements.py --without torch torchvision mmcv ${EXTRAS:+--extras "$EXTRAS"} >"$logs/requirements"
# byte-compiled as pip installs them: where PYTHONDONTWRITEBYTECODE is set, nothing is compiled later, and every
# import of mmdet and torch would compile them again (twice as slow)
pip install -q -r "$logs/requirements"
pip install -q --no-deps "openmim==0.3.9"
echo "packages installed ($(elapsed))"
mmcv_rc=0; wait $mmcv_job || mmcv_rc=$?
cat "$logs/mmcv"
if [[ $mmcv_rc -ne 0 ]]; then
    wait $kernel_job || true
    echo "ERROR: the mmcv build failed (its log is above)." >&2
    exit 1
fi
"$PY" scripts/build_mmcv.py install
echo "mmcv installed ($(elapsed))"
pip install -q -e ".${EXTRAS:+[$EXTRAS]}"

after=$(versions)
if [[ "$before" != "$after" ]]; then
    echo "ERROR: installing the project changed torch/torchvision/setuptools: '$before' -> '$after'." >&2
    exit 1
fi
echo "torch, torchvision, setuptools unchanged by the install: $after"

"$PY" scripts/build_mmcv.py verify
echo "== fused CPU deformable attention kernel"
if wait $kernel_job; then
    tail -n 1 "$logs/kernel"
else
    cat "$logs/kernel" >&2
    echo "WARNING: the fused CPU kernel did not compile; detectors fall back to mmcv's CPU op (slower)." >&2
fi
"$PY" -c 'import pit_det, mmdet; print(f"pit_det {pit_det.__version__} with mmdet {mmdet.__version__}")'
echo "== setup done in $(elapsed); python: $PY; extras: ${EXTRAS:-none}"
