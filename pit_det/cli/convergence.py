"""``pit-det-convergence``: the Deformable DETR and DINO CPU demos trained side by side on one generated set,
validated after every epoch; writes the AP per epoch of both and whether DINO reaches Deformable DETR's final AP in
half the epochs (convergence.json), and the plot (convergence.png), into --out-dir.

Each head trains into --out-dir/<its demo config's name>; the data goes to --data-root (generated with --seed,
--num-train training images). --budget same (default): both heads for --epochs (24) at a constant learning rate.
--budget dataset-config: each head trains what pit-det-dataset-config writes for the set over its demo (the epochs it
chooses for the set's size, its learning-rate step), written to --out-dir/<demo name>/dataset_config.py.
"""

from __future__ import annotations

import sys

from ..analysis.convergence import BUDGETS
from . import command, parser_from_doc
from .demo import epochs


def parse_args(argv: list[str] | None = None):
    parser = parser_from_doc(__doc__)
    parser.add_argument('--out-dir', default='work_dirs/convergence')
    parser.add_argument('--data-root', default='data/synthetic_convergence')
    parser.add_argument('--epochs', type=epochs, help="--budget same: epochs of each head (default: the demos' 24)")
    parser.add_argument('--seed', type=int, default=7, help="the data's and the training's seed")
    parser.add_argument('--num-train', type=epochs, default=256, help='training images generated (default 256)')
    parser.add_argument('--budget', choices=BUDGETS, default='same', help='same (default) or dataset-config')
    args = parser.parse_args(argv)
    if args.budget == 'same' and args.epochs is None:
        args.epochs = 24
    elif args.budget != 'same' and args.epochs is not None:
        parser.error('--epochs goes with --budget same: the written config chooses its own')
    return args


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ..analysis.convergence import HEADS, REPORT_FILES, run_convergence
    from ..outputs import OutputError, check_dir_output
    from ..runner import STOP_ERRORS

    try:
        check_dir_output(args.out_dir, REPORT_FILES)
        result = run_convergence(
            args.out_dir, args.data_root, args.epochs, args.seed, num_train=args.num_train, budget=args.budget
        )
    except (OutputError, ValueError, *STOP_ERRORS) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    for name in HEADS:
        plan = result['schedules'][name]
        step = f', lr x0.1 after epoch {plan["lr_step"]}' if plan['lr_step'] else ', constant lr'
        print(
            f'{name} ({plan["epochs"]} epochs{step}): '
            + ' '.join(f'{p["bbox_mAP"]:.3f}' for p in result['curves'][name])
        )
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
