"""Convert a PiT checkpoint (file, hf-hub: tag or URL; official, timm or legacy timm layout) to an mmdet-ready file:
``pit-det-convert SRC --out OUT.pth [--arch ARCH]``.

The output holds ``{'state_dict': {'backbone.<key>': tensor}, 'meta': {...}}``: it works as the backbone's
``init_cfg=dict(type='Pretrained', checkpoint=OUT)`` and as mmdet's ``load_from`` (backbone weights only).
"""

from __future__ import annotations

import argparse
import sys

from ..checkpoint import CheckpointMismatchError, CheckpointReadError, ConversionReport
from ..checkpoint.convert import convert_file
from ..models import PiT, convert_pit_checkpoint, load_pit_weights
from ..outputs import OutputError
from . import command, parser_from_doc


def convert_pit_file(src: str, dst: str, arch: str | None = None, force: bool = False) -> ConversionReport:
    """A PiT checkpoint of any layout written as pit-det's, checked against ``arch`` when one is given."""
    check = None if arch is None else (lambda written: load_pit_weights(PiT(arch=arch), written))
    return convert_file(src, dst, convert_pit_checkpoint, check, force)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = parser_from_doc(__doc__)
    parser.add_argument(
        'src', help='checkpoint to convert: a file, an hf-hub: tag (hf-hub:timm/pit_s_224.in1k) or a URL'
    )
    parser.add_argument('--out', required=True, help='the converted checkpoint to write (.pth)')
    parser.add_argument('--arch', help='check the result loads into this PiT arch (ti, xs, s, b, *-distilled)')
    parser.add_argument('--force', action='store_true', help='replace an existing --out (never the source)')
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = convert_pit_file(args.src, args.out, args.arch, args.force)
    except (OSError, ValueError, OutputError, CheckpointMismatchError, CheckpointReadError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'layout: {report.layout}')
    for old, new in report.renamed:
        print(f'{old} -> {new}')
    for key in report.dropped:
        print(f'dropped: {key}')
    print(f'wrote {args.out} ({len(report.renamed)} renamed, {len(report.dropped)} dropped)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
