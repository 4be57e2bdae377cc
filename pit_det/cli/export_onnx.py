"""Export a Deformable DETR to ONNX and check it in onnxruntime: ``pit-det-export-onnx CONFIG CKPT OUT.onnx``.

The graph takes ``image`` (N, 3, H, W) float32 RGB 0-255 at --shape, any batch N, normalises inside and returns
``boxes`` (N, K, 4) xyxy in input pixels, ``scores`` (N, K) and ``labels`` (N, K) int64, best first. The file is
checked with onnx.checker, run in onnxruntime on a batch of two, --image (default: a generated scene) and its mirror
image, and compared with mmdet's predict of each: the top-k boxes within 0.05 px, scores within 1e-4, identical
labels. Needs ``pip install "pit-det[export]"``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from ..export.onnx import ExportError, build, compare, export, load_image, require_runtime
from ..models.weights import CheckpointMismatchError, CheckpointReadError


def shape(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: use HxW, e.g. 400x666') from None
    return h, w


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out', help='the .onnx file to write')
    parser.add_argument('--shape', type=shape, required=True, help='input HxW, e.g. 400x666')
    parser.add_argument('--image', help='image for the onnxruntime check (default: a generated scene)')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--topk', type=int, default=20, help='detections compared (default 20)')
    return parser.parse_args(argv)


def _default_image(folder: Path) -> Path:
    from ..data import make_synthetic_coco
    return make_synthetic_coco(folder / 'scene', num_train=0, num_val=1, size=256) / 'val' / '000000.png'


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    height, width = args.shape
    try:
        require_runtime()
        import pit_det  # noqa: F401
        model = build(args.config, args.checkpoint)
        out = export(model, height, width, args.out, args.opset)
        print(f'wrote {out} ({out.stat().st_size / 2 ** 20:.1f} MiB), onnx.checker: valid, opset {args.opset}')
        with tempfile.TemporaryDirectory() as tmp:
            image = load_image(args.image or _default_image(Path(tmp)), height, width)
        result = compare(model, out, torch.cat([image, image.flip(-1)]), args.topk)  # a batch of two
    except (ExportError, CheckpointMismatchError, CheckpointReadError, FileNotFoundError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    labels = 'identical' if result.labels_equal else 'DIFFER'
    print(f'onnxruntime (batch of {result.batch}) vs mmdet predict, top {result.topk}: '
          f'max box diff {result.max_box_diff_px:.2e} px (<= 0.05), max score diff {result.max_score_diff:.2e} '
          f'(<= 1e-4), labels {labels}; one run: mmdet {result.torch_ms:.0f} ms, onnxruntime '
          f'{result.onnxruntime_ms:.0f} ms')
    if not result.ok:
        print('error: onnxruntime does not reproduce mmdet\'s predict within the tolerances above', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
