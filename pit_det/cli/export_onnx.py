"""Export a Deformable DETR for CPU runtimes and check it: ``pit-det-export-onnx CONFIG CKPT --out OUT --size HxW``.

Formats (--format):
  onnx            OUT.onnx, run by onnxruntime or OpenVINO (pit-det-infer --path onnxruntime|openvino)
  openvino        OUT.xml + OUT.bin, OpenVINO's IR in float; OpenVINO picks the precision for the CPU (bf16 where
                  the CPU has bf16 instructions) unless the run sets it (--path openvino)
  openvino-int8   OUT.xml + OUT.bin, INT8 by NNCF's post-training quantisation, calibrated on --calibration-images
                  images of the config's training set (a seeded pick, through the test pipeline); the sampling
                  offsets, attention weights, box regression and classification stay in floating point
                  (--path openvino-int8)

The graph takes ``image`` (N, 3, H, W) float32 RGB 0-255 of any size (traced at --size), normalises inside and
returns ``boxes`` (N, K, 4) xyxy in input pixels, ``scores`` (N, K) and ``labels`` (N, K) int64, best first. The file
records the config, the checkpoint, the sha256 of the weights, the classes, the traced size and its format; a
detector refuses a file whose weights or classes are not its own. The file is run in its runtime (onnxruntime for
onnx, OpenVINO f32 for the IRs) on --image (default: a generated scene) and its mirror image at --size, and on the
image at two more sizes (three quarters of the height, and the smallest 1:4 size whose coarsest level is one pixel
high), and compared with mmdet's predict of each: the top-k boxes within 0.05 px, scores within
1e-4, identical labels; a float file that fails the check is not kept. INT8 changes the numbers by design: its
differences are printed, and its accuracy is measured with mim test (docs/deployment.md). Needs
``pip install "pit-det[export]"``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from ..checkpoint import CheckpointMismatchError, CheckpointReadError
from ..deploy.metadata import FORMATS, exported_metadata
from ..deploy.onnx import (
    MIN_SIDE,
    ExportError,
    build_exportable,
    check_shape,
    compare,
    export,
    load_image,
    metadata,
    one_pixel_size,
    shape_problem,
)
from ..deploy.openvino import require_tools
from ..deploy.runtimes import Runtime
from ..outputs import OutputError, atomic_write, check_file_output
from . import command, config_file, image_size, parser_from_doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = parser_from_doc(__doc__)
    parser.add_argument('config', type=config_file, help='a config path, or a config name')
    parser.add_argument('checkpoint')
    parser.add_argument(
        '--out',
        required=True,
        help='the file to write: .onnx (--format onnx) or .xml (the IRs, '
        'with a .bin beside it); replaces an earlier export, any other '
        'existing file only with --force',
    )
    parser.add_argument('--format', default='onnx', help=f'one of {", ".join(FORMATS)} (default onnx)')
    parser.add_argument(
        '--size',
        type=image_size,
        required=True,
        help='HxW the graph is traced and checked at, e.g. 400x666 (it runs at any size)',
    )
    parser.add_argument('--image', help='image for the check (default: a generated scene)')
    parser.add_argument(
        '--calibration-images',
        type=int,
        default=None,
        help='openvino-int8: images of the training set to calibrate with (default 64)',
    )
    parser.add_argument('--seed', type=int, default=0, help='openvino-int8: seed of the calibration pick')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--topk', type=int, default=20, help='detections compared (default 20)')
    parser.add_argument(
        '--force',
        action='store_true',
        help='replace an existing --out that is not an export of this tool (never an input)',
    )
    return parser.parse_args(argv)


def _default_image(folder: Path) -> Path:
    from ..data import make_synthetic_coco

    return make_synthetic_coco(folder / 'scene', num_train=0, num_val=1, size=256) / 'val' / '000000.png'


def is_export(path: Path) -> bool:
    """Whether ``path`` is a file this tool wrote (it carries pit-det's metadata)."""
    try:
        exported_metadata(path)
    except (CheckpointReadError, FileNotFoundError, ImportError):
        return False
    return True


def check_args(args: argparse.Namespace) -> None:
    """Every argument, before a model is built.

    Raises:
        ExportError, OutputError: naming the argument and what to do.
    """
    if args.format not in FORMATS:
        raise ExportError(f'--format {args.format}: use one of {", ".join(FORMATS)}')
    require_tools(args.format)
    if args.format != 'openvino-int8' and args.calibration_images is not None:
        raise ExportError('--calibration-images goes with --format openvino-int8')
    if args.calibration_images is not None and args.calibration_images < 1:
        raise ExportError(f'--calibration-images {args.calibration_images}: at least 1')
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint'), (args.image, '--image')):
        if path is not None and not Path(path).is_file():
            raise ExportError(f'{what} not found: {path}')
    if args.topk < 1:
        raise ExportError(f'--topk {args.topk}: compare at least 1 detection')
    if args.opset < 16:
        raise ExportError(f'--opset {args.opset}: GridSample needs opset >= 16')
    if min(args.size) < MIN_SIDE:  # every detector's own minimum (min_side) is at least this: known before it is built
        raise ExportError(f'--size {args.size[0]}x{args.size[1]}: this detector needs at least {MIN_SIDE} px per side')
    inputs = [('config', args.config), ('checkpoint', args.checkpoint), ('image', args.image)]
    check_file_output(args.out, inputs, option='--out', own=is_export, force=args.force)
    suffix = '.onnx' if args.format == 'onnx' else '.xml'
    if Path(args.out).suffix != suffix:
        raise ExportError(f'--out {args.out}: a --format {args.format} file is named *{suffix}')
    if suffix == '.xml':  # the weights file beside it
        bin_file = Path(args.out).with_suffix('.bin')
        check_file_output(
            bin_file,
            inputs,
            option="--out's weights file",
            force=args.force or is_export(args.out) or not bin_file.exists(),
        )


class _NotReproduced(Exception):
    """The exported file does not reproduce mmdet's predict: it is not kept."""


def check_sizes(model, height: int, width: int) -> list[tuple[int, int]]:
    """The sizes the graph is checked at besides ``--size``: three quarters of the height (another aspect ratio)
    and the smallest 1:4 size with a one-pixel level (:func:`~pit_det.deploy.onnx.one_pixel_size`), each where the
    detector runs it."""
    sizes = [(max(32, height * 3 // 4 // 8 * 8), width), one_pixel_size(model)]
    return [size for size in sizes if size is not None and shape_problem(model, *size) is None]


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    height, width = args.size
    results = []
    try:
        check_args(args)
        model = build_exportable(args.config, args.checkpoint)
        check_shape(model, height, width)
        calibration = None
        if args.format == 'openvino-int8':
            from ..deploy.openvino import CALIBRATION_IMAGES, calibration_images

            calibration = calibration_images(model.cfg, args.calibration_images or CALIBRATION_IMAGES, args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            source = args.image or _default_image(Path(tmp))
            images = [load_image(source, height, width)] + [
                load_image(source, *size) for size in check_sizes(model, height, width)
            ]

        def check(runtime: Runtime) -> None:
            for batch in (torch.cat([images[0], images[0].flip(-1)]), *images[1:]):  # a batch of two, other sizes
                results.append(compare(model, runtime, batch, args.topk))
                print(results[-1], flush=True)
            if args.format != 'openvino-int8' and not all(result.ok for result in results):
                raise _NotReproduced

        def write_onnx(tmp: Path) -> None:
            export(model, height, width, tmp, args.opset)
            print(
                f'exported {args.out} ({tmp.stat().st_size / 2**20:.1f} MiB), onnx.checker: valid, opset {args.opset}',
                flush=True,
            )
            check(Runtime('onnxruntime', tmp))

        if args.format == 'onnx':
            atomic_write(args.out, write_onnx)
        else:
            write_ir(args, model, calibration, check)
    except (
        ExportError,
        OutputError,
        CheckpointMismatchError,
        CheckpointReadError,
        FileNotFoundError,
        ValueError,
    ) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    except _NotReproduced:
        print(
            f"error: the exported graph does not reproduce mmdet's predict within the tolerances above; {args.out} "
            'was not written',
            file=sys.stderr,
        )
        return 1
    print(f'wrote {args.out}' + (f' and {Path(args.out).with_suffix(".bin")}' if args.format != 'onnx' else ''))
    return 0


def write_ir(args: argparse.Namespace, model, calibration, check) -> None:
    """The IR of ``--format openvino``/``openvino-int8``, checked in OpenVINO f32 before it is written."""
    import time

    from ..deploy.openvino import save_ir, to_openvino

    height, width = args.size
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = export(model, height, width, Path(tmp) / 'model.onnx', args.opset)
        start = time.perf_counter()
        ir = to_openvino(onnx_file, metadata(model, height, width), args.format, calibration)
        if calibration:
            print(
                f'quantised to INT8 with NNCF on {len(calibration)} calibration images of the training set '
                f'(seed {args.seed}) in {time.perf_counter() - start:.0f} s',
                flush=True,
            )
        save_ir(ir, args.out, check=lambda written: check(Runtime(args.format, written, precision='f32')))


if __name__ == '__main__':
    sys.exit(main())
