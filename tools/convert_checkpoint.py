"""Convert a PiT checkpoint to an mmdet-ready file: ``python tools/convert_checkpoint.py SRC DST [--arch s]``."""

import sys

from pit_det.cli.convert import main

if __name__ == '__main__':
    sys.exit(main())
