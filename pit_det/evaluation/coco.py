"""COCO results files compared: the 12 COCO numbers, per-class AP, PR curves and error analyses.

pycocotools computes every number. The COCO error breakdown (C75, C50, Loc, Sim, Oth, BG, FN) is mmdet's
``tools/analysis_tools/coco_error_analysis.py`` (shipped in mmdet's wheel; its per-class analysis and plot are called
as they are); TIDE's error types (Cls, Loc, Both, Dupe, Bkg, Miss, as dAP) come from ``tidecv``, fed from memory so it
never reads or downloads annotation files itself.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np

from ..data.coco import is_box, is_finite_number
from ..outputs import save_figure

METRICS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')
CLASS_METRICS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')
BREAKDOWN = ('C75', 'C50', 'Loc', 'Sim', 'Oth', 'BG', 'FN')
TIDE_ERRORS = ('Cls', 'Loc', 'Both', 'Dupe', 'Bkg', 'Miss')


class EvaluationError(ValueError):
    """Bad input to the evaluation; the message names the file and the first bad entry."""


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def load_ground_truth(ann_file: str | Path):
    """pycocotools' COCO for ``ann_file``.

    Annotations without ``area`` get the box's (with a warning), as COCO's small/medium/large split needs one.

    Raises:
        EvaluationError: the file is missing or not COCO detection format (:func:`pit_det.data.coco.read_coco`
            names the first bad entry), or holds no annotation.
    """
    from pycocotools.coco import COCO

    from ..data.coco import DatasetError, fill_missing_area, read_coco

    try:
        data = read_coco(ann_file).data  # COCO detection format, every entry checked
    except DatasetError as exc:
        raise EvaluationError(f'annotations: {exc}') from None
    path = Path(ann_file)
    if not data['annotations']:
        raise EvaluationError(
            f'annotations {path} hold no annotations (no ground-truth box): there is nothing to '
            'score against; give the annotation file of the set the results were predicted on'
        )
    missing_area = fill_missing_area(data)
    if missing_area:
        warnings.warn(
            f'annotations {path}: {missing_area} annotations have no "area"; using box width x height '
            "(COCO's own files give the mask area, which the small/medium/large split uses)",
            RuntimeWarning,
            stacklevel=2,
        )
    gt = COCO()
    gt.dataset = data
    with _quiet():
        gt.createIndex()
    return gt


def load_results(path: str | Path, gt) -> list[dict]:
    """The detections of a COCO results file (``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``).

    Raises:
        EvaluationError: naming ``path`` and the first bad entry: an empty or malformed file, an entry without the
            four keys, a box that is not four finite numbers or has a negative size, a score that is not a finite
            number, an image or category id that is not an integer or that the annotations do not have.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f'results {path} not found')
    text = path.read_text()
    if not text.strip():
        raise EvaluationError(f'results {path} are empty: no JSON at all (a run that predicts nothing writes [])')
    try:
        results = json.loads(text)
    except ValueError as exc:
        raise EvaluationError(f'results {path} are not valid JSON: {exc}') from None
    if not isinstance(results, list):
        raise EvaluationError(f'results {path} must be a JSON list of detections, found {type(results).__name__}')
    images, categories = set(gt.getImgIds()), set(gt.getCatIds())
    for i, det in enumerate(results):
        where = f'results {path}, entry {i} ({json.dumps(det)[:120]})'
        if not isinstance(det, dict) or not {'image_id', 'category_id', 'bbox', 'score'} <= set(det):
            raise EvaluationError(f'{where}: needs image_id, category_id, bbox and score')
        box = det['bbox']
        if not is_box(box):
            raise EvaluationError(f'{where}: bbox must be four finite numbers [x, y, width, height]')
        if box[2] < 0 or box[3] < 0:
            raise EvaluationError(
                f'{where}: the box has a negative size (width {box[2]}, height {box[3]}); COCO '
                'boxes are [x, y, width, height], not corners'
            )
        if not is_finite_number(det['score']):
            raise EvaluationError(f'{where}: score must be a finite number, found {json.dumps(det["score"])}')
        for key in ('image_id', 'category_id'):
            if not isinstance(det[key], int) or isinstance(det[key], bool):
                raise EvaluationError(
                    f'{where}: {key} must be an integer as in the annotations, found {json.dumps(det[key])}'
                )
        if det['image_id'] not in images:
            raise EvaluationError(f'{where}: image_id {det["image_id"]} is not in the annotations')
        if det['category_id'] not in categories:
            raise EvaluationError(
                f'{where}: category_id {det["category_id"]} is not in the annotations '
                f'(they have {sorted(categories)[:10]})'
            )
    return results


