"""Fused CPU deformable attention vs mmcv's op: ``pit-det-benchmark-deform-attn [--size 400x666 ...]``.

Times the op alone at each --size, the PiT-S detector's predict (--config) at the first, and a training iteration of
the demo detector (--train-config), each with mmcv's op and with the fused kernel; writes --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..benchmark import BenchmarkError, environment
from ..benchmark.deform_attn import bench_op, bench_predict, bench_train_iter
from ..outputs import OutputError, check_file_output, write_text
from . import command, config_file, image_size, parser_from_doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = parser_from_doc(__doc__)
    parser.add_argument(
        '--size',
        nargs='+',
        type=image_size,
        default=[(400, 666), (800, 1333)],
        help='HxW, one or more (default 400x666 800x1333)',
    )
    parser.add_argument('--config', default='pit_s_deformable_detr', type=config_file)
    parser.add_argument('--train-config', default='demo/deformable-detr_pit-ti_synthetic_cpu', type=config_file)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--skip', nargs='*', default=[], choices=['op', 'predict', 'train'])
    parser.add_argument('--out', default='work_dirs/benchmark_deform_attn.json')
    return parser.parse_args(argv)


def _is_report(path: Path) -> bool:
    """Whether ``path`` is a report of this benchmark (a JSON object with its ``environment``)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and 'environment' in data


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sizes = args.size
        if args.iters < 1 or args.warmup < 0:
            raise BenchmarkError('--iters must be >= 1 and --warmup >= 0')
        for option, path in (('--config', args.config), ('--train-config', args.train_config)):
            if not Path(path).is_file():
                raise BenchmarkError(f'{option} {path} not found')
        check_file_output(
            args.out, [('config', args.config), ('train config', args.train_config)], option='--out', own=_is_report
        )
    except (BenchmarkError, OutputError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    from ..ops import load_extension

    if load_extension() is None:
        print('error: the fused kernel is not available (see the warning above); nothing to compare', file=sys.stderr)
        return 1

    def log(msg):
        print(msg, flush=True)

    result = dict(environment=environment('cpu'))
    if 'op' not in args.skip:
        result['op'] = bench_op(sizes, args.warmup, args.iters, log)
    if 'predict' not in args.skip:
        result['predict'] = bench_predict(args.config, sizes[0], args.warmup, args.iters, log)
    if 'train' not in args.skip:
        result['train'] = bench_train_iter(args.train_config, args.warmup, args.iters, log)
    write_text(args.out, json.dumps(result, indent=2))
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
