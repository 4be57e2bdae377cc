"""Attention entropy and distance per block: ``pit-det-analyze-attention MODEL [MODEL ...] --images DIR``.

MODEL is a backbone name (``pit-ti``, ``pit-s``, ``vit-s``, ...: random weights) or ``NAME=SOURCE``, SOURCE a
checkpoint file, an ``hf-hub:`` tag, a URL, or a detector checkpoint (its backbone is used), e.g.
``pit-s=hf-hub:timm/pit_s_224.in1k vit-s=hf-hub:timm/deit_small_patch16_224.fb_in1k``.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..analysis.attention import REPORT_FILES, analyze, build_backbone, check_spec, load_images, write_outputs
from ..models import CheckpointMismatchError, CheckpointReadError
from ..outputs import check_dir_output
from . import command, image_size, parser_from_doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = parser_from_doc(__doc__)
    parser.add_argument('models', nargs='+', help='backbones to analyse (see below)')
    parser.add_argument('--images', required=True, help='folder of images (.jpg, .png)')
    parser.add_argument(
        '--size', type=image_size, default=(224, 224), help='HxW the images are resized to (default 224x224)'
    )
    parser.add_argument('--max-images', type=int, default=32, help='use at most this many images (default 32)')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--out-dir', default='work_dirs/attention', help='folder for attention.{json,csv,png}')
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if min(args.size) < 32 or args.max_images < 1 or args.batch < 1:
            raise ValueError('--size must be at least 32, --max-images and --batch at least 1')
        for spec in args.models:
            check_spec(spec)
        if len(set(args.models)) != len(args.models):
            raise ValueError(f'a model is named twice ({" ".join(args.models)}): its results would replace each other')
        check_dir_output(args.out_dir, REPORT_FILES, [('checkpoint', spec.partition('=')[2]) for spec in args.models])
        from mmengine.logging import MMLogger

        MMLogger.get_instance('pit_det_analysis', log_level='WARNING')  # not mmengine's per-parameter init log
        images = load_images(args.images, args.size, args.max_images)
        print(f'{len(images)} images at {args.size[0]}x{args.size[1]} from {args.images}', flush=True)
        results = {}
        for spec in args.models:
            label, model = build_backbone(spec)
            if model.load_report is not None:
                print(f'{label}: {model.load_report.summary()}', flush=True)
            start = time.time()
            results[label] = analyze(
                model,
                images,
                args.batch,
                progress=lambda done, total, label=label: print(f'{label}: {done}/{total} images', flush=True),
            )
            print(f'{label}: {len(results[label])} blocks in {time.time() - start:.1f} s', flush=True)
    except (ValueError, FileNotFoundError, CheckpointMismatchError, CheckpointReadError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    for label, blocks in results.items():
        print(f'\n{label}\n  block stage tokens  entropy  distance_px  distance_frac')
        for b in blocks:
            print(
                f'  {b.index:5d} {b.stage:5d} {b.tokens:6d} {b.entropy:8.3f} {b.distance_px:12.1f} '
                f'{b.distance_frac:14.3f}'
            )
    for path in write_outputs(results, args.out_dir):
        print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
