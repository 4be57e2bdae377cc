"""Export a Deformable DETR for CPU runtimes and check it: ``pit-det-export-onnx CONFIG CKPT --out OUT --size HxW``.

Formats (--format):
  onnx            OUT.onnx, run by onnxruntime or OpenVINO (pit-det-infer --path onnxruntime|openvino)
  openvino        OUT.xml + OUT.bin, OpenVINO's IR in float; OpenVINO picks the precision for the CPU (bf16 where
                  the CPU has bf16 instructions) unless the run sets it (--path openvino)
  openvino-int8   OUT.xml + OUT.bin, INT8 by NNCF's post-training quantisation, calibrated on --calibration-images
                  images of the config's training set (a seeded pick, through the test pipeline); the sampling
                  offsets, attention weights, box regression and classification stay in floating point
                  (--path openvino-int8)

The graph takes ``image`` (N, 3, H, W) float32 RGB 0-255 of any size (traced at --size), normalises inside and
returns ``boxes`` (N, K, 4) xyxy in input pixels, ``scores`` (N, K) and ``labels`` (N, K) int64, best first. The file
records the config, the checkpoint, the sha256 of the weights, the classes, the traced size and its format; a
detector refuses a file whose weights or classes are not its own. The file is run in its runtime (onnxruntime for
onnx, OpenVINO f32 for the IRs) on --image (default: a generated scene) and its mirror image at --size, and on the
image at two more sizes (three quarters of the height, and the smallest 1:4 size whose coarsest level is one pixel
high), and compared with mmdet's predict of each: the top-k boxes within 0.05 px, scores within
1e-4, identical labels; a float file that fails the check is not kept. INT8 changes the numbers by design: its
differences are printed, and its accuracy is measured with mim test (docs/deployment.md). Needs
``pip install "pit-det[export]"``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..checkpoint import CheckpointMismatchError, CheckpointReadError
from ..deploy.metadata import FORMATS
from ..deploy.onnx import ExportError
from ..deploy.pipeline import ExportRequest, check_request, export_checked
from ..outputs import OutputError
from . import command, config_file, image_size, parser_from_doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = parser_from_doc(__doc__)
    parser.add_argument('config', type=config_file, help='a config path, or a config name')
    parser.add_argument('checkpoint')
    parser.add_argument(
        '--out',
        required=True,
        help='the file to write: .onnx (--format onnx) or .xml (the IRs, '
        'with a .bin beside it); replaces an earlier export, any other '
        'existing file only with --force',
    )
    parser.add_argument('--format', default='onnx', help=f'one of {", ".join(FORMATS)} (default onnx)')
    parser.add_argument(
        '--size',
        type=image_size,
        required=True,
        help='HxW the graph is traced and checked at, e.g. 400x666 (it runs at any size)',
    )
    parser.add_argument('--image', help='image for the check (default: a generated scene)')
    parser.add_argument(
        '--calibration-images',
        type=int,
        default=None,
        help='openvino-int8: images of the training set to calibrate with (default 64)',
    )
    parser.add_argument('--seed', type=int, default=0, help='openvino-int8: seed of the calibration pick')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--topk', type=int, default=20, help='detections compared (default 20)')
    parser.add_argument(
        '--force',
        action='store_true',
        help='replace an existing --out that is not an export of this tool (never an input)',
    )
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    request = ExportRequest(**vars(args))
    try:
        check_request(request)
        from mmengine.config import Config

        cfg = Config.fromfile(request.config)  # the one read of the config: the detector is built from it
        export_checked(request, cfg, log=lambda line: print(line, flush=True))
    except (
        ExportError,
        OutputError,
        CheckpointMismatchError,
        CheckpointReadError,
        FileNotFoundError,
        ValueError,
    ) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'wrote {args.out}' + (f' and {Path(args.out).with_suffix(".bin")}' if args.format != 'onnx' else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
