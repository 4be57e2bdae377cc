"""COCO results side by side: ``python tools/coco_eval.py ANN RESULTS.json [RESULTS.json ...] [--plots DIR]``."""

import sys

from pit_det.cli.coco_eval import main

if __name__ == '__main__':
    sys.exit(main())
