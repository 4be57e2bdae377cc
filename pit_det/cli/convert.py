"""Convert a PiT checkpoint (file, hf-hub: tag or URL; official, timm or legacy timm layout) to an mmdet-ready file.

The output holds ``{'state_dict': {'backbone.<key>': tensor}, 'meta': {...}}``: it works as the backbone's
``init_cfg=dict(type='Pretrained', checkpoint=DST)`` and as mmdet's ``load_from`` (backbone weights only).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..models import (CheckpointMismatchError, CheckpointReadError, ConversionReport, convert_pit_checkpoint,
                      load_pit_weights)
from ..models.sources import cached_file, is_remote
from ..outputs import atomic_write, check_file_output


def convert_file(src: str | Path, dst: str | Path, arch: str | None = None, force: bool = False) -> ConversionReport:
    """Read ``src`` (a file, an ``hf-hub:`` tag or a URL; weights only), convert it, optionally check it against
    ``arch``, write ``dst`` atomically."""
    src, dst = str(src), Path(dst)
    remote = is_remote(src)
    if not remote and not Path(src).exists():
        raise FileNotFoundError(f'{src} does not exist')
    source = ('cached download of SRC', cached_file(src)) if remote else ('source checkpoint (SRC)', src)
    check_file_output(dst, [source], option='DST', force=force)
    from mmengine.runner import CheckpointLoader
    report = ConversionReport('')
    sd = convert_pit_checkpoint(CheckpointLoader.load_checkpoint(src, map_location='cpu'), report=report)

    def write(tmp: Path) -> None:
        torch.save({'state_dict': {f'backbone.{k}': v for k, v in sd.items()},
                    'meta': dict(source=str(src), source_layout=report.layout, converter='pit-det')}, tmp)
        if arch is not None:
            from ..models import PiT
            load_pit_weights(PiT(arch=arch), tmp)

    atomic_write(dst, write)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='checkpoint to convert: a file, an hf-hub: tag (hf-hub:timm/pit_s_224.in1k) or a '
                                    'URL')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--arch', help='check the result loads into this PiT arch (ti, xs, s, b, *-distilled)')
    parser.add_argument('--force', action='store_true', help='overwrite DST if it exists')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = convert_file(args.src, args.dst, args.arch, args.force)
    except (OSError, ValueError, CheckpointMismatchError, CheckpointReadError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'layout: {report.layout}')
    for old, new in report.renamed:
        print(f'{old} -> {new}')
    for key in report.dropped:
        print(f'dropped: {key}')
    print(f'wrote {args.dst} ({len(report.renamed)} renamed, {len(report.dropped)} dropped)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
