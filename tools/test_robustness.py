"""Detection robustness: ``python tools/test_robustness.py CONFIG CHECKPOINT --out DIR [--corruptions ...]``."""

import sys

from pit_det.cli.test_robustness import main

if __name__ == '__main__':
    sys.exit(main())
