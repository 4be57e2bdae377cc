"""``pit-det-convergence``: the Deformable DETR and DINO CPU demos trained side by side on one generated set,
validated after every epoch; writes the AP per epoch of both and whether DINO reaches Deformable DETR's final AP in
half the epochs (convergence.json), and the plot (convergence.png), into --out-dir.

Each head trains into --out-dir/<its demo config's name>; the data goes to --data-root (generated with --seed).
"""

from __future__ import annotations

import sys

from . import command, parser_from_doc
from .demo import epochs


def parse_args(argv: list[str] | None = None):
    parser = parser_from_doc(__doc__)
    parser.add_argument('--out-dir', default='work_dirs/convergence')
    parser.add_argument('--data-root', default='data/synthetic_convergence')
    parser.add_argument('--epochs', type=epochs, default=24, help="epochs of each head (default: the demos' 24)")
    parser.add_argument('--seed', type=int, default=7, help="the data's and the training's seed")
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ..analysis.convergence import HEADS, REPORT_FILES, run_convergence
    from ..outputs import OutputError, check_dir_output
    from ..runner import STOP_ERRORS

    try:
        check_dir_output(args.out_dir, REPORT_FILES)
        result = run_convergence(args.out_dir, args.data_root, args.epochs, args.seed)
    except (OutputError, ValueError, *STOP_ERRORS) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    for name in HEADS:
        print(f'{name:16s}' + ' '.join(f'{p["bbox_mAP"]:.3f}' for p in result['curves'][name]))
    v = result['verdict']
    reached = (
        f'DINO reaches it at epoch {v["dino_epoch_reaching_it"]}'
        if v['dino_epoch_reaching_it']
        else 'DINO never reaches it'
    )
    print(
        f'Deformable DETR final AP {v["deformable_detr_final_ap"]:.3f} (epoch {v["epochs"]}); {reached}; the claim '
        f'(within half the epochs) {"holds" if v["holds"] else "does not hold"} here'
    )
    print(f'written: {args.out_dir}/convergence.json, {args.out_dir}/convergence.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