def _coco_eval(gt, results: list[dict]):
    from pycocotools.cocoeval import COCOeval

    with _quiet():
        dt = gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(gt, dt, 'bbox')
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def evaluate(gt, results: list[dict]) -> dict:
    """The 12 COCO numbers and per-class AP, AP50, AP75, APs, APm, APl (class names as keys).

    Results that predict nothing give 0.0 everywhere, with a warning.
    """
    names = {c['id']: c['name'] for c in gt.loadCats(gt.getCatIds())}
    if not results:
        warnings.warn('the results hold no detection: every number is 0.0', RuntimeWarning, stacklevel=2)
        return dict({m: 0.0 for m in METRICS}, per_class={n: {m: 0.0 for m in CLASS_METRICS} for n in names.values()})
    evaluator = _coco_eval(gt, results)
    out = {m: float(v) for m, v in zip(METRICS, evaluator.stats, strict=True)}
    precision = evaluator.eval['precision']  # (iou thresholds, recall, classes, areas, max dets)
    per_class = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, :, -1]
        per_class[names[cat_id]] = dict(
            AP=_mean_valid(p[:, :, 0]),
            AP50=_mean_valid(p[0, :, 0]),
            AP75=_mean_valid(p[5, :, 0]),
            APs=_mean_valid(p[:, :, 1]),
            APm=_mean_valid(p[:, :, 2]),
            APl=_mean_valid(p[:, :, 3]),
        )
    out['per_class'] = per_class
    out['_precision'] = precision
    return out


