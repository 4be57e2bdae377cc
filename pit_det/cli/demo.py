"""The end-to-end demo: ``pit-det-demo`` generates synthetic data, trains, evaluates and draws predictions.

It writes the data to --data-root and the run (checkpoints, logs, the evaluation, the pictures) to --work-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..demo import run_demo
from . import command, parser_from_doc


def epochs(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = parser_from_doc(__doc__)
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/synthetic')
    parser.add_argument('--epochs', type=epochs, default=None, help='override the config (default: its max_epochs)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ..runner import STOP_ERRORS

    try:
        result = run_demo(args.work_dir, args.data_root, args.epochs, args.seed)
    except (FileExistsError, ValueError, *STOP_ERRORS) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    m = result['metrics']
    print(
        f'\nval bbox mAP {m.get("coco/bbox_mAP", float("nan")):.3f}, '
        f'mAP_50 {m.get("coco/bbox_mAP_50", float("nan")):.3f} with the best checkpoint (epoch {result["epoch"]}), '
        f'after {result["train_seconds"]:.0f} s of training'
    )
    print(
        f'checkpoint: {result["checkpoint"]}\nmetrics:    {Path(args.work_dir) / "metrics.json"}\n'
        f'picture:    {result["picture"]} ({result["detections_drawn"]} detections drawn)'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
