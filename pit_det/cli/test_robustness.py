"""Detection robustness: ``pit-det-test-robustness CONFIG CHECKPOINT --out-dir DIR [--corruptions ...] [--occlusion]``.

Evaluates the checkpoint on the clean test set, under the corruptions of Michaelis et al. 2019 (default: all 15)
at the chosen severities (default 1-5), and, with --occlusion, with 10/30/50% of each image occluded. Prints mAP per
condition, mPC and rPC (over what was run), writes robustness.json and robustness.png. --compare A.json B.json puts
earlier runs side by side (e.g. PiT-S against ViT-S) without evaluating anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmengine.config import DictAction

from ..evaluation.robustness import (
    CORRUPTIONS,
    REPORT_FILES,
    SEVERITIES,
    RobustnessError,
    check_request,
    evaluate_robustness,
    format_report,
    read_report,
    write_outputs,
)
from ..outputs import OutputError, check_dir_output
from . import command, config_file, parser_from_doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = parser_from_doc(__doc__)
    parser.add_argument('config', nargs='?', type=config_file, help='a config path, or a config name')
    parser.add_argument('checkpoint', nargs='?')
    parser.add_argument(
        '--corruptions',
        nargs='*',
        default=list(CORRUPTIONS),
        metavar='NAME',
        help=f'subset of: {", ".join(CORRUPTIONS)} (none: occlusion only)',
    )
    parser.add_argument('--severities', nargs='+', type=int, default=list(SEVERITIES), help='subset of 1-5')
    parser.add_argument(
        '--occlusion',
        nargs='*',
        type=float,
        metavar='RATIO',
        help='occlusion test; ratios of the image area (default 0.1 0.3 0.5)',
    )
    parser.add_argument('--out-dir', default='work_dirs/robustness', help='folder for robustness.{json,png}')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        default={},
        metavar='KEY=VALUE',
        help='config overrides, e.g. test_dataloader.dataset.data_root=DIR/',
    )
    parser.add_argument('--compare', nargs='+', metavar='JSON', help='robustness.json files to put side by side')
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.compare:
            print(format_report({path: read_report(path) for path in args.compare}))
            return 0
        if not args.config or not args.checkpoint:
            raise RobustnessError('give CONFIG and CHECKPOINT (or --compare JSON ...)')
        occlusion = [] if args.occlusion is None else (args.occlusion or [0.1, 0.3, 0.5])
        check_request(args.config, args.checkpoint, args.corruptions, args.severities, occlusion)
        check_dir_output(args.out_dir, REPORT_FILES, [('config', args.config), ('checkpoint', args.checkpoint)])
        result = evaluate_robustness(
            args.config,
            args.checkpoint,
            args.corruptions,
            args.severities,
            occlusion,
            args.out_dir,
            args.cfg_options,
            progress=lambda msg: print(msg, flush=True),
        )
    except (RobustnessError, OutputError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print('\n' + format_report({Path(args.checkpoint).name: result}))
    for path in write_outputs(result, args.out_dir):
        print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
