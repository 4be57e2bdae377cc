"""Nothing a user owns is overwritten, no number is silently wrong: the tools' destinations, work dirs, exported
files, caches and inputs, each case as a user meets it (issue: the faults a new user meets in the new tools)."""
import copy
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pit_det.cli import coco_eval, test_robustness
from pit_det.data import make_synthetic_coco
from pit_det.outputs import OutputError, atomic_write, check_file_output, same_file



def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ destinations
def test_an_input_is_refused_by_every_spelling_of_its_path(tmp_path):
    src = tmp_path / 'model.pth'
    src.write_bytes(b'weights')
    (tmp_path / 'sub').mkdir()
    link = tmp_path / 'link.pth'
    link.symlink_to(src)
    hard = tmp_path / 'hard.pth'
    os.link(src, hard)
    for spelling in (src, tmp_path / 'sub' / '..' / 'model.pth', link, hard):
        with pytest.raises(OutputError, match='is the checkpoint'):
            check_file_output(spelling, [('checkpoint', src)], force=True)
        assert same_file(spelling, src)
    assert not same_file(tmp_path / 'other.pth', src)


def test_an_existing_file_is_replaced_only_when_it_is_the_tools_own_or_forced(tmp_path):
    theirs = tmp_path / 'notes.json'
    theirs.write_text('{"mine": 1}')
    with pytest.raises(OutputError, match='exists and is not an output of this tool.*--force'):
        check_file_output(theirs, [], option='--out', own=lambda p: False)
    assert check_file_output(theirs, [], own=lambda p: True) == theirs
    assert check_file_output(theirs, [], force=True) == theirs
    folder = tmp_path / 'folder'
    folder.mkdir()
    with pytest.raises(OutputError, match='is a folder'):
        check_file_output(folder, [], force=True)


def test_a_failed_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / 'report.json'
    path.write_text('before')

    def fail(tmp):
        tmp.write_text('half')
        raise RuntimeError('disk full')
    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == 'before' and sorted(p.name for p in tmp_path.iterdir()) == ['report.json']


# --------------------------------------------------------------------------------------------- coco_eval
@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    root = make_synthetic_coco(tmp_path_factory.mktemp('coco') / 'synthetic', num_train=1, num_val=6)
    ann = root / 'annotations' / 'val.json'
    dets = [dict(image_id=a['image_id'], category_id=a['category_id'], bbox=a['bbox'], score=1.0)
            for a in json.loads(ann.read_text())['annotations']]
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


@pytest.mark.parametrize('change,message', [
    (dict(score=float('nan')), 'score must be a finite number, found NaN'),
    (dict(score='0.9'), 'score must be a finite number, found "0.9"'),
    (dict(score=None), 'score must be a finite number, found null'),
    (dict(bbox=[float('nan'), 1, 2, 3]), 'bbox must be four finite numbers'),
    (dict(bbox=[1, 1, float('inf'), 3]), 'bbox must be four finite numbers'),
    (dict(bbox=[True, True, True, True]), 'bbox must be four finite numbers'),
    (dict(image_id='1'), 'image_id must be an integer as in the annotations, found "1"'),
])
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
    no_area.write_text(json.dumps(dict(data, annotations=[{k: v for k, v in a.items() if k != 'area'}
                                                          for a in data['annotations']])))
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


# -------------------------------------------------------------------------------------------- robustness
@pytest.mark.parametrize('ratio', ['1.0', '-0.1'])
def test_robustness_refuses_a_bad_occlusion_before_any_evaluation(tmp_path, capsys, ratio):
    config, checkpoint = tmp_path / 'c.py', tmp_path / 'm.pth'
    config.write_text('x = 1\n')
    checkpoint.write_bytes(b'w')
    # the config is no detector at all: anything built or evaluated before the check would fail otherwise
    assert test_robustness.main([str(config), str(checkpoint), '--corruptions', '--occlusion', '0.3', ratio]) == 1
    captured = capsys.readouterr()
    assert f'--occlusion {float(ratio)}: give fractions of the image area between 0 and 1' in captured.err
    assert 'mAP' not in captured.out and 'Traceback' not in captured.err


