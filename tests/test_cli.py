"""Command lines as a new user meets them: bad input is refused before any work, with what to do."""

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pit_det.cli import demo as demo_cli
from pit_det.cli import infer as infer_cli


@pytest.fixture(scope='module')
def detector(demo_config, tmp_path_factory):
    """The demo config and a checkpoint of it (random weights, as mmengine saves them)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    tmp = tmp_path_factory.mktemp('detector')
    cfg = Config.fromfile(str(demo_config))
    model = MODELS.build(cfg.model)
    model.init_weights()
    checkpoint = tmp / 'epoch_1.pth'
    torch.save(
        {'state_dict': model.state_dict(), 'meta': {'dataset_meta': {'classes': ('square', 'disc', 'triangle')}}},
        checkpoint,
    )
    image = tmp / 'photo.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(image)
    return demo_config, checkpoint, image


def infer(capsys, config, checkpoint, image, *extra):
    code = infer_cli.main([str(config), str(checkpoint), str(image), *map(str, extra)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_infer_draws(detector, tmp_path, capsys):
    config, checkpoint, image = detector
    code, out, err = infer(capsys, config, checkpoint, image, '--out', tmp_path / 'drawn.png', '--score-thr', 0)
    assert code == 0, err
    assert 'detections (score >= 0.0) drawn to' in out
    drawn = np.asarray(Image.open(tmp_path / 'drawn.png'))
    assert drawn.shape[:2] == (512, 683)  # enlarged to a 512-px short side so labels stay legible


def test_outputs_in_a_read_only_folder_are_refused_before_any_work(detector, demo_run, read_only_folder, capsys):
    """--out in a read-only folder failed after the model ran (infer) or after the export (with a temp file name in
    the message); a read-only work dir failed inside mmengine."""
    from mmdet.registry import RUNNERS

    from pit_det.cli.export_onnx import main as export_main
    from pit_det.demo import load_demo_config
    from pit_det.preflight import PreflightError

    config, checkpoint, image = detector
    code, out, err = infer(capsys, config, checkpoint, image, '--out', read_only_folder / 'x.png')
    assert (
        code == 1
        and out == ''
        and err.strip()
        == (
            f'error: --out {read_only_folder / "x.png"}: the folder {read_only_folder} cannot be written '
            '(read-only, or not yours): choose a folder you can write'
        )
    )
    assert (
        export_main([str(config), str(checkpoint), '--out', str(read_only_folder / 'x.onnx'), '--size', '128x128']) == 1
    )
    printed = capsys.readouterr()
    assert printed.out == '' and f'the folder {read_only_folder} cannot be written' in printed.err
    cfg = load_demo_config(demo_run[0].parent / 'data', read_only_folder / 'work')
    with pytest.raises(PreflightError, match=f'the work dir {read_only_folder / "work"} cannot be written'):
        RUNNERS.build(cfg)


def test_infer_draws_a_huge_photo_reduced(detector, tmp_path, capsys):
    """A 10000x10000 PNG took 10 GB of memory to draw at its own size: the picture is drawn at 4096 px at most."""
    config, checkpoint, _ = detector
    photo = tmp_path / 'huge.png'
    Image.new('RGB', (10000, 6000), (90, 120, 150)).save(photo)
    code, out, err = infer(capsys, config, checkpoint, photo, '--out', tmp_path / 'drawn.png', '--score-thr', 0)
    assert code == 0, err
    assert Image.open(tmp_path / 'drawn.png').size == (4096, 2458)  # the long side at 4096, the aspect kept


def test_commands_run_one_after_another_with_their_streams_replaced_and_closed_log_no_error(
    demo_run, tmp_path, monkeypatch
):
    """mmengine's loggers live as long as the process: pit-det-test's run leaves one behind, which pit-det-infer
    then logs through. Each command's log goes to the streams of its own call, never to an earlier call's (closed
    since: '--- Logging error ---' and a traceback on stderr)."""
    from pit_det.cli.mmdet_tools import run_mmdet_tool

    config, checkpoints = demo_run
    image = config.parent / 'data' / 'val' / '000000.png'
    calls = [lambda: run_mmdet_tool('test', [str(config), str(checkpoints[0]), '--work-dir', str(tmp_path / 'test')])]
    calls += [
        lambda i=i: infer_cli.main([str(config), str(checkpoints[0]), str(image), '--out', str(tmp_path / f'{i}.png')])
        for i in range(2)
    ]
    printed = []
    for call in calls:
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, 'stdout', out)
        monkeypatch.setattr(sys, 'stderr', err)
        code = call()
        printed.append((code, out.getvalue(), err.getvalue()))
        out.close()
        err.close()
    monkeypatch.undo()
    for code, _out, err in printed:
        assert code == 0 and 'Logging error' not in err and 'Traceback' not in err, err
    assert 'coco/bbox_mAP' in printed[0][1]
    for _, out, _err in printed[1:]:  # the log of the checkpoint's loading reached the call's own stdout
        assert 'Loads checkpoint by local backend' in out and 'detections (score >= 0.3) drawn to' in out, out


def test_infer_never_overwrites_its_input(detector, tmp_path, capsys):
    config, checkpoint, image = detector
    photo = tmp_path / 'photo.png'
    photo.write_bytes(image.read_bytes())
    code, _, err = infer(capsys, config, checkpoint, photo, '--out', photo)
    assert code == 1 and 'is the input image' in err
    assert photo.read_bytes() == image.read_bytes()
    code, _, err = infer(capsys, config, checkpoint, photo, '--out', tmp_path / '.' / 'photo.png')
    assert code == 1 and 'is the input image' in err


@pytest.mark.parametrize('out', ['result', 'result.txt', '.'])
def test_infer_refuses_an_output_that_is_no_picture_before_running(detector, tmp_path, capsys, out):
    config, checkpoint, image = detector
    code, _, err = infer(capsys, config, checkpoint, image, '--out', tmp_path / out)
    assert code == 1 and 'give a picture file name ending in one of .png' in err


@pytest.mark.parametrize('content,message', [(b'', 'is empty (0 bytes)'), (b'not an image', 'cannot be decoded')])
def test_infer_refuses_a_file_that_is_no_image(detector, tmp_path, capsys, content, message):
    config, checkpoint, _ = detector
    bad = tmp_path / 'bad.png'
    bad.write_bytes(content)
    code, _, err = infer(capsys, config, checkpoint, bad, '--out', tmp_path / 'out.png')
    assert code == 1 and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on machines without a GPU')
def test_infer_on_cuda_without_a_gpu(detector, tmp_path, capsys):
    code, _, err = infer(capsys, *detector, '--out', tmp_path / 'out.png', '--device', 'cuda')
    assert code == 1 and 'no CUDA GPU is visible' in err


def test_infer_refuses_checkpoints_that_are_not_this_detector(detector, tmp_path, capsys):
    import torchvision

    config, checkpoint, image = detector
    resnet = tmp_path / 'resnet50.pth'
    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    code, _, err = infer(capsys, config, resnet, image, '--out', tmp_path / 'out.png')
    assert code == 1 and 'holds only 0 of the' in err and not (tmp_path / 'out.png').exists()
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(checkpoint.read_bytes()[:10000])
    code, _, err = infer(capsys, config, truncated, image, '--out', tmp_path / 'out.png')
    assert code == 1 and 'not a readable PyTorch file' in err


def test_infer_on_an_image_thinner_than_a_patch(detector, tmp_path, capsys):
    config, checkpoint, _ = detector
    thin = tmp_path / 'thin.png'
    Image.fromarray(np.full((4, 600, 3), 128, dtype=np.uint8)).save(thin)
    code, _, err = infer(capsys, config, checkpoint, thin, '--out', tmp_path / 'out.png')
    assert code == 1 and 'at least one patch' in err and 'Resize' in err


@pytest.mark.parametrize(
    'argv,message', [(['--epochs', '0'], 'must be at least 1'), (['--epochs', '-3'], 'must be at least 1')]
)
def test_demo_refuses_a_bad_epoch_count(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        demo_cli.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_demo_refuses_a_data_root_that_is_a_file(tmp_path, capsys):
    file = tmp_path / 'coco.json'
    file.write_text('{}')
    assert demo_cli.main(['--data-root', str(file), '--work-dir', str(tmp_path / 'work')]) == 1
    assert 'is a file: give a folder' in capsys.readouterr().err
    assert file.read_text() == '{}' and not (tmp_path / 'work').exists()


def test_infer_takes_the_inference_path(detector, tmp_path, capsys):
    config, checkpoint, image = detector
    code, out, err = infer(capsys, config, checkpoint, image, '--out', tmp_path / 'bf16.png', '--path', 'bf16')
    assert code == 0 and (tmp_path / 'bf16.png').is_file(), err
    code, _, err = infer(capsys, config, checkpoint, image, '--out', tmp_path / 'x.png', '--path', 'onnxruntime')
    assert code == 1 and '--model-file FILE goes with --path onnxruntime/openvino/openvino-int8' in err


def test_infer_reads_its_config_and_its_options_once(detector, tmp_path, capsys, monkeypatch):
    """The config is read once and the --path options parsed once; the detector runs the options it was given."""
    from mmengine.config import Config

    from pit_det.models.inference import InferenceOptions

    config, checkpoint, image = detector
    reads, parsed = [], []
    fromfile, parse = Config.fromfile, InferenceOptions.parse.__func__

    def counted_parse(cls, options, *args, **kwargs):
        if not isinstance(options, InferenceOptions) and (options or {}).get('path') == 'bf16':
            parsed.append(options)
        return parse(cls, options, *args, **kwargs)

    monkeypatch.setattr(Config, 'fromfile', lambda *a, **k: reads.append(a[0]) or fromfile(*a, **k))
    monkeypatch.setattr(InferenceOptions, 'parse', classmethod(counted_parse))
    code, out, err = infer(capsys, config, checkpoint, image, '--out', tmp_path / 'bf16.png', '--path', 'bf16')
    assert code == 0, err
    assert reads == [str(config)] and len(parsed) == 1


def test_infer_refuses_a_path_that_mmdets_own_detector_lacks_before_building_it(detector, tmp_path, capsys):
    from mmengine.config import Config

    config, checkpoint, image = detector
    cfg = Config.fromfile(str(config))  # mmdet's own class: eager only
    cfg.model.type = 'DeformableDETR'
    for option in ('cpu_deform_attn', 'inference'):
        cfg.model.pop(option, None)
    plain = tmp_path / 'plain.py'
    cfg.dump(str(plain))
    code, _, err = infer(capsys, plain, checkpoint, image, '--out', tmp_path / 'bf16.png', '--path', 'bf16')
    assert code == 1 and "DeformableDETR runs eager only: the other inference paths are pit-det's" in err
    assert 'Traceback' not in err and not (tmp_path / 'bf16.png').exists()


@pytest.mark.parametrize('script', ['tools/train.py', 'mmdet/.mim/tools/train.py'])
def test_train_command_prints_the_preflight_message_without_a_traceback(root, demo_config, tmp_path, script):
    import subprocess
    import sys

    import mmdet

    # ours, and mmdet's own script (what `mim train mmdet CONFIG` runs), whose runner is the config's CheckedRunner
    path = root / script if script.startswith('tools') else Path(mmdet.__file__).parents[1] / script
    # the demo config, whose generated data does not exist in tmp_path
    run = subprocess.run(
        [sys.executable, str(path), str(demo_config), '--work-dir', str(tmp_path / 'work')],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 1 and 'Traceback' not in run.stderr, run.stderr[-3000:]
    assert 'error: cannot start' in run.stderr and 'run `pit-det-demo`' in run.stderr
