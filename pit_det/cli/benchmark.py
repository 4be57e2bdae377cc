"""Latency benchmark for backbones and detectors: ``pit-det-benchmark MODEL [MODEL ...] [options]``."""

from __future__ import annotations

import argparse
import sys

import torch
from mmengine.config import DictAction

from ..benchmark import (
    MODES,
    REPORT_FILES,
    BenchmarkError,
    builders,
    environment,
    format_limits,
    format_parts,
    format_table,
    ratios,
    run_benchmark,
    write_outputs,
)
from ..ops import CPU_DEFORM_ATTN
from ..outputs import OutputError, check_dir_output
from . import command, image_size, parser_from_doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = parser_from_doc(__doc__, epilog=builders.__doc__.split('\n\n', 1)[1])
    parser.add_argument('models', nargs='+', help='model specs (see below)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument(
        '--size',
        nargs='+',
        type=image_size,
        default=[(400, 666), (800, 1333)],
        help="HxW, one or more (default: the paper's 400x666 800x1333)",
    )
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument(
        '--mode',
        default='backbone',
        choices=MODES,
        help='backbone alone, detector without post-processing (forward), predict, or one training '
        'iteration (train: loss and backward on two generated boxes per image)',
    )
    parser.add_argument('--checkpoint', help='weights for detector configs (default: random weights)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        default={},
        metavar='KEY=VALUE',
        help='merged into every detector config, e.g. model.backbone.with_cp=True',
    )
    parser.add_argument('--cpu-deform-attn', default='fused', choices=CPU_DEFORM_ATTN)
    parser.add_argument('--threads', type=int, help="torch CPU threads, >= 1 (default: torch's)")
    parser.add_argument(
        '--no-macs',
        action='store_true',
        help='skip MAC counting and the matrix-product probes (no GMACs, GMAC/s or %% of peak)',
    )
    parser.add_argument(
        '--by-part',
        action='store_true',
        help="also time and count a detector's backbone, neck, encoder, decoder and head (forward "
        'or predict, eager paths); with --plot, the figure is by part',
    )
    parser.add_argument('--reference', help="print every model's median latency ratio to this one (one of MODELS)")
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    parser.add_argument('--plot', action='store_true', help='also write benchmark.png')
    parser.add_argument('--quick', action='store_true', help='smoke run: 1 warm-up, 2 iterations, 64x96')
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.warmup, args.iters, args.size = 1, 2, [(64, 96)]
    try:
        if args.threads is not None and args.threads < 1:
            raise BenchmarkError(f'--threads {args.threads}: give a number of threads >= 1, or leave it out')
        if args.reference is not None and args.reference not in args.models:
            raise BenchmarkError(
                f'--reference {args.reference!r} is not one of the models to measure '
                f'({", ".join(args.models)}); name one of them'
            )
        check_dir_output(
            args.out_dir,
            REPORT_FILES,
            [('checkpoint', args.checkpoint)]
            + [('config', m.split('@')[0]) for m in args.models if m.split('@')[0].endswith('.py')],
            option='--out-dir',
        )
        if args.threads:
            torch.set_num_threads(args.threads)
        results = run_benchmark(
            args.models,
            args.size,
            progress=lambda msg: print(msg, flush=True),
            device=args.device,
            batch=args.batch,
            warmup=args.warmup,
            iters=args.iters,
            mode=args.mode,
            checkpoint=args.checkpoint,
            cpu_deform_attn=args.cpu_deform_attn,
            count_macs=not args.no_macs,
            cfg_options=args.cfg_options or None,
            by_part=args.by_part,
        )
    except (BenchmarkError, OutputError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    env = environment(args.device)
    env['limits'] = results.limits
    if any(m.endswith('@bf16') for m in args.models) and not env['bf16_native']:
        print(
            f'warning: this CPU ({env["isa"]}) has no bf16 instructions: bf16 is emulated and slower than fp32',
            file=sys.stderr,
        )
    print('\nmachine: ' + ', '.join(f'{k}: {v}' for k, v in env.items() if k != 'limits'))  # a pasted table
    print(format_limits(results.limits, env['threads']) or 'limits: not measured (--no-macs)')  # carries its machine
    print(format_table(results, args.reference))
    for r in results:
        if r.compile_s is not None:
            print(f'{r.model} {r.size}: compiling took {r.compile_s:.1f} s (the first call less the median)')
    if args.by_part:
        print('\n' + format_parts(results))
    if args.reference:
        print('\n'.join(ratios(results, args.reference)))
    for path in write_outputs(results, env, args.out_dir, args.plot):
        print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
