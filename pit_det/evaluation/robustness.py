"""Detection robustness: the benchmark of Michaelis et al. 2019 and an occlusion test.

"Benchmarking Robustness in Object Detection" (Michaelis et al., arXiv 1907.07484) evaluates a detector on the test
set corrupted by 15 corruptions at 5 severities and reports mAP per corruption and severity, the mean over them (mPC)
and mPC relative to the clean mAP (rPC). Here mPC and rPC average over the corruptions and severities that were run
(mmdet's ``robustness_eval.py`` divides by all five severities whatever was run).

Corruptions come from ``imagecorruptions`` 1.1.2 (the benchmark's own package) and are applied to the **RGB** image
(mmdet's ``Corrupt`` hands them the BGR image). Three of them call APIs that numpy 2 and scikit-image >= 0.19 removed
(``gaussian(..., multichannel=True)`` in ``gaussian_blur`` and ``glass_blur``, ``np.float_`` in ``fog``); they run
the package's own code with those two names restored for the duration of the call (:func:`restored_api`).

Occlusion: square patches (side ``patch`` x the image's short side) at seeded random positions are filled with the
ImageNet mean colour until at least ``ratio`` of the image area is covered; the positions depend only on the seed
and the image file name, so every model sees the same occlusions.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS

from ..outputs import save_figure, table, write_text
from .coco import fmt

CORRUPTIONS = (
    'gaussian_noise',
    'shot_noise',
    'impulse_noise',
    'defocus_blur',
    'glass_blur',
    'motion_blur',
    'zoom_blur',
    'snow',
    'frost',
    'fog',
    'brightness',
    'contrast',
    'elastic_transform',
    'pixelate',
    'jpeg_compression',
)
EXTRA_CORRUPTIONS = ('speckle_noise', 'gaussian_blur', 'spatter', 'saturate')  # the package's held-out four
ALL_CORRUPTIONS = CORRUPTIONS + EXTRA_CORRUPTIONS
SEVERITIES = (1, 2, 3, 4, 5)
REPORT_FILES = ('robustness.json', 'robustness.png')  # what write_outputs writes into its folder
IMAGENET_MEAN_RGB = (124, 116, 104)


class RobustnessError(ValueError):
    """A request the robustness benchmark cannot honour; the message says what to do."""


def _imagecorruptions():
    try:
        import imagecorruptions
    except ImportError as exc:
        raise RobustnessError(
            f'the robustness benchmark needs imagecorruptions ({exc}): pip install '
            '"pit-det[eval]" (or: pip install imagecorruptions==1.1.2 scikit-image)'
        ) from None
    return imagecorruptions


@contextlib.contextmanager
def restored_api():
    """``skimage.filters.gaussian(..., multichannel=...)`` and ``np.float_`` as imagecorruptions 1.1.2 calls them."""
    from skimage.filters import gaussian

    module = _imagecorruptions().corruptions

    def gaussian_multichannel(image, sigma=1, multichannel=None, **kwargs):
        if multichannel is not None:
            kwargs['channel_axis'] = -1 if multichannel else None
        return gaussian(image, sigma=sigma, **kwargs)

    had_float = 'float_' in np.__dict__
    module.gaussian, np.float_ = gaussian_multichannel, np.float64
    try:
        yield
    finally:
        module.gaussian = gaussian
        if not had_float:
            del np.float_


def corrupt_rgb(image: np.ndarray, corruption: str, severity: int) -> np.ndarray:
    """``image`` (H, W, 3) uint8 RGB corrupted; severity 0 returns it unchanged."""
    if corruption not in ALL_CORRUPTIONS:
        raise RobustnessError(
            f"unknown corruption {corruption!r}; the benchmark's: {', '.join(CORRUPTIONS)} "
            f'(also: {", ".join(EXTRA_CORRUPTIONS)})'
        )
    if severity == 0:
        return image
    if severity not in SEVERITIES:
        raise RobustnessError(f'severity {severity}: use 0 (clean) to 5')
    with restored_api():
        out = _imagecorruptions().corrupt(image, corruption_name=corruption, severity=severity)
    return np.uint8(np.clip(out, 0, 255))[: image.shape[0], : image.shape[1]]


def occlude(image: np.ndarray, ratio: float, key: str, seed: int = 0, patch: float = 0.125) -> np.ndarray:
    """``image`` with square patches filled with the mean colour until at least ``ratio`` of it is covered."""
    if not 0 <= ratio < 1:
        raise RobustnessError(f'occlusion ratio {ratio}: use a fraction in [0, 1)')
    if ratio == 0:
        return image
    h, w = image.shape[:2]
    side = max(1, round(patch * min(h, w)))
    digest = hashlib.sha256(f'{seed}:{key}'.encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], 'little'))
    mask = np.zeros((h, w), dtype=bool)
    while mask.mean() < ratio:
        y, x = rng.integers(0, max(1, h - side + 1)), rng.integers(0, max(1, w - side + 1))
        mask[y : y + side, x : x + side] = True
    out = image.copy()
    out[mask] = IMAGENET_MEAN_RGB[::-1] if image.ndim == 3 else np.mean(IMAGENET_MEAN_RGB)
    return out


@TRANSFORMS.register_module()
class RGBCorrupt(BaseTransform):
    """Corrupt ``results['img']`` (mmdet's BGR) in RGB, as the benchmark defines the corruptions."""

    def __init__(self, corruption: str, severity: int) -> None:
        self.corruption, self.severity = corruption, severity

    def transform(self, results: dict) -> dict:
        rgb = np.ascontiguousarray(results['img'][..., ::-1])
        results['img'] = np.ascontiguousarray(corrupt_rgb(rgb, self.corruption, self.severity)[..., ::-1])
        return results


@TRANSFORMS.register_module()
class Occlude(BaseTransform):
    """Fill seeded random square patches with the mean colour until ``ratio`` of the image is covered."""

    def __init__(self, ratio: float, seed: int = 0, patch: float = 0.125) -> None:
        self.ratio, self.seed, self.patch = ratio, seed, patch

    def transform(self, results: dict) -> dict:
        key = Path(str(results.get('img_path', results.get('img_id', '')))).name
        results['img'] = occlude(results['img'], self.ratio, key, self.seed, self.patch)
        return results


def _with_transform(pipeline: list, transform: dict | None) -> list:
    """The test pipeline with ``transform`` right after image loading."""
    steps = copy.deepcopy(list(pipeline))
    if transform is not None:
        at = next((i for i, s in enumerate(steps) if 'LoadImage' in str(s.get('type'))), None)
        if at is None:
            raise RobustnessError('the test pipeline has no LoadImageFromFile step to corrupt after')
        steps.insert(at + 1, transform)
    return steps


def check_request(config: str, checkpoint: str, corruptions=CORRUPTIONS, severities=SEVERITIES, occlusion=()) -> None:
    """Every argument of :func:`evaluate_robustness`, checked before anything is built or evaluated.

    Raises:
        RobustnessError: naming the argument and the values it takes.
    """
    for name in corruptions:
        if name not in ALL_CORRUPTIONS:
            raise RobustnessError(
                f"unknown corruption {name!r}; the benchmark's: {', '.join(CORRUPTIONS)} "
                f'(also: {", ".join(EXTRA_CORRUPTIONS)})'
            )
    for severity in severities:
        if severity not in (0, *SEVERITIES):
            raise RobustnessError(f'severity {severity}: use 1 to 5 (0 is the clean image)')
    for ratio in occlusion:
        if not 0 < ratio < 1:
            raise RobustnessError(
                f'--occlusion {ratio}: give fractions of the image area between 0 and 1, e.g. 0.1 0.3 0.5'
            )
    if corruptions:
        _imagecorruptions()
    for path, what in ((config, 'config'), (checkpoint, 'checkpoint')):
        if not Path(path).is_file():
            raise RobustnessError(f'{what} {path} not found')


def read_report(path: str | Path) -> dict:
    """A ``robustness.json`` written by :func:`write_outputs`, for ``--compare``.

    Raises:
        RobustnessError: the file is missing, not JSON, or not such a report (naming what is missing).
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise RobustnessError(f'--compare {path}: not a robustness.json ({exc})') from None
    if not isinstance(data, dict):
        raise RobustnessError(f'--compare {path}: not a robustness.json (a JSON {type(data).__name__}, not an object)')
    missing = [k for k in ('clean', 'corruptions', 'occlusion', 'mPC', 'rPC') if k not in data]
    if missing:
        raise RobustnessError(
            f'--compare {path}: not a robustness.json (no {", ".join(missing)}); give files '
            'written by pit-det-test-robustness'
        )
    shapes_ok = (
        _number(data['clean'])
        and all(_number(data[k]) or data[k] is None for k in ('mPC', 'rPC'))
        and isinstance(data['corruptions'], dict)
        and isinstance(data['occlusion'], dict)
        and all(
            isinstance(per, dict) and all(_parses(s, int) and _number(v) for s, v in per.items())
            for per in data['corruptions'].values()
        )
        and all(_parses(k, float) and _number(v) for k, v in data['occlusion'].items())
    )
    if not shapes_ok:
        raise RobustnessError(
            f'--compare {path}: its numbers are not where pit-det-test-robustness writes them '
            '(clean: a number, mPC and rPC: numbers or null, corruptions: {name: {severity: mAP}}, '
            'occlusion: {ratio: mAP}; severities whole numbers, ratios numbers)'
        )
    return data


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parses(text, kind) -> bool:
    try:
        kind(text)
    except (TypeError, ValueError):
        return False
    return True


def evaluate_robustness(
    config: str,
    checkpoint: str,
    corruptions=CORRUPTIONS,
    severities=SEVERITIES,
    occlusion=(),
    work_dir: str | Path = 'work_dirs/robustness',
    cfg_options: dict | None = None,
    progress: Callable[[str], None] = print,
) -> dict:
    """mAP of ``checkpoint`` on the clean test set, under each corruption and severity, and under occlusion.

    The detector and its checkpoint are loaded once; each condition swaps the test pipeline and evaluates.
    """
    from mmcv.transforms import Compose
    from mmdet.registry import RUNNERS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    check_request(config, checkpoint, corruptions, severities, occlusion)
    register_all_modules()
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.load_from, cfg.work_dir = str(checkpoint), str(Path(work_dir) / 'runs')
    cfg.model.backbone.init_cfg = None  # the checkpoint holds every weight
    cfg.test_evaluator.pop('outfile_prefix', None)
    base_pipeline = cfg.test_dataloader.dataset.pipeline
    runner = RUNNERS.build(cfg)

    def evaluate(transform: dict | None, label: str) -> float:
        runner.test_dataloader.dataset.pipeline = Compose(_with_transform(base_pipeline, transform))
        metrics = runner.test()
        value = float(metrics['coco/bbox_mAP'])
        progress(f'{label}: mAP {value:.4f}')
        return value

    result = dict(
        config=str(config), checkpoint=str(checkpoint), clean=evaluate(None, 'clean'), corruptions={}, occlusion={}
    )
    for name in corruptions:
        result['corruptions'][name] = {
            str(s): evaluate(dict(type='RGBCorrupt', corruption=name, severity=s), f'{name} severity {s}')
            for s in severities
        }
    for ratio in occlusion:
        result['occlusion'][str(ratio)] = evaluate(dict(type='Occlude', ratio=ratio), f'occlusion {ratio:.0%}')
    result.update(summarize(result))
    return result


def summarize(result: dict) -> dict:
    """mPC (mean over the corruptions and severities run) and rPC = mPC / clean mAP."""
    values = [v for per in result['corruptions'].values() for s, v in per.items() if int(s) > 0]
    mpc = float(np.mean(values)) if values else None
    return dict(
        mPC=mpc,
        rPC=mpc / result['clean'] if mpc is not None and result['clean'] > 0 else None,
        severities_run=sorted({int(s) for per in result['corruptions'].values() for s in per if int(s) > 0}),
    )


def write_outputs(result: dict, out_dir: str | Path) -> list[Path]:
    """``robustness.json`` and ``robustness.png`` (mAP against severity, one line per corruption)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in REPORT_FILES]
    write_text(paths[0], json.dumps(result, indent=2))
    panels = 1 + bool(result['occlusion'])
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5), squeeze=False)
    ax = axes[0, 0]
    for name, per in result['corruptions'].items():
        severities = [0] + [int(s) for s in per]
        ax.plot(severities, [result['clean']] + list(per.values()), marker='o', label=name)
    ax.set(
        xlabel='severity (0 = clean)',
        ylabel='bbox mAP',
        title=f'corruptions: mPC {fmt(result["mPC"])}, rPC {fmt(result["rPC"])}',
    )
    ax.grid(alpha=0.3)
    if result['corruptions']:
        ax.legend(fontsize=7, ncol=2)
    if result['occlusion']:
        ratios = [0.0] + [float(r) for r in result['occlusion']]
        axes[0, 1].plot(ratios, [result['clean']] + list(result['occlusion'].values()), marker='o')
        axes[0, 1].set(xlabel='occluded fraction of the image', ylabel='bbox mAP', title='occlusion')
        axes[0, 1].grid(alpha=0.3)
    save_figure(fig, paths[1])
    return paths


def format_report(results: dict[str, dict]) -> str:
    """A table per condition with one column per run (for ``--compare``), mean mAP over severities per corruption."""
    names = list(results)
    rows = [
        ['clean mAP', *(f'{r["clean"]:.3f}' for r in results.values())],
        ['mPC', *(fmt(r['mPC']) for r in results.values())],
        ['rPC', *(fmt(r['rPC']) for r in results.values())],
    ]
    corruptions = list(dict.fromkeys(c for r in results.values() for c in r['corruptions']))
    for c in corruptions:
        rows.append(
            [
                c,
                *(
                    f'{np.mean([v for s, v in r["corruptions"][c].items() if int(s) > 0]):.3f}'
                    if c in r['corruptions']
                    else '-'
                    for r in results.values()
                ),
            ]
        )
    ratios = list(dict.fromkeys(k for r in results.values() for k in r['occlusion']))
    for k in ratios:
        rows.append(
            [
                f'occlusion {float(k):.0%}',
                *(f'{r["occlusion"][k]:.3f}' if k in r['occlusion'] else '-' for r in results.values()),
            ]
        )
    return table(['condition', *names], rows)
