"""COCO evaluation scripts and the robustness benchmark, on the synthetic set."""

import copy
import json
import random
import runpy
import sys

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pit_det.cli import coco_eval, test_robustness
from pit_det.data import make_synthetic_coco
from pit_det.evaluation import robustness
from pit_det.evaluation.coco import METRICS, error_breakdown, evaluate, load_ground_truth, tide_errors


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = make_synthetic_coco(tmp_path_factory.mktemp('eval') / 'synthetic', num_train=2, num_val=12)
    ann = json.loads((root / 'annotations' / 'val.json').read_text())
    perfect = [
        dict(image_id=a['image_id'], category_id=a['category_id'], bbox=a['bbox'], score=1.0)
        for a in ann['annotations']
    ]
    rng = random.Random(0)
    noisy = [
        dict(
            d,
            bbox=[d['bbox'][0] + rng.uniform(-5, 5), d['bbox'][1] + rng.uniform(-5, 5), *d['bbox'][2:]],
            score=rng.random(),
            category_id=d['category_id'] if rng.random() > 0.25 else d['category_id'] % 3 + 1,
        )
        for d in perfect
    ] + [dict(image_id=1, category_id=2, bbox=[1, 1, 10, 10], score=0.9)]
    files = {}
    for name, results in (('perfect', perfect), ('noisy', noisy)):
        files[name] = root / f'{name}.bbox.json'
        files[name].write_text(json.dumps(results))
    return root, root / 'annotations' / 'val.json', files


def test_every_number_equals_pycocotools(data):
    _, ann, files = data
    gt = load_ground_truth(ann)
    results = json.loads(files['noisy'].read_text())
    ours = evaluate(gt, results)
    reference = COCO(str(ann))
    direct = COCOeval(reference, reference.loadRes(str(files['noisy'])), 'bbox')
    direct.evaluate(), direct.accumulate(), direct.summarize()
    assert [ours[m] for m in METRICS] == pytest.approx(list(direct.stats), abs=1e-12)
    assert 0 < ours['AP'] < 1
    for cat in reference.loadCats(reference.getCatIds()):  # one class at a time, evaluated on its own
        alone = COCOeval(reference, reference.loadRes(str(files['noisy'])), 'bbox')
        alone.params.catIds = [cat['id']]
        alone.evaluate(), alone.accumulate(), alone.summarize()
        per_class = ours['per_class'][cat['name']]
        assert [per_class[m] for m in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')] == pytest.approx(
            list(alone.stats[:6]), abs=1e-12
        )


