"""Export a Deformable DETR to ONNX and check it in onnxruntime: ``pit-det-export-onnx CONFIG CKPT OUT.onnx``.

The graph takes ``image`` (N, 3, H, W) float32 RGB 0-255 at --shape, any batch N, normalises inside and returns
``boxes`` (N, K, 4) xyxy in input pixels, ``scores`` (N, K) and ``labels`` (N, K) int64, best first. The file records
the config, the checkpoint, the sha256 of the weights, the classes and the input size it was exported from (ONNX
metadata); a detector refuses a file whose weights or classes are not its own. The file is checked with
onnx.checker, run in onnxruntime on a batch of two, --image (default: a generated scene) and its mirror image, and
compared with mmdet's predict of each: the top-k boxes within 0.05 px, scores within 1e-4, identical labels; a file
that fails the check is not kept. Needs ``pip install "pit-det[export]"``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from ..benchmark import parse_size
from ..export.onnx import ExportError, build_exportable, check_shape, compare, export, load_image, require_runtime
from ..models.detectors import exported_metadata
from ..models import CheckpointMismatchError, CheckpointReadError
from ..outputs import OutputError, atomic_write, check_file_output
from . import config_file, parser_from_doc


def shape(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = parser_from_doc(__doc__)
    parser.add_argument('config', type=config_file, help='a config path, or a config name')
    parser.add_argument('checkpoint')
    parser.add_argument('out', help='the .onnx file to write (replaces an earlier export; any other existing file '
                                    'only with --force)')
    parser.add_argument('--shape', type=shape, required=True, help='input HxW, e.g. 400x666')
    parser.add_argument('--image', help='image for the onnxruntime check (default: a generated scene)')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--topk', type=int, default=20, help='detections compared (default 20)')
    parser.add_argument('--force', action='store_true', help='replace an existing OUT that is not an export of this '
                                                             'tool (never an input)')
    return parser.parse_args(argv)


def _default_image(folder: Path) -> Path:
    from ..data import make_synthetic_coco
    return make_synthetic_coco(folder / 'scene', num_train=0, num_val=1, size=256) / 'val' / '000000.png'


def is_export(path: Path) -> bool:
    """Whether ``path`` is an ONNX file this tool wrote (it carries pit-det's metadata)."""
    try:
        exported_metadata(path)
    except (CheckpointReadError, FileNotFoundError):
        return False
    return True


def check_args(args: argparse.Namespace) -> None:
    """Every argument, before a model is built.

    Raises:
        ExportError, OutputError: naming the argument and what to do.
    """
    require_runtime()
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint'), (args.image, '--image')):
        if path is not None and not Path(path).is_file():
            raise ExportError(f'{what} not found: {path}')
    if args.topk < 1:
        raise ExportError(f'--topk {args.topk}: compare at least 1 detection')
    if args.opset < 16:
        raise ExportError(f'--opset {args.opset}: GridSample needs opset >= 16')
    check_file_output(args.out, [('config', args.config), ('checkpoint', args.checkpoint), ('image', args.image)],
                      option='OUT', own=is_export, force=args.force)


class _NotReproduced(Exception):
    """The exported file does not reproduce mmdet's predict: it is not kept."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    height, width = args.shape
    results = []
    try:
        check_args(args)
        import pit_det  # noqa: F401
        model = build_exportable(args.config, args.checkpoint)
        check_shape(model, height, width)
        with tempfile.TemporaryDirectory() as tmp:
            image = load_image(args.image or _default_image(Path(tmp)), height, width)

        def write_checked(tmp: Path) -> None:
            export(model, height, width, tmp, args.opset)
            print(f'exported {args.out} ({tmp.stat().st_size / 2 ** 20:.1f} MiB), onnx.checker: valid, opset '
                  f'{args.opset}', flush=True)
            results.append(compare(model, tmp, torch.cat([image, image.flip(-1)]), args.topk))  # a batch of two
            if not results[-1].ok:
                raise _NotReproduced

        atomic_write(args.out, write_checked)
    except (ExportError, OutputError, CheckpointMismatchError, CheckpointReadError, FileNotFoundError,
            ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    except _NotReproduced:
        pass
    result = results[-1]
    labels = 'identical' if result.labels_equal else 'DIFFER'
    print(f'onnxruntime (batch of {result.batch}) vs mmdet predict, top {result.topk}: '
          f'max box diff {result.max_box_diff_px:.2e} px (<= 0.05), max score diff {result.max_score_diff:.2e} '
          f'(<= 1e-4), labels {labels}; one run: mmdet {result.torch_ms:.0f} ms, onnxruntime '
          f'{result.onnxruntime_ms:.0f} ms')
    if not result.ok:
        print(f'error: onnxruntime does not reproduce mmdet\'s predict within the tolerances above; {args.out} was '
              'not written', file=sys.stderr)
        return 1
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
