"""``pit-det-gpu-check``: the GPU acceptance run, one command of minutes for a first slot on a GPU machine.

In --out-dir (a new or empty folder) it writes summary.md and summary.json, then one file or folder per step:
  cuda-tests   the suite's CUDA tests (pytest -m cuda): cuda_tests.log, cuda_tests.xml
  kernel       mmcv's CUDA deformable attention against the fused CPU kernel on one input (an encoder's at
               800x1333): the forward and the three gradients, fp32 and fp16, each against its tolerance
  train        PiT-S Deformable DETR at COCO resolution on generated images, --iters iterations in fp32 and with
               --amp: the loss finite and falling, the time per iteration, the peak GPU memory per image
  mim-test     `mim test mmdet` of the fp32 run's checkpoint on the generated validation images
  latency      PiT-Ti/XS/S/B, ViT-S and R50 Deformable DETR predict at 400x666 and 800x1333, batch 1 and 4, fp32
               and fp16, in images/s, with the GPU's name and its measured matrix-product rates
Without a GPU (or with an mmcv built without CUDA ops) it stops at once and says what it needs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from . import command, parser_from_doc

STEPS = ('cuda-tests', 'kernel', 'train', 'mim-test', 'latency')


def parse_args(argv: list[str] | None = None):
    parser = parser_from_doc(__doc__)
    parser.add_argument('--out-dir', required=True, help='a new or empty folder for the summary and the logs')
    parser.add_argument('--iters', type=int, default=50, help='training iterations per precision (default 50)')
    parser.add_argument('--skip', nargs='+', default=[], choices=STEPS, help='steps to leave out')
    parser.add_argument('--warmup', type=int, default=10, help='latency: untimed calls per model (default 10)')
    parser.add_argument('--latency-iters', type=int, default=30, help='latency: timed calls per model (default 30)')
    return parser.parse_args(argv)


def _check_out_dir(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(
            f'--out-dir {folder} exists and is not an empty folder: give a new folder (a GPU check '
            "writes its own summary and logs, and replaces no one else's)"
        )


def summary_markdown(summary: dict) -> str:
    from ..acceptance.checks import format_latency
    from ..outputs import code_span

    lines = [
        f'# GPU check: {summary["gpu"]}',
        '',
        f'{summary["date"]}; torch {summary["torch"]}, CUDA {summary["cuda"]}, mmcv {summary["mmcv"]}; '
        f'{summary["wall_s"]:.0f} s in all.',
        '',
    ]
    for name, step in summary['steps'].items():
        verdict = 'skipped' if step.get('skipped') else ('ok' if step.get('ok') else 'FAILED')
        details = {k: v for k, v in step.items() if k not in ('ok', 'rows', 'skipped')}
        lines.append(f'- **{name}**: {verdict} ({step.get("seconds", 0):.0f} s) {code_span(json.dumps(details))}')
    latency = summary['steps'].get('latency', {})
    if latency.get('rows'):
        limits = latency.get('limits', {})
        rates = [f'{k.split()[-1]} {2 * v / 1000:.0f}' for k, v in limits.items() if k.startswith('matmul')]
        lines += [
            '',
            '## Latency (images/s, predict)',
            '',
            f'Matrix-product rates measured in the same run (TFLOP/s): {", ".join(rates)}.',
            '',
            format_latency(latency),
        ]
    return '\n'.join(lines) + '\n'


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out_dir)
    from ..acceptance import AcceptanceError, require_gpu

    try:
        if args.iters < 5:
            raise ValueError(f'--iters {args.iters}: at least 5, so that the loss can be seen to fall')
        if args.latency_iters < 1 or args.warmup < 0:
            raise ValueError('--latency-iters must be >= 1 and --warmup >= 0')
        _check_out_dir(out)
        gpu = require_gpu()
    except (ValueError, AcceptanceError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    import mmcv
    import torch

    from .. import acceptance
    from ..configs import config_root
    from ..data import make_synthetic_coco

    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    summary = dict(
        gpu=gpu,
        date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        mmcv=mmcv.__version__,
        steps={},
        wall_s=0.0,
    )
    root = Path(__file__).resolve().parents[2]

    def step(name, run):
        if name in args.skip:
            summary['steps'][name] = dict(skipped=True)
            return None
        print(f'== {name}', flush=True)
        began = time.time()
        try:
            result = run()
        except Exception as exc:  # one failed step must not hide the others' results
            result = dict(ok=False, error=f'{type(exc).__name__}: {exc}')
        result['seconds'] = round(time.time() - began, 1)
        summary['steps'][name] = result
        summary['wall_s'] = time.time() - start
        (out / 'summary.json').write_text(json.dumps(summary, indent=1))
        (out / 'summary.md').write_text(summary_markdown(summary))
        print(f'   {"ok" if result.get("ok") else "FAILED"} in {result["seconds"]:.0f} s', flush=True)
        return result

    step('cuda-tests', lambda: acceptance.run_cuda_tests(out, root))
    step('kernel', lambda: acceptance.kernel_parity('cuda'))
    config = config_root() / 'deformable-detr_pit-s_16xb2-50e_coco.py'
    data = out / 'data'
    trained = {}

    def train(amp: bool):
        if not (data / 'annotations').is_dir():
            make_synthetic_coco(data, num_train=2 * args.iters, num_val=8, size=640, val_sizes=[(480, 640), (640, 480)])
        result = acceptance.training_check(
            config, data, out / ('train_amp' if amp else 'train_fp32'), iters=args.iters, batch=2, amp=amp
        )
        trained[amp] = result
        return result

    if 'train' in args.skip:
        summary['steps']['train'] = dict(skipped=True)
    else:
        step('train fp32', lambda: train(False))
        step('train amp', lambda: train(True))

    def test():
        fp32 = trained.get(False) or {}
        if not fp32.get('checkpoint'):
            return dict(ok=False, error='no checkpoint: the fp32 training step did not run or failed')
        return acceptance.mim_test(Path(fp32['config']), Path(fp32['checkpoint']), out / 'mim_test')

    step('mim-test', test)
    step('latency', lambda: acceptance.latency_table('cuda', warmup=args.warmup, iters=args.latency_iters))
    summary['wall_s'] = time.time() - start
    (out / 'summary.json').write_text(json.dumps(summary, indent=1))
    (out / 'summary.md').write_text(summary_markdown(summary))
    print((out / 'summary.md').read_text())
    failed = [n for n, s in summary['steps'].items() if not s.get('skipped') and not s.get('ok')]
    print(
        f'{"all steps passed" if not failed else "FAILED: " + ", ".join(failed)}; '
        f'{summary["wall_s"]:.0f} s; written: {out}/summary.md, {out}/summary.json'
    )
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