def test_side_by_side_json_and_zero_difference(data, tmp_path, capsys):
    _, ann, files = data
    out = tmp_path / 'eval.json'
    assert (
        coco_eval.main([str(ann), str(files['noisy']), str(files['noisy']), '--names', 'a', 'b', '--out', str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    diff_column = [line.split()[-1] for line in printed.split('\n\n')[0].splitlines()[2:]]
    assert len(diff_column) == 12 and set(diff_column) == {'+0.000'}
    report = json.loads(out.read_text())['results']
    assert report['a'] == report['b'] and set(report['a']) == set(METRICS) | {'per_class'}
    assert set(report['a']['per_class']) == {'square', 'disc', 'triangle'}


def test_perfect_results_are_all_c75_and_have_no_tide_errors(data, tmp_path):
    _, ann, files = data
    gt = load_ground_truth(ann)
    perfect = json.loads(files['perfect'].read_text())
    breakdown = error_breakdown(gt, perfect, tmp_path, 'perfect')
    assert breakdown == {t: pytest.approx(1.0) for t in ('C75', 'C50', 'Loc', 'Sim', 'Oth', 'BG', 'FN')}
    assert tide_errors(gt, perfect) == {t: 0.0 for t in ('Cls', 'Loc', 'Both', 'Dupe', 'Bkg', 'Miss')}
    noisy = error_breakdown(gt, json.loads(files['noisy'].read_text()))
    assert noisy['C75'] < noisy['C50'] <= noisy['Loc'] <= noisy['Sim'] <= noisy['Oth'] <= noisy['BG'] <= 1.0
    assert tide_errors(gt, json.loads(files['noisy'].read_text()))['Cls'] > 0  # a quarter of the labels are wrong


def test_plots_are_written(data, tmp_path, capsys):
    _, ann, files = data
    assert coco_eval.main([str(ann), str(files['perfect']), str(files['noisy']), '--out-dir', str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert 'COCO error breakdown' in printed and 'TIDE errors' in printed
    for name in ('perfect.bbox_pr.png', 'noisy.bbox_pr.png', 'bbox-noisy.bbox_coco-errors-allarea.png'):
        assert (tmp_path / name).stat().st_size > 5000, name
    assert list((tmp_path / 'noisy.bbox_tide').glob('*.png'))
    # what the tool checks before any work is exactly what it wrote (TIDE draws nothing for the perfect results)
    from pit_det.evaluation.coco import plot_files

    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*') if p.is_file()}
    assert written == set(plot_files('noisy.bbox')) | set(plot_files('perfect.bbox')[:-1])


def test_an_input_where_a_plot_goes_is_refused_before_any_work(data, tmp_path, capsys):
    """The results file at plots/bbox-r_coco-errors-small.png was replaced by that plot, with exit 0."""
    import hashlib

    _, ann, files = data
    plots = tmp_path / 'plots'
    plots.mkdir()
    results = plots / 'bbox-r_coco-errors-small.png'
    results.write_bytes(files['noisy'].read_bytes())
    before = hashlib.sha256(results.read_bytes()).hexdigest()
    assert coco_eval.main([str(ann), str(results), '--names', 'r', '--out-dir', str(plots)]) == 1
    captured = capsys.readouterr()
    assert f'--out-dir {plots}: its file {results} is the results file' in captured.err and captured.out == ''
    assert hashlib.sha256(results.read_bytes()).hexdigest() == before
    (plots / 'n_tide').write_text('a file of the user')  # where TIDE's folder goes
    assert coco_eval.main([str(ann), str(files['noisy']), '--names', 'n', '--out-dir', str(plots)]) == 1
    err = capsys.readouterr().err
    assert f'{plots / "n_tide"} is a file, not a folder' in err and 'Traceback' not in err
    assert sorted(p.name for p in plots.iterdir()) == ['bbox-r_coco-errors-small.png', 'n_tide']


@pytest.mark.parametrize(
    'content,message',
    [
        ('', 'are empty'),
        ('[{"image_id": 1,', 'are not valid JSON'),
        ('{"image_id": 1}', 'must be a JSON list'),
        (
            '[{"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]',
            'entry 0 .*image_id 999 is not in the annotations',
        ),
        (
            '[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}, '
            '{"image_id": 1, "category_id": 7, "bbox": [0, 0, 5, 5], "score": 0.5}]',
            'entry 1 .*category_id 7 is not in the annotations',
        ),
        ('[{"image_id": 1, "category_id": 1, "bbox": [10, 10, -4, 5], "score": 0.5}]', 'entry 0 .*negative size'),
    ],
)
def test_bad_results_name_the_file_and_entry(root, data, tmp_path, capsys, monkeypatch, content, message):
    import re

    _, ann, _ = data
    bad = tmp_path / 'bad.json'
    bad.write_text(content)
    if content == '':  # once through the script itself (in this process): the message, no traceback
        script = root / 'tools' / 'coco_eval.py'
        with pytest.raises(SystemExit) as stop, monkeypatch.context() as patch:
            patch.setattr(sys, 'argv', [str(script), str(ann), str(bad)])
            runpy.run_path(str(script), run_name='__main__')
        code, err = stop.value.code, capsys.readouterr().err
    else:
        code, err = coco_eval.main([str(ann), str(bad)]), capsys.readouterr().err
    assert code == 1 and 'Traceback' not in err
    assert str(bad) in err
    assert re.search(message, err), err


def test_results_that_predict_nothing_give_zero_with_a_warning(data, tmp_path, capsys):
    _, ann, _ = data
    empty = tmp_path / 'empty.json'
    empty.write_text('[]')
    assert coco_eval.main([str(ann), str(empty), '--out-dir', str(tmp_path / 'plots')]) == 0
    captured = capsys.readouterr()
    assert 'the results hold no detection' in captured.err
    assert captured.out.splitlines()[2].split() == ['AP', '0.000']


# ------------------------------------------------------------------------------------------------- robustness
def test_each_corruption_changes_the_image_keeping_shape_and_dtype(data):
    root, _, _ = data
    from PIL import Image

    image = np.asarray(Image.open(root / 'val' / '000000.png').convert('RGB'))
    for name in robustness.CORRUPTIONS:
        np.random.seed(0)
        out = robustness.corrupt_rgb(image, name, 3)
        assert out.shape == image.shape and out.dtype == np.uint8, name
        assert np.abs(out.astype(int) - image).mean() > 0.5, name
        assert robustness.corrupt_rgb(image, name, 0) is image
    from skimage.filters import gaussian  # gaussian_blur as the package computes it, multichannel spelt anew

    expected = np.uint8(np.clip(gaussian(image / 255.0, sigma=2, channel_axis=-1), 0, 1) * 255)
    assert np.array_equal(robustness.corrupt_rgb(image, 'gaussian_blur', 2), expected)
    assert not hasattr(np, 'float_') or 'float_' not in np.__dict__  # the restored API is put away again


def test_occlusion_is_seeded_per_image_and_covers_the_ratio():
    image = np.full((100, 160, 3), 200, dtype=np.uint8)
    a, b = robustness.occlude(image, 0.3, 'a.jpg'), robustness.occlude(image, 0.3, 'b.jpg')
    covered = (a != 200).any(-1).mean()
    assert 0.3 <= covered < 0.45 and np.array_equal(a, robustness.occlude(image, 0.3, 'a.jpg'))
    assert not np.array_equal(a, b) and robustness.occlude(image, 0.0, 'a.jpg') is image


@pytest.fixture(scope='module')
def detector_checkpoint(tmp_path_factory, data):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from pit_det.demo import load_demo_config

    register_all_modules()
    root, _, _ = data
    tmp = tmp_path_factory.mktemp('detector')
    cfg = load_demo_config(root, tmp / 'work')
    cfg.test_dataloader.batch_size = 4
    config = tmp / 'config.py'
    cfg.dump(str(config))
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    checkpoint = tmp / 'model.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    return config, checkpoint


def test_subset_run_writes_json_and_png_and_severity_zero_is_clean(detector_checkpoint, tmp_path, capsys):
    config, checkpoint = detector_checkpoint
    out = tmp_path / 'rob'
    assert (
        test_robustness.main(
            [
                str(config),
                str(checkpoint),
                '--corruptions',
                'fog',
                '--severities',
                '0',
                '2',
                '--occlusion',
                '0.3',
                '--out-dir',
                str(out),
            ]
        )
        == 0
    )
    result = json.loads((out / 'robustness.json').read_text())
    assert result['corruptions']['fog']['0'] == result['clean']  # severity 0: the clean images, the clean mAP
    assert result['mPC'] == result['corruptions']['fog']['2'] and result['severities_run'] == [2]
    assert set(result['occlusion']) == {'0.3'} and (out / 'robustness.png').stat().st_size > 10_000
    assert 'mPC' in capsys.readouterr().out
    other = tmp_path / 'other.json'
    other.write_text(json.dumps(dict(result, clean=0.5, mPC=0.25, rPC=0.5)))
    assert test_robustness.main(['--compare', str(out / 'robustness.json'), str(other)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[1:] == [str(out / 'robustness.json'), str(other)]
    assert table[3].split() == ['mPC', f'{result["mPC"]:.3f}', '0.250']


def test_robustness_errors(detector_checkpoint, capsys):
    config, checkpoint = detector_checkpoint
    assert test_robustness.main([str(config), str(checkpoint), '--corruptions', 'rain']) == 1
    assert "unknown corruption 'rain'" in capsys.readouterr().err
    assert test_robustness.main([str(config), str(checkpoint), '--severities', '6']) == 1
    assert 'severity 6' in capsys.readouterr().err
