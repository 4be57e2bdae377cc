"""Where the detector looks: ``python tools/analyze_sampling.py CONFIG CHECKPOINT IMAGE [IMAGE ...] --out DIR``."""

import sys

from pit_det.cli.analyze_sampling import main

if __name__ == '__main__':
    sys.exit(main())
