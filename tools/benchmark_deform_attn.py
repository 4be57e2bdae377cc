"""Fused CPU deformable attention vs mmcv's op: ``python tools/benchmark_deform_attn.py [--sizes 400x666 ...]``."""

import sys

from pit_det.cli.benchmark_deform_attn import main

if __name__ == '__main__':
    sys.exit(main())
