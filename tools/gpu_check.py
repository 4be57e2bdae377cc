"""The GPU acceptance run: ``python tools/gpu_check.py --out-dir DIR`` (see ``pit_det.cli.gpu_check``)."""

import sys

from pit_det.cli.gpu_check import main

if __name__ == '__main__':
    sys.exit(main())
