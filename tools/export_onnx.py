"""Export a detector to ONNX, checked in onnxruntime: ``python tools/export_onnx.py CONFIG CKPT OUT.onnx --shape HxW``."""
import sys

from pit_det.cli.export_onnx import main

if __name__ == '__main__':
    sys.exit(main())
