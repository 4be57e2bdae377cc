"""Train a config with pit_det registered: ``python tools/train.py CONFIG [mmdet train.py options]``.

Equivalent to ``mim train mmdet CONFIG``; this runs mmdet's own ``tools/train.py`` shipped in its wheel.
"""

import sys

from pit_det.cli.mmdet_tools import run_mmdet_tool

if __name__ == '__main__':
    sys.exit(run_mmdet_tool('train', sys.argv[1:]))
