"""Latency benchmark for backbones and detectors: ``python tools/benchmark.py MODEL [MODEL ...] [options]``."""

import sys

from pit_det.cli.benchmark import main

if __name__ == '__main__':
    sys.exit(main())
