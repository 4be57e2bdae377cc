"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [mmdet test.py options]``.

Equivalent to ``mim test mmdet CONFIG --checkpoint CHECKPOINT``; runs mmdet's own ``tools/test.py``.
"""

import sys

from pit_det.cli.mmdet_tools import run_mmdet_tool

if __name__ == '__main__':
    sys.exit(run_mmdet_tool('test', sys.argv[1:]))
