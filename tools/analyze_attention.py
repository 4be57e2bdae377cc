"""Attention entropy and distance per block: ``python tools/analyze_attention.py pit-s vit-s --images DIR``."""

import sys

from pit_det.cli.analyze_attention import main

if __name__ == '__main__':
    sys.exit(main())