def _mmdet_error_analysis():
    import mmdet

    path = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'analysis_tools' / 'coco_error_analysis.py'
    spec = importlib.util.spec_from_file_location('mmdet_coco_error_analysis', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


AREAS = ('allarea', 'small', 'medium', 'large')  # mmdet's makeplot draws one figure per area range


def plot_files(stem: str) -> list[str]:
    """Every file ``--out-dir`` receives for one results file, relative to the folder: the PR curves
    (:func:`plot_pr_curves`), mmdet's COCO error plots (``bbox-{stem}_coco-errors-{area}.png``, :func:`error_breakdown`)
    and TIDE's summary in a folder of its own (:func:`tide_errors`). The tool checks all of them before any work."""
    return (
        [f'{stem}_pr.png']
        + [f'bbox-{stem}_coco-errors-{area}.png' for area in AREAS]
        + [f'{stem}_tide/{stem}_bbox_summary.png']
    )


def error_breakdown(gt, results: list[dict], plot_dir: str | Path | None = None, name: str = 'results') -> dict:
    """The COCO analysis as mmdet's ``coco_error_analysis.py`` computes it: AP (all areas, 100 detections) at IoU
    0.75 (C75), 0.5 (C50), 0.1 (Loc), without super-category confusion (Sim), without any class confusion (Oth),
    without background false positives (BG), and 1.0 (FN). ``plot_dir``: mmdet's plot for all classes."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {t: 0.0 for t in BREAKDOWN[:-1]} | {'FN': 1.0}
    tool = _mmdet_error_analysis()
    with _quiet():
        dt = gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(copy.deepcopy(gt), copy.deepcopy(dt), 'bbox')
        evaluator.params.iouThrs = [0.75, 0.5, 0.1]
        evaluator.params.maxDets = [100]
        evaluator.evaluate()
        evaluator.accumulate()
        ps = evaluator.eval['precision']
        ps = np.vstack([ps, np.zeros((4, *ps.shape[1:]))])
        for k, cat_id in enumerate(gt.getCatIds()):
            _, analysis = tool.analyze_individual_category(k, dt, gt, cat_id, 'bbox')
            ps[3, :, k] = analysis['ps_supercategory']
            ps[4, :, k] = analysis['ps_allcategory']
            ps[ps == -1] = 0
            ps[5, :, k] = ps[4, :, k] > 0
            ps[6, :, k] = 1.0
        if plot_dir is not None:
            Path(plot_dir).mkdir(parents=True, exist_ok=True)
            tool.makeplot(evaluator.params.recThrs, ps, str(plot_dir) + '/', f'{name}_coco-errors', 'bbox')
    return {t: float(ps[i, :, :, 0, 0].mean()) for i, t in enumerate(BREAKDOWN)}


def tidecv():
    """The ``tidecv`` module (the ``eval`` extra), or :class:`EvaluationError` saying how to install it."""
    try:
        import tidecv
    except ImportError as exc:
        raise EvaluationError(
            f"TIDE's error analysis (--out-dir) needs tidecv ({exc}): pip install "
            '"pit-det[eval]" (a setup without extras, such as make demo\'s, leaves it out)'
        ) from None
    return tidecv


def tide_errors(gt, results: list[dict], plot_dir: str | Path | None = None, name: str = 'results') -> dict:
    """TIDE's main errors (dAP at IoU 0.5): classification, localisation, both, duplicates, background, missed."""
    module = tidecv()
    TIDE, Data = module.TIDE, module.Data
    truth, preds = Data('ground truth'), Data(name)
    for cat in gt.loadCats(gt.getCatIds()):
        truth.add_class(cat['id'], cat['name'])
        preds.add_class(cat['id'], cat['name'])
    for img in gt.loadImgs(gt.getImgIds()):
        truth.add_image(img['id'], str(img.get('file_name', img['id'])))
    for ann in gt.loadAnns(gt.getAnnIds()):
        if ann.get('iscrowd', 0):
            truth.add_ignore_region(ann['image_id'], ann['category_id'], ann['bbox'])
        else:
            truth.add_ground_truth(ann['image_id'], ann['category_id'], ann['bbox'])
    for det in results:
        preds.add_detection(det['image_id'], det['category_id'], det['score'], det['bbox'])
    tide = TIDE()
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # seaborn's deprecation notices about tidecv's plotting calls
        tide.evaluate(truth, preds, mode=TIDE.BOX, name=name)
        errors = tide.get_main_errors()[name]
        if plot_dir is not None and sum(errors.values()) > 0:  # tidecv's summary plot divides by the total
            Path(plot_dir).mkdir(parents=True, exist_ok=True)
            tide.plot(str(plot_dir))
    return {t: float(errors.get(t, 0.0)) for t in TIDE_ERRORS}


def plot_pr_curves(precision: np.ndarray, path: str | Path, title: str) -> Path:
    """Precision against recall at IoU 0.5, 0.75 and averaged over 0.5:0.95 (all classes, all areas)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    recall = np.linspace(0, 1, precision.shape[1])
    p = np.where(precision[..., 0, -1] > -1, precision[..., 0, -1], np.nan)  # (iou, recall, classes)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, curve in (
        ('IoU 0.50', np.nanmean(p[0], axis=-1)),
        ('IoU 0.75', np.nanmean(p[5], axis=-1)),
        ('IoU 0.50:0.95', np.nanmean(p, axis=(0, 2))),
    ):
        ax.plot(recall, curve, label=f'{label} (AP {np.nanmean(curve):.3f})')
    ax.set(xlabel='recall', ylabel='precision', title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def fmt(value: float, digits: int = 3) -> str:
    return '-' if value is None or (isinstance(value, float) and math.isnan(value)) else f'{value:.{digits}f}'
