"""Draw detections: ``pit-det-infer CONFIG CHECKPOINT IMAGE --out OUT.png``.

--path chooses how the detector runs (docs/inference.md); the
exported-graph paths take the file from pit-det-export-onnx as --model-file, checked against the config's classes
before the model is built and against the checkpoint's weights when it is opened.
"""

from __future__ import annotations

import argparse
import sys

from mmengine.config import Config

from ..checkpoint import CheckpointMismatchError, CheckpointReadError
from ..draw import draw_detections
from ..models.inference import PATHS, InferenceOptions
from . import command, config_file, parser_from_doc


def parse_args(argv=None) -> argparse.Namespace:
    parser = parser_from_doc(__doc__)
    parser.add_argument('config', type=config_file, help='a config path, or a config name')
    parser.add_argument('checkpoint')
    parser.add_argument('image')
    parser.add_argument('--out', required=True, help='output picture (.png or .jpg)')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--path',
        default='eager',
        choices=list(PATHS),
        help='how the detector runs (the exported-graph paths onnxruntime, openvino and openvino-int8 '
        'need --model-file)',
    )
    parser.add_argument(
        '--model-file',
        help='the file from pit-det-export-onnx: ONNX (onnxruntime, openvino) or OpenVINO IR .xml '
        '(openvino, openvino-int8)',
    )
    parser.add_argument(
        '--precision', help="OpenVINO's inference precision (f32, bf16, f16; default OpenVINO's choice for this CPU)"
    )
    parser.add_argument('--force', action='store_true', help='replace an existing --out file (never an input)')
    return parser.parse_args(argv)


@command
def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if not 0 <= args.score_thr <= 1:
            raise ValueError(f'--score-thr {args.score_thr}: give a score between 0 and 1')
        given = dict(path=args.path, model_file=args.model_file, precision=args.precision)
        inference = InferenceOptions.parse(
            {k: v for k, v in given.items() if v is not None},
            spell=lambda option, value=None: f'--{option.replace("_", "-")}' + ('' if value is None else f' {value}'),
        )
        cfg = Config.fromfile(args.config)  # the one read of the config: the detector is built from it
        path = inference.build()
        if path.runs_file:  # the file against the config's classes before any model is built; its weights when
            try:  # the detector opens it
                path.check_file(cfg.model.bbox_head.num_classes, args.config)
            except CheckpointMismatchError as exc:
                raise CheckpointMismatchError(f'--model-file {exc}') from None
        count = draw_detections(
            cfg,
            args.checkpoint,
            args.image,
            args.out,
            args.score_thr,
            args.device,
            inference=inference,
            force=args.force,
        )
    except (FileNotFoundError, ImportError, ValueError, CheckpointMismatchError, CheckpointReadError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'{count} detections (score >= {args.score_thr}) drawn to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
