"""A config for your own COCO-format dataset: ``pit-det-dataset-config TRAIN.json --train-images DIR --out CFG.py``.

Reads the categories from the annotation file and writes a short delta over a config of ours (default
pit_s_deformable_detr): the datasets' files and folders, metainfo.classes in the file's category order,
bbox_head.num_classes, the evaluators' ann_file, and a schedule suited to the set's size (explained in the file's
comments). Validation comes from --val-ann/--val-images or from a seeded --val-split of the training file, written
beside CFG.py (the input is never changed). --load-from CKPT fine-tunes a detector checkpoint (e.g. a COCO-trained
PiT-S Deformable DETR): every weight but the classification branches is loaded. Prints the mim commands to run next.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..checkpoint import CheckpointMismatchError, CheckpointReadError
from ..checkpoint.matching import check_weights_file
from ..checkpoint.sources import is_remote
from ..data.coco import DatasetError, fill_missing_area, is_copy, read_coco, split, write_coco
from ..data.dataset_config import MARKER, read_base, write_config
from ..outputs import OutputError, check_file_output
from . import command, config_file, parser_from_doc


def parse_args(argv: list[str] | None = None):
    parser = parser_from_doc(__doc__)
    parser.add_argument('train_ann', metavar='TRAIN.json', help='COCO annotation file of the training images')
    parser.add_argument('--train-images', required=True, help='folder of the training images')
    parser.add_argument('--val-ann', help='COCO annotation file of the validation images')
    parser.add_argument('--val-images', help='folder of the validation images (default: --train-images)')
    parser.add_argument('--val-split', type=float, help='without --val-ann: this fraction of TRAIN.json validates')
    parser.add_argument('--seed', type=int, default=0, help='seed of --val-split (default 0)')
    parser.add_argument(
        '--base',
        default='pit_s_deformable_detr',
        type=config_file,
        help='config to start from: a path, or the name of a config of pit-det (default pit_s_deformable_detr)',
    )
    parser.add_argument('--load-from', help='fine-tune this detector checkpoint (another class set is fine)')
    parser.add_argument('--epochs', type=int, help="override the schedule chosen for the set's size")
    parser.add_argument('--out', required=True, help='the config to write (.py)')
    parser.add_argument(
        '--force',
        action='store_true',
        help='replace an existing --out, or annotation copies beside it (OUT_train.json, '
        'OUT_val.json), that this tool did not write',
    )
    return parser.parse_args(argv)


def _is_ours(path: Path) -> bool:
    try:
        return path.read_text().split('\n', 1)[0] == MARKER
    except (OSError, UnicodeDecodeError):
        return False


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    try:
        if out.suffix != '.py':
            raise DatasetError(f'--out {out}: a config file name ends in .py')
        if (args.val_ann is None) == (args.val_split is None):
            raise DatasetError(
                'give validation data: --val-ann FILE (and --val-images DIR), or --val-split FRACTION '
                'of the training file'
            )
        if args.epochs is not None and args.epochs < 1:
            raise DatasetError(f'--epochs {args.epochs}: at least 1')
        folders = [('--train-images', args.train_images), ('--val-images', args.val_images or args.train_images)]
        for option, folder in folders:
            if not Path(folder).is_dir():
                raise DatasetError(f'{option} {folder}: not a folder')
        if args.load_from and not is_remote(args.load_from):
            check_weights_file(args.load_from)  # a JSON or a truncated file stops here, not minutes into mim train
        base = Path(args.base).resolve()
        base_cfg = read_base(base)
        inputs = [
            ('training annotations', args.train_ann),
            ('validation annotations', args.val_ann),
            ('base config', base),
            ('checkpoint', args.load_from),
        ]
        check_file_output(out, inputs, option='--out', own=_is_ours, force=args.force)
        train = read_coco(args.train_ann)
        val = read_coco(args.val_ann) if args.val_ann else None
        # mmdet's CocoDataset and CocoMetric read every annotation's area: one without gets its box's, in a copy
        filled = [fill_missing_area(train.data), fill_missing_area(val.data) if val else 0]
        copies = {part: out.with_name(f'{out.stem}_{part}.json') for part in ('train', 'val')}
        written = list(copies) if val is None else [part for part, count in zip(copies, filled, strict=True) if count]
        for part in written:
            check_file_output(copies[part], inputs, option='the copy of the annotations', own=is_copy, force=args.force)
        if val is None:
            train, val = split(train, args.val_split, args.seed, copies['train'], copies['val'])
        else:
            train, val = (
                write_coco(coco, copies[part]) if part in written else coco
                for part, coco in zip(copies, (train, val), strict=True)
            )
        for source, count in zip((args.train_ann, args.val_ann), filled, strict=True):
            if count:
                print(
                    f'{source}: {count} annotations have no "area"; the config reads a copy in which each is its '
                    "box's width x height (the file itself is unchanged)"
                )
        load_from = args.load_from and (
            args.load_from if is_remote(args.load_from) else str(Path(args.load_from).resolve())
        )
        chosen = write_config(
            out,
            base_cfg,
            train,
            Path(args.train_images).resolve(),
            val,
            Path(args.val_images or args.train_images).resolve(),
            load_from,
            args.epochs,
        )
    except (DatasetError, OutputError, CheckpointMismatchError, CheckpointReadError, FileNotFoundError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(summary(out, chosen, train, val))
    return 0


def summary(out: Path, chosen: dict, train, val) -> str:
    """What was written, and the commands to run next."""
    classes, work = chosen['classes'], f'work_dirs/{out.stem}'
    q = shlex.quote  # the next: lines are for pasting into a shell: a name with a space or a quote stays one word
    config, checkpoint = q(str(out)), q(f'{work}/epoch_{chosen["schedule"].epochs}.pth')
    return (
        f'wrote {out}: {len(classes)} classes ({", ".join(classes[:8])}{", ..." if len(classes) > 8 else ""}), '
        f'{train.num_images} training images ({train.num_boxes} boxes), {val.num_images} validation images; '
        f'{chosen["schedule"].why}\n{expectation(chosen)}\nnext:\n  mim train mmdet {config} --work-dir {q(work)}\n'
        f'  mim test mmdet {config} --checkpoint {checkpoint} --work-dir {q(work)}'
    )


def expectation(chosen: dict) -> str:
    """What to expect of the run, and how to compare heads (docs/dino.md, on a small set at these schedules)."""
    epochs = chosen['schedule'].epochs
    return (
        f'expect: box AP near 0 for the first epochs while the matching settles; judge the run, and compare '
        f'Deformable DETR with DINO, at the end of its {epochs} epochs, each head at the schedule written for it: a '
        'run cut short says little about the head (docs/dino.md, "On a small set")'
    )


if __name__ == '__main__':
    sys.exit(main())
