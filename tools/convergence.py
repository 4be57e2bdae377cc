"""The two CPU demos side by side, AP per epoch: ``python tools/convergence.py --out-dir DIR [--epochs N]``."""

import sys

from pit_det.cli.convergence import main

if __name__ == '__main__':
    sys.exit(main())
