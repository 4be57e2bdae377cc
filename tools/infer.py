"""Draw detections: ``python tools/infer.py CONFIG CHECKPOINT IMAGE --out OUT.png``."""

import sys

from pit_det.cli.infer import main

if __name__ == '__main__':
    sys.exit(main())
