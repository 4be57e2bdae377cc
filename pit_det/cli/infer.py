"""Draw detections: ``pit-det-infer CONFIG CHECKPOINT IMAGE --out OUT.png``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import config_file
from ..draw import draw_detections
from ..models import CheckpointMismatchError, CheckpointReadError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('config', type=config_file, help='a config path, or a config name')
    parser.add_argument('checkpoint')
    parser.add_argument('image')
    parser.add_argument('--out', required=True, help='output picture (.png or .jpg)')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--path', default='eager', choices=['eager', 'bf16', 'compile', 'onnxruntime'],
                        help='how the detector runs (onnxruntime needs --onnx, exported at the image\'s test size)')
    parser.add_argument('--onnx', help='the file from pit-det-export-onnx, for --path onnxruntime')
    parser.add_argument('--force', action='store_true', help='replace an existing --out file (never an input)')
    return parser.parse_args(argv)


def check_onnx(config: str, onnx_file: str) -> None:
    """The ``--onnx`` file exists, is an export of pit-det, and has the config's number of classes; its weights are
    checked against the checkpoint's when the detector opens it."""
    from mmengine.config import Config

    from ..models.detectors import exported_metadata
    meta = exported_metadata(onnx_file)
    if not Path(config).is_file():
        raise FileNotFoundError(f'config not found: {config}')
    num_classes = Config.fromfile(config).model.bbox_head.num_classes
    if meta['pit_det.num_classes'] != str(num_classes):
        raise CheckpointMismatchError(
            f'--onnx {onnx_file} was exported from a detector of {meta["pit_det.num_classes"]} classes '
            f'({meta["pit_det.config"]}); {config} has {num_classes}: export this config and checkpoint with '
            f'pit-det-export-onnx {config} CHECKPOINT OUT.onnx --shape HxW')


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import pit_det  # noqa: F401  (registers PiT for configs without custom_imports)
        if not 0 <= args.score_thr <= 1:
            raise ValueError(f'--score-thr {args.score_thr}: give a score between 0 and 1')
        if (args.path == 'onnxruntime') != bool(args.onnx):
            raise ValueError('--onnx FILE goes with --path onnxruntime (and only with it)')
        if args.onnx:
            check_onnx(args.config, args.onnx)
        inference = dict(path=args.path, **({'onnx_file': args.onnx} if args.onnx else {}))
        count = draw_detections(args.config, args.checkpoint, args.image, args.out, args.score_thr, args.device,
                                inference=inference, force=args.force)
    except (FileNotFoundError, ImportError, ValueError, CheckpointMismatchError, CheckpointReadError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'{count} detections (score >= {args.score_thr}) drawn to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
