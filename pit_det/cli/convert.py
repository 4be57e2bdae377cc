"""Convert a PiT checkpoint (file, hf-hub: tag or URL; official, timm or legacy timm layout) to an mmdet-ready file.

The output holds ``{'state_dict': {'backbone.<key>': tensor}, 'meta': {...}}``: it works as the backbone's
``init_cfg=dict(type='Pretrained', checkpoint=DST)`` and as mmdet's ``load_from`` (backbone weights only).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

from ..models.weights import (CheckpointMismatchError, CheckpointReadError, ConversionReport, convert_pit_checkpoint,
                              load_pit_weights)


def convert_file(src: str | Path, dst: str | Path, arch: str | None = None, force: bool = False) -> ConversionReport:
    """Read ``src`` (a file, an ``hf-hub:`` tag or a URL; weights only), convert it, optionally check it against
    ``arch``, write ``dst`` atomically."""
    src, dst = str(src), Path(dst)
    remote = src.startswith(('hf-hub:', 'http://', 'https://'))
    if not remote and not Path(src).exists():
        raise FileNotFoundError(f'{src} does not exist')
    if not remote and dst.exists() and dst.resolve() == Path(src).resolve():
        raise ValueError('DST is SRC: choose another output path; the source file is never overwritten')
    if dst.exists() and not force:
        raise FileExistsError(f'{dst} exists; pass --force to overwrite it')
    from mmengine.runner import CheckpointLoader
    report = ConversionReport('')
    sd = convert_pit_checkpoint(CheckpointLoader.load_checkpoint(src, map_location='cpu'), report=report)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=dst.name, suffix='.partial')
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a converted file is as readable as any other
    try:
        torch.save({'state_dict': {f'backbone.{k}': v for k, v in sd.items()},
                    'meta': dict(source=str(src), source_layout=report.layout, converter='pit-det')}, tmp)
        if arch is not None:
            from ..models import PiT
            load_pit_weights(PiT(arch=arch), tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
