#!/usr/bin/env bash
# Build a wheelhouse for a machine without a package index (see scripts/wheelhouse.py --help):
#   scripts/wheelhouse.sh DIR [--python 3.12] [--platform x86_64] [--extras test,eval,export,peers] [--skip NAMES]
# then on that machine:  PIT_DET_PYTHON=python3 scripts/setup.sh --offline DIR
# Any Python >= 3.10 with pip runs it: the checkout's .venv when there is one, else python3 (PIT_DET_PYTHON wins).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=${PIT_DET_PYTHON:-$( [[ -x "$here/../.venv/bin/python" ]] && echo "$here/../.venv/bin/python" || echo python3 )}
exec "$PY" "$here/wheelhouse.py" "$@"
