"""pit-det-coco-eval never replaces an input, and refuses results and ground truth that would give a wrong number."""

import hashlib
import json
from pathlib import Path

import pytest

from pit_det.cli import coco_eval
from pit_det.data import make_synthetic_coco


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    root = make_synthetic_coco(tmp_path_factory.mktemp('coco') / 'synthetic', num_train=1, num_val=6)
    ann = root / 'annotations' / 'val.json'
    dets = [
        dict(image_id=a['image_id'], category_id=a['category_id'], bbox=a['bbox'], score=1.0)
        for a in json.loads(ann.read_text())['annotations']
    ]
    results = root / 'results.json'
    results.write_text(json.dumps(dets))
    return ann, results, dets


def run_eval(capsys, *argv):
    code = coco_eval.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize('target', ['results', 'ann'])
def test_coco_eval_json_never_replaces_an_input(coco, capsys, target):
    ann, results, _ = coco
    before = digest(ann), digest(results)
    path = results if target == 'results' else ann
    code, out, err = run_eval(capsys, ann, results, '--out', path)
    assert code == 1 and f'--out {path} is the' in err and 'AP' not in out
    code, _, err = run_eval(capsys, ann, results, '--out', path.parent / '.' / path.name, '--force')
    assert code == 1 and 'is the' in err
    assert (digest(ann), digest(results)) == before


def test_coco_eval_json_replaces_its_own_report_only(coco, tmp_path, capsys):
    ann, results, _ = coco
    report = tmp_path / 'report.json'
    assert run_eval(capsys, ann, results, '--out', report)[0] == 0
    assert run_eval(capsys, ann, results, '--out', report)[0] == 0  # an earlier report: replaced
    assert set(json.loads(report.read_text())['results']) == {'results.json'}
    theirs = tmp_path / 'theirs.json'
    theirs.write_text('[1, 2]')
    code, _, err = run_eval(capsys, ann, results, '--out', theirs)
    assert code == 1 and 'not an output of this tool' in err and theirs.read_text() == '[1, 2]'
    folder = tmp_path / 'folder'
    folder.mkdir()
    code, _, err = run_eval(capsys, ann, results, '--out', folder)
    assert code == 1 and 'is a folder' in err and 'Traceback' not in err


@pytest.mark.parametrize(
    'change,message',
    [
        (dict(score=float('nan')), 'score must be a finite number, found NaN'),
        (dict(score='0.9'), 'score must be a finite number, found "0.9"'),
        (dict(score=None), 'score must be a finite number, found null'),
        (dict(bbox=[float('nan'), 1, 2, 3]), 'bbox must be four finite numbers'),
        (dict(bbox=[1, 1, float('inf'), 3]), 'bbox must be four finite numbers'),
        (dict(bbox=[True, True, True, True]), 'bbox must be four finite numbers'),
        (dict(image_id='1'), 'image_id must be an integer as in the annotations, found "1"'),
    ],
)
def test_coco_eval_refuses_non_finite_and_non_numeric_entries(coco, tmp_path, capsys, change, message):
    ann, _, dets = coco
    bad = [dict(d) for d in dets]
    bad[2].update(change)
    path = tmp_path / 'bad.json'
    path.write_text(json.dumps(bad))
    code, out, err = run_eval(capsys, ann, path)
    assert code == 1 and str(path) in err and 'entry 2' in err and message in err
    assert 'Traceback' not in err and out == ''


def test_nan_scores_no_longer_change_identical_detections(coco, tmp_path, capsys):
    ann, results, dets = coco
    assert run_eval(capsys, ann, results)[0] == 0
    with_nan = [dict(d, score=float('nan')) if i % 2 else d for i, d in enumerate(dets)]
    path = tmp_path / 'nan.json'
    path.write_text(json.dumps(with_nan))
    assert run_eval(capsys, ann, path)[0] == 1  # refused, not scored 0.795 against 1.000


def test_ground_truth_without_annotations_or_area(coco, tmp_path, capsys):
    ann, results, _ = coco
    data = json.loads(ann.read_text())
    empty = tmp_path / 'empty.json'
    empty.write_text(json.dumps(dict(data, annotations=[])))
    code, out, err = run_eval(capsys, empty, results, '--out-dir', tmp_path / 'plots')
    assert code == 1 and f'annotations {empty} hold no annotations' in err and 'Traceback' not in err
    no_area = tmp_path / 'no_area.json'
    no_area.write_text(
        json.dumps(dict(data, annotations=[{k: v for k, v in a.items() if k != 'area'} for a in data['annotations']]))
    )
    code, out, err = run_eval(capsys, no_area, results)
    assert code == 0 and 'have no "area"; using box width x height' in err
    assert out.splitlines()[2].split()[:2] == ['AP', '1.000']


def test_plots_of_names_with_one_stem_do_not_overwrite_each_other(coco, tmp_path, capsys):
    ann, results, _ = coco
    plots = tmp_path / 'plots'
    code, _, err = run_eval(capsys, ann, results, results, '--names', 'm.a', 'm.b', '--out-dir', plots)
    assert code == 0, err
    assert {'m.a_pr.png', 'm.b_pr.png'} <= {p.name for p in plots.iterdir()}
    taken = tmp_path / 'taken'
    taken.write_text('x')
    code, out, err = run_eval(capsys, ann, results, '--out-dir', taken)
    assert code == 1 and f'--out-dir {taken} is a file' in err and out == '' and taken.read_text() == 'x'
