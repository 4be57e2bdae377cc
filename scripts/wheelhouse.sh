#!/usr/bin/env bash
# Build a wheelhouse for a machine without a package index (see scripts/wheelhouse.py --help):
#   scripts/wheelhouse.sh DIR [--python 3.12] [--platform x86_64] [--extras test,eval,export] [--skip NAMES]
# then on that machine:  PIT_DET_PYTHON=python3 scripts/setup.sh --offline DIR
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PIT_DET_PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
exec "$PY" scripts/wheelhouse.py "$@"
