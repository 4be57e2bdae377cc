"""A config for your own COCO dataset: ``python tools/dataset_config.py TRAIN.json --train-images DIR --out CFG.py``."""

import sys

from pit_det.cli.dataset_config import main

if __name__ == '__main__':
    sys.exit(main())
