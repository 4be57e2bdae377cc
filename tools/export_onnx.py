"""Export a detector for CPU runtimes (ONNX, OpenVINO IR, INT8), checked.

``python tools/export_onnx.py CONFIG CHECKPOINT --out FILE --size HxW [--format F]``.
"""

import sys

from pit_det.cli.export_onnx import main

if __name__ == '__main__':
    sys.exit(main())
