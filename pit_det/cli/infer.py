"""Draw detections: ``pit-det-infer CONFIG CHECKPOINT IMAGE --out OUT.png``."""
from __future__ import annotations

import argparse
import sys

from . import config_file
from ..draw import draw_detections
from ..models import CheckpointMismatchError, CheckpointReadError
from ..models.detectors import INFERENCE_PATHS
from ..models.runtimes import RUNTIMES, openvino_precision


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('config', type=config_file, help='a config path, or a config name')
    parser.add_argument('checkpoint')
    parser.add_argument('image')
    parser.add_argument('--out', required=True, help='output picture (.png or .jpg)')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--path', default='eager', choices=INFERENCE_PATHS,
                        help='how the detector runs (the exported-graph paths onnxruntime, openvino and openvino-int8 '
                             'need --model-file)')
    parser.add_argument('--model-file', '--onnx', dest='model_file',
                        help='the file from pit-det-export-onnx: ONNX (onnxruntime, openvino) or OpenVINO IR .xml '
                             '(openvino, openvino-int8)')
    parser.add_argument('--precision', help='OpenVINO\'s inference precision (f32, bf16, f16; default OpenVINO\'s choice '
                                            'for this CPU)')
    parser.add_argument('--force', action='store_true', help='replace an existing --out file (never an input)')
    return parser.parse_args(argv)


def check_exported_file(config: str, path: str, model_file: str) -> None:
    """The ``--model-file`` exists, is an export of pit-det that ``--path`` runs, and has the config's number of
    classes; its weights are checked against the checkpoint's when the detector opens it."""
    from mmengine.config import Config

    from ..models.runtimes import classes_mismatch, exported_metadata, format_mismatch
    meta = exported_metadata(model_file)
    num_classes = Config.fromfile(config).model.bbox_head.num_classes
    problem = format_mismatch(meta, model_file, path) or classes_mismatch(meta, model_file, num_classes, config)
    if problem:
        raise CheckpointMismatchError(f'--model-file {problem}')


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import pit_det  # noqa: F401  (registers PiT for configs without custom_imports)
        if not 0 <= args.score_thr <= 1:
            raise ValueError(f'--score-thr {args.score_thr}: give a score between 0 and 1')
        if (args.path in RUNTIMES) != bool(args.model_file):
            raise ValueError(f'--model-file FILE goes with --path {"/".join(RUNTIMES)} (and only with them)')
        if args.precision and not args.path.startswith('openvino'):
            raise ValueError('--precision goes with --path openvino or openvino-int8')
        if args.precision:
            args.precision = openvino_precision(args.precision)
        if args.model_file:
            check_exported_file(args.config, args.path, args.model_file)
        inference = dict(path=args.path, **({'model_file': args.model_file} if args.model_file else {}),
                         **({'precision': args.precision} if args.precision else {}))
        count = draw_detections(args.config, args.checkpoint, args.image, args.out, args.score_thr, args.device,
                                inference=inference, force=args.force)
    except (FileNotFoundError, ImportError, ValueError, CheckpointMismatchError, CheckpointReadError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'{count} detections (score >= {args.score_thr}) drawn to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