def test_robustness_argument_errors(tmp_path, capsys):
    config, checkpoint = tmp_path / 'c.py', tmp_path / 'm.pth'
    config.write_text('x = 1\n')
    checkpoint.write_bytes(b'w')
    out = tmp_path / 'out.txt'
    out.write_text('mine')
    assert test_robustness.main([str(config), str(checkpoint), '--corruptions', '--occlusion', '--out-dir',
                                 str(out)]) == 1
    assert f'--out-dir {out} is a file' in capsys.readouterr().err and out.read_text() == 'mine'
    for content, fact in (('[1, 2]', 'a JSON list'), ('{"clean": 0.5}', 'no corruptions, occlusion, mPC, rPC'),
                          ('{"clean": "x", "corruptions": {}, "occlusion": {}, "mPC": null, "rPC": null}',
                           'clean: a number')):
        report = tmp_path / 'r.json'
        report.write_text(content)
        assert test_robustness.main(['--compare', str(report)]) == 1
        err = capsys.readouterr().err
        assert f'--compare {report}' in err and fact in err and 'Traceback' not in err


# ---------------------------------------------------------------------------------------- one run per work dir
@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    """A demo config over a small generated set, and a random-weight checkpoint of it."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from pit_det.demo import load_demo_config
    tmp = tmp_path_factory.mktemp('demo')
    data = make_synthetic_coco(tmp / 'data', num_train=8, num_val=4)
    cfg = load_demo_config(data, tmp / 'work', max_epochs=50)
    cfg.train_dataloader.batch_size = cfg.val_dataloader.batch_size = 4
    config = tmp / 'config.py'
    cfg.dump(str(config))
    register_all_modules()
    checkpoints = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = MODELS.build(copy.deepcopy(cfg.model))
        model.init_weights()
        checkpoints.append(tmp / f'model_{seed}.pth')
        torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoints[-1])
    return config, checkpoints


HOLD = """
import sys, time
from pit_det.runner import WorkDirLock
lock = WorkDirLock(sys.argv[1]).acquire()  # held while this process lives
print('held', flush=True)
time.sleep(600)
"""


def test_a_second_training_run_is_refused_while_the_first_holds_the_work_dir(demo_run, root, tmp_path):
    """A real process holds the work dir (as a training run does while it trains); a real second `tools/train.py`
    in that work dir stops with the holder's pid and the way out, and the lock ends with the first process."""
    from pit_det.runner import WorkDirLock
    config, _ = demo_run
    work = tmp_path / 'work'
    first = subprocess.Popen([sys.executable, '-c', HOLD, str(work)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == 'held'
        second = subprocess.run([sys.executable, str(root / 'tools' / 'train.py'), str(config), '--work-dir',
                                 str(work)], capture_output=True, text=True, timeout=300)
        assert second.returncode == 1 and 'Traceback' not in second.stderr, second.stderr[-3000:]
        assert f'work dir {work} is in use by another training run (pid {first.pid}' in second.stderr
        assert '--work-dir' in second.stderr
        assert not list(work.glob('*.pth'))  # it stopped before training
    finally:
        first.kill()  # SIGKILL: the kernel drops the lock with the process
        first.wait()
    assert not WorkDirLock(str(work)).held_by_other()
    WorkDirLock(str(work)).acquire().release()  # free again


def test_runs_started_in_one_second_log_into_folders_of_their_own(demo_run, tmp_path, monkeypatch):
    """mmengine names a run's log folder by the second it started: two runs in that second shared one log file."""
    from mmdet.registry import RUNNERS
    from mmengine.config import Config
    config, _ = demo_run
    monkeypatch.setattr(time, 'time', lambda: 1795940000.0)  # both runs start in the same second
    runners = []
    for _ in range(2):
        cfg = Config.fromfile(str(config))
        cfg.work_dir = str(tmp_path / 'work')
        runners.append(RUNNERS.build(cfg))
    assert runners[0].timestamp == runners[1].timestamp.rsplit('_', 1)[0]
    assert runners[1].log_dir == runners[0].log_dir + '_1'


# ------------------------------------------------------------------------------------ exported graphs
@pytest.fixture(scope='module')
def exports(demo_run, tmp_path_factory):
    """The demo detector exported from two checkpoints (other weights), and a 5-class variant exported too."""
    from pit_det.cli.export_onnx import main as export_main
    config, checkpoints = demo_run
    tmp = tmp_path_factory.mktemp('exports')
    files = [tmp / 'model_0.onnx', tmp / 'model_1.onnx']
    for checkpoint, out in zip(checkpoints, files):
        assert export_main([str(config), str(checkpoint), '--out', str(out), '--size', '128x128']) == 0
    return files


def test_the_export_records_its_origin(demo_run, exports):
    import onnx
    import torch
    config, checkpoints = demo_run
    meta = {p.key: p.value for p in onnx.load(str(exports[0])).metadata_props}
    weights = torch.load(checkpoints[0], weights_only=True)['state_dict']
    expected = hashlib.sha256()
    for name, tensor in sorted(weights.items()):
        expected.update(f'{name}:{tuple(tensor.shape)}:{tensor.dtype};'.encode())
        expected.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    assert meta['pit_det.weights_sha256'] == expected.hexdigest()
    assert meta['pit_det.config'] == str(config) and meta['pit_det.checkpoint'] == str(checkpoints[0])
    assert meta['pit_det.num_classes'] == '3' and meta['pit_det.input_size'] == '128x128'
    assert json.loads(meta['pit_det.classes']) == ['square', 'disc', 'triangle']


def test_an_onnx_file_of_other_weights_is_refused(demo_run, exports, tmp_path, capsys):
    from pit_det.cli.infer import main as infer_main
    config, checkpoints = demo_run
    image = make_synthetic_coco(tmp_path / 'img', num_train=0, num_val=1) / 'val' / '000000.png'
    args = [str(config), str(checkpoints[0]), str(image), '--path', 'onnxruntime']
    assert infer_main(args + ['--model-file', str(exports[1]), '--out', str(tmp_path / 'a.png')]) == 1
    err = capsys.readouterr().err
    assert f'{exports[1]} was exported from other weights ({checkpoints[1]}' in err and 'Traceback' not in err
    assert not (tmp_path / 'a.png').exists()
    assert infer_main(args + ['--model-file', str(exports[0]), '--out', str(tmp_path / 'b.png')]) == 0
    capsys.readouterr()
    not_onnx = tmp_path / 'model.onnx'
    not_onnx.write_bytes(b'\x00not onnx at all')
    for onnx_file, fact in ((tmp_path / 'missing.onnx', 'exported file not found'), (not_onnx, 'is not an ONNX file')):
        assert infer_main(args + ['--model-file', str(onnx_file), '--out', str(tmp_path / 'c.png')]) == 1
        err = capsys.readouterr().err
        assert fact in err and str(onnx_file) in err and 'Traceback' not in err


def test_an_onnx_file_of_another_class_count_is_refused_before_the_model_is_built(demo_run, exports, tmp_path, capsys):
    from mmengine.config import Config
    config, checkpoints = demo_run
    cfg = Config.fromfile(str(config))
    cfg.model.bbox_head.num_classes = 5
    five = tmp_path / 'five.py'
    cfg.dump(str(five))
    image = make_synthetic_coco(tmp_path / 'img', num_train=0, num_val=1) / 'val' / '000000.png'
    from pit_det.cli.infer import main as infer_main
    assert infer_main([str(five), str(checkpoints[0]), str(image), '--out', str(tmp_path / 'x.png'), '--path',
                       'onnxruntime', '--model-file', str(exports[0])]) == 1
    err = capsys.readouterr().err
    assert f'--model-file {exports[0]} was exported from a detector of 3 classes' in err and 'has 5' in err


def test_mim_test_through_an_onnx_file_of_other_weights_stops_with_the_message(demo_run, exports, tmp_path):
    import mmdet
    config, checkpoints = demo_run
    tool = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'test.py'  # what `mim test mmdet` runs
    base = [sys.executable, str(tool), str(config), str(checkpoints[0]), '--work-dir', str(tmp_path / 'w')]
    other = subprocess.run(base + ['--cfg-options', 'model.inference.path=onnxruntime',
                                   f'model.inference.model_file={exports[1]}'], capture_output=True, text=True)
    assert other.returncode == 1 and 'Traceback' not in other.stderr, other.stderr[-3000:]
    assert 'was exported from other weights' in other.stderr and 'bbox_mAP' not in other.stdout
    from mmdet.registry import RUNNERS
    from mmengine.config import Config

    from pit_det.preflight import PreflightError
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict({'model.inference.path': 'bogus', 'work_dir': str(tmp_path / 'w')})
    with pytest.raises(PreflightError, match="model.inference.path='bogus': use one of eager, bf16, compile"):
        RUNNERS.build(cfg)  # before the model is built: its constructor's ValueError came in 40 lines of traceback
    for options, fact in (({'model.inference.path': 'openvino-int8', 'model.inference.model_file': str(exports[0])},
                           f'{exports[0]} is exported as onnx, which the openvino-int8 path does not run: use the '
                           'path onnxruntime or openvino'),
                          ({'model.inference.path': 'openvino'}, 'model.inference.model_file=FILE goes with '
                                                                 'model.inference.path=onnxruntime/openvino'),
                          ({'model.inference.precision': 'bf16'}, 'model.inference.precision=bf16: only the '
                                                                  'paths openvino and openvino-int8 take a precision')):
        cfg = Config.fromfile(str(config))
        cfg.merge_from_dict({**options, 'work_dir': str(tmp_path / 'w')})
        with pytest.raises(PreflightError) as stop:
            RUNNERS.build(cfg)
        assert fact in str(stop.value)


def test_export_refuses_its_inputs_and_checks_every_argument_first(demo_run, exports, tmp_path, capsys):
    from pit_det.cli.export_onnx import main as export_main
    config, checkpoints = demo_run
    before = digest(config), digest(checkpoints[0])
    for out, fact in ((checkpoints[0], 'is the checkpoint'), (config, 'is the config'), (tmp_path, 'is a folder')):
        assert export_main([str(config), str(checkpoints[0]), '--out', str(out), '--size', '128x128', '--force']) == 1
        assert f'--out {out} {fact}' in capsys.readouterr().err
    assert export_main([str(config), str(checkpoints[0]), '--out', str(tmp_path / 'a.onnx'), '--size', '128x128',
                        '--topk', '0']) == 1
    assert '--topk 0: compare at least 1 detection' in capsys.readouterr().err
    theirs = tmp_path / 'theirs.onnx'
    theirs.write_bytes(b'a file of the user')
    assert export_main([str(config), str(checkpoints[0]), '--out', str(theirs), '--size', '128x128']) == 1
    assert 'not an output of this tool' in capsys.readouterr().err and theirs.read_bytes() == b'a file of the user'
    assert (digest(config), digest(checkpoints[0])) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['theirs.onnx']


def test_a_work_dir_that_is_a_file_is_refused_before_anything_runs(demo_config, tmp_path, capsys):
    from pit_det.cli import demo
    taken = tmp_path / 'notes.txt'
    taken.write_text('mine')
    assert demo.main(['--work-dir', str(taken), '--data-root', str(tmp_path / 'data')]) == 1
    assert f'--work-dir {taken} is a file' in capsys.readouterr().err
    assert taken.read_text() == 'mine' and not (tmp_path / 'data').exists()
    from mmdet.registry import RUNNERS
    from mmengine.config import Config

    from pit_det.preflight import PreflightError
    cfg = Config.fromfile(str(demo_config))
    cfg.work_dir = str(taken)
    with pytest.raises(PreflightError, match=f'the work dir {taken} is a file'):
        RUNNERS.build(cfg)
    assert taken.read_text() == 'mine'
