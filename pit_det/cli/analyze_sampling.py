"""Where the detector looks: ``pit-det-analyze-sampling CONFIG CHECKPOINT IMAGE [IMAGE ...] --out-dir DIR``.

Draws Deformable DETR's sampling points and attention weights on each image: for the top-k detections (--topk,
--score-thr) the last decoder layer's cross-attention of the detection's query (every head's and level's points,
sized by weight, one colour per level; the reference point as a white cross; the box), and for --points x,y the
encoder's last-layer self-attention of the query at that pixel. Writes sampling_<image>.png per image and
sampling.json (every point and weight, and per decoder layer the attention-weighted distance to the reference point
and each level's share of the weight). CHECKPOINT ``none`` runs random weights. ``--compare NAME=sampling.json ...
--out-dir DIR`` draws earlier runs side by side (comparison.png) without running a model.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from ..analysis.sampling import (
    REPORT_FILES,
    SamplingAnalysis,
    SamplingError,
    check_pixel,
    compare,
    draw,
    report,
    write_json,
)
from ..data import IMAGE_SUFFIXES
from ..models import CheckpointMismatchError, CheckpointReadError
from ..models.detectors import DETR_TYPES
from ..outputs import OutputError, check_dir_output
from . import command, config_file, parser_from_doc

NEGATIVE = re.compile(r'^-[\d.][^,]*,')  # a pixel x,y with a negative x


def point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: give a pixel as x,y, e.g. 120,80') from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise argparse.ArgumentTypeError(f'{text!r}: a pixel is two finite numbers x,y, e.g. 120,80')
    return x, y


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = parser_from_doc(__doc__)
    parser.add_argument('config', nargs='?', type=config_file, help='a config path, or a config name')
    parser.add_argument('checkpoint', nargs='?', help='a checkpoint of CONFIG, or none for random weights')
    parser.add_argument('images', nargs='*', metavar='IMAGE')
    parser.add_argument('--out-dir', required=True, help='folder for sampling.json and the pictures')
    parser.add_argument('--topk', type=int, default=5, help='detections drawn per image (default 5)')
    parser.add_argument('--score-thr', type=float, default=0.3, help='smallest score drawn (default 0.3)')
    parser.add_argument(
        '--points', nargs='+', type=point, default=[], metavar='X,Y', help='pixels whose encoder query is drawn'
    )
    parser.add_argument('--compare', nargs='+', metavar='NAME=JSON', help='sampling.json files to draw side by side')
    argv = sys.argv[1:] if argv is None else argv
    for value in argv:
        if NEGATIVE.match(value):  # argparse would take it for a flag and name no pixel
            parser.error(
                f'--points {value}: x and y are pixels of the image, at least 0 (a value that starts with - '
                f'is read as a flag unless written --points={value})'
            )
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> list:
    """Everything but the model, before it is built; returns the images (BGR arrays).

    Raises:
        SamplingError, OutputError: naming the argument and what to do.
    """
    import mmcv

    if not args.config or not args.checkpoint or not args.images:
        raise SamplingError(
            'give CONFIG CHECKPOINT IMAGE [IMAGE ...] (CHECKPOINT none: random weights), or '
            '--compare NAME=sampling.json ...'
        )
    if args.topk < 1 or not 0 <= args.score_thr <= 1:
        raise SamplingError('--topk is at least 1 and --score-thr between 0 and 1')
    inputs = [('config', args.config)] + ([] if args.checkpoint == 'none' else [('checkpoint', args.checkpoint)])
    for what, path in inputs:
        if not Path(path).is_file():
            raise SamplingError(f'{what} {path} not found')
    images = []
    for path in args.images:
        if Path(path).suffix.lower() not in IMAGE_SUFFIXES or not Path(path).is_file():
            raise SamplingError(f'{path}: not an image file ({", ".join(IMAGE_SUFFIXES)})')
        image = mmcv.imread(path)
        if image is None:
            raise SamplingError(f'{path} cannot be decoded as an image')
        for x, y in args.points:
            check_pixel(x, y, *image.shape[:2], image=path)
        images.append(image)
    names = [f'sampling_{Path(p).stem}.png' for p in args.images]
    if len(set(names)) != len(names):
        raise SamplingError('two images share a file name: their pictures would replace each other')
    check_dir_output(args.out_dir, [*REPORT_FILES, *names], inputs + [('image', p) for p in args.images])
    return images


def run_compare(args: argparse.Namespace) -> int:
    reports = {}
    for spec in args.compare:
        name, equals, path = spec.partition('=')
        path = path if equals else name
        try:
            data = json.loads(Path(path).read_text())
            if not data['summary']:
                raise SamplingError(f'--compare {path}: its run drew no detection, so it has no summary to compare')
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SamplingError(f'--compare {path}: not a sampling.json of this tool ({exc})') from None
        reports[name] = data
    check_dir_output(args.out_dir, ['comparison.png'], [('report', s.partition('=')[2] or s) for s in args.compare])
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    path = compare(reports, Path(args.out_dir) / 'comparison.png')
    print('last decoder layer: share of the weight per level, weighted distance / box size')
    for name, data in reports.items():
        last = data['summary'][-1]
        print(
            f'  {name}: levels {", ".join(f"{s:.3f}" for s in last["level_share"])}; distance '
            f'{last["distance_box"]:.3f} of the box ({last["distance_px"]:.1f} px)'
        )
    print(f'wrote {path}')
    return 0


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.compare:
            return run_compare(args)
        images = check_args(args)
        import mmcv
        from mmengine.config import Config

        from ..models.detectors import build_detector

        cfg = Config.fromfile(args.config)
        if cfg.model.get('type') not in DETR_TYPES:
            raise SamplingError(
                f'{args.config}: a {cfg.model.get("type")}, not a Deformable DETR or DINO: the tool '
                f'reads the deformable attention of {", ".join(DETR_TYPES)}'
            )
        model = build_detector(cfg, None if args.checkpoint == 'none' else args.checkpoint)
        analysis = SamplingAnalysis(model)
        classes = (model.dataset_meta or {}).get('classes')
        results = {}
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for path, image in zip(args.images, images, strict=True):
            result = analysis.run(image, args.topk, args.score_thr, args.points)
            results[Path(path).name] = result
            picture = draw(
                mmcv.bgr2rgb(image), result, classes, out / f'sampling_{Path(path).stem}.png', args.score_thr
            )
            found = len(result['detections'])
            print(
                f'{path}: {found} detections with score >= {args.score_thr} drawn'
                if found
                else f'{path}: no detection with score >= {args.score_thr}: an empty panel',
                end='',
            )
            print(f', {len(result["encoder"])} encoder pixels -> {picture}')
        data = report(results, args.config, None if args.checkpoint == 'none' else args.checkpoint)
        write_json(data, out / REPORT_FILES[0])
    except (SamplingError, OutputError, CheckpointMismatchError, CheckpointReadError, FileNotFoundError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    if data['summary']:
        print('decoder layer  distance px  distance / box  share of weight per level')
        for s in data['summary']:
            print(
                f'  {s["layer"]:12d}  {s["distance_px"]:11.1f}  {s["distance_box"]:14.3f}  '
                + ', '.join(f'{v:.3f}' for v in s['level_share'])
            )
    print(f'wrote {out / REPORT_FILES[0]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
