"""An exported file records its origin, and a file of other weights, classes or format is refused by every path
that runs one (pit-det-infer, mim test, the preflight); the export tool never writes over its inputs."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pit_det.data import make_synthetic_coco


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def exports(demo_run, tmp_path_factory):
    """The demo detector exported from two checkpoints (other weights), and a 5-class variant exported too."""
    from pit_det.cli.export_onnx import main as export_main

    config, checkpoints = demo_run
    tmp = tmp_path_factory.mktemp('exports')
    files = [tmp / 'model_0.onnx', tmp / 'model_1.onnx']
    for checkpoint, out in zip(checkpoints, files, strict=True):
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

    assert (
        infer_main(
            [
                str(five),
                str(checkpoints[0]),
                str(image),
                '--out',
                str(tmp_path / 'x.png'),
                '--path',
                'onnxruntime',
                '--model-file',
                str(exports[0]),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert f'--model-file {exports[0]} was exported from a detector of 3 classes' in err and 'has 5' in err


@pytest.mark.slow
def test_mim_test_through_an_onnx_file_of_other_weights_stops_with_the_message(demo_run, exports, tmp_path):
    import mmdet

    config, checkpoints = demo_run
    tool = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'test.py'  # what `mim test mmdet` runs
    base = [sys.executable, str(tool), str(config), str(checkpoints[0]), '--work-dir', str(tmp_path / 'w')]
    other = subprocess.run(
        base + ['--cfg-options', 'model.inference.path=onnxruntime', f'model.inference.model_file={exports[1]}'],
        capture_output=True,
        text=True,
    )
    assert other.returncode == 1 and 'Traceback' not in other.stderr, other.stderr[-3000:]
    assert 'was exported from other weights' in other.stderr and 'bbox_mAP' not in other.stdout
    from mmdet.registry import RUNNERS
    from mmengine.config import Config

    from pit_det.preflight import PreflightError

    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict({'model.inference.path': 'bogus', 'work_dir': str(tmp_path / 'w')})
    with pytest.raises(PreflightError, match="model.inference.path='bogus': use one of eager, bf16, compile"):
        RUNNERS.build(cfg)  # before the model is built: its constructor's ValueError came in 40 lines of traceback
    for options, fact in (
        (
            {'model.inference.path': 'openvino-int8', 'model.inference.model_file': str(exports[0])},
            f'{exports[0]} is exported as onnx, which the openvino-int8 path does not run: use the '
            'path onnxruntime or openvino',
        ),
        (
            {'model.inference.path': 'openvino'},
            'model.inference.model_file=FILE goes with model.inference.path=onnxruntime/openvino',
        ),
        (
            {'model.inference.precision': 'bf16'},
            'model.inference.precision=bf16: only the paths openvino and openvino-int8 take a precision',
        ),
    ):
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
    assert (
        export_main(
            [str(config), str(checkpoints[0]), '--out', str(tmp_path / 'a.onnx'), '--size', '128x128', '--topk', '0']
        )
        == 1
    )
    assert '--topk 0: compare at least 1 detection' in capsys.readouterr().err
    theirs = tmp_path / 'theirs.onnx'
    theirs.write_bytes(b'a file of the user')
    assert export_main([str(config), str(checkpoints[0]), '--out', str(theirs), '--size', '128x128']) == 1
    assert 'not an output of this tool' in capsys.readouterr().err and theirs.read_bytes() == b'a file of the user'
    assert (digest(config), digest(checkpoints[0])) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['theirs.onnx']
