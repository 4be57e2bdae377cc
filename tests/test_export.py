"""ONNX export of whole detectors, run in onnxruntime and compared with torch."""

import contextlib
import io
import shutil
import sys
from types import SimpleNamespace

import onnx
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config

from pit_det.cli.export_onnx import main
from pit_det.deploy.onnx import build_exportable, compare, export, metadata
from pit_det.deploy.openvino import save_ir, to_openvino
from pit_det.deploy.runtimes import Runtime, open_exported
from pit_det.models import CheckpointMismatchError


@pytest.fixture(scope='module')
def demo_checkpoint(demo_config, tmp_path_factory):
    register_all_modules()
    model = MODELS.build(Config.fromfile(str(demo_config)).model)
    model.init_weights()
    path = tmp_path_factory.mktemp('onnx') / 'demo.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


@pytest.fixture(scope='module')
def exported(demo_config, demo_checkpoint, tmp_path_factory):
    """The demo detector exported once by the command at 128x160 (with what it printed), its OpenVINO IR, and the
    detector it was exported from: the tests below read these files and never write them."""
    folder = tmp_path_factory.mktemp('exported')
    printed, reads, fromfile = io.StringIO(), [], Config.fromfile
    with contextlib.redirect_stdout(printed), pytest.MonkeyPatch.context() as patch:
        patch.setattr(Config, 'fromfile', lambda *a, **k: reads.append(a[0]) or fromfile(*a, **k))  # counted
        assert (
            main([str(demo_config), str(demo_checkpoint), '--out', str(folder / 'demo.onnx'), '--size', '128x160']) == 0
        )
    model = build_exportable(demo_config, demo_checkpoint)
    ir = save_ir(to_openvino(folder / 'demo.onnx', metadata(model, 128, 160), 'openvino'), folder / 'demo.xml')
    return SimpleNamespace(onnx=folder / 'demo.onnx', ir=ir, printed=printed.getvalue(), model=model, reads=reads)


def test_demo_detector_exports_and_matches_in_onnxruntime(exported, demo_config):
    out, printed = exported.onnx, exported.printed
    assert exported.reads == [str(demo_config)]  # the command reads its config once
    assert 'onnx.checker: valid' in printed and 'labels identical' in printed
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ['image'] and [o.name for o in graph.output] == [
        'boxes',
        'scores',
        'labels',
    ]
    dims = [(d.dim_param or d.dim_value) for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ['batch', 3, 'height', 'width']  # any batch, any size
    assert 'onnxruntime vs mmdet predict at 128x160 (batch of 2)' in printed
    assert 'onnxruntime vs mmdet predict at 96x160 (batch of 1)' in printed  # checked at a second size
    assert 'onnxruntime vs mmdet predict at 32x128 (batch of 1)' in printed  # a 1-px level, 1:4
    assert any(node.op_type == 'GridSample' for node in graph.node)  # the deformable attention, in standard ONNX


@pytest.mark.slow
@pytest.mark.parametrize(
    'config', ['pit_s_deformable_detr.py', 'deformable-detr-refine-twostage_pit-s_16xb2-50e_coco-halfres.py']
)
def test_pit_s_detectors_export(root, config, tmp_path):
    register_all_modules()
    cfg = Config.fromfile(str(root / 'configs' / config))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    path = export(model, 160, 192, tmp_path / 'pit_s.onnx')
    for batch in (1, 3):  # exported with a batch of 2: the batch axis is free
        result = compare(model, path, torch.rand(batch, 3, 160, 192) * 255, topk=20)
        assert result.batch == batch and result.ok and result.labels_equal, result
    assert result.max_box_diff_px <= 0.05 and result.max_score_diff <= 1e-4


def test_unsupported_input_is_a_clear_error(demo_config, demo_checkpoint, tmp_path, capsys):
    assert main([str(demo_config), str(demo_checkpoint), '--out', str(tmp_path / 'a.onnx'), '--size', '16x200']) == 1
    assert 'needs at least 32 px per side' in capsys.readouterr().err
    retina = tmp_path / 'retina.py'
    retina.write_text("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n")
    assert main([str(retina), str(demo_checkpoint), '--out', str(tmp_path / 'b.onnx'), '--size', '128x128']) == 1
    assert 'a RetinaNet detector; the exporter knows Deformable DETR' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(demo_config), str(demo_checkpoint), '--out', str(tmp_path / 'c.onnx'), '--size', '128'])
    assert "'128': use HxW" in capsys.readouterr().err
    assert not list(tmp_path.glob('*.onnx'))


def test_without_the_extra_the_message_names_it(demo_config, demo_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # as if the extra were not installed
    assert main([str(demo_config), str(demo_checkpoint), '--out', str(tmp_path / 'x.onnx'), '--size', '128x128']) == 1
    err = capsys.readouterr().err
    assert 'pip install "pit-det[export]"' in err and 'Traceback' not in err, err


def test_inference_paths_of_the_detector(demo_config, demo_checkpoint, exported):
    """mim test / pit-det-infer choose the path by config (model.inference): each gives eager's detections."""
    from mmdet.apis import init_detector
    from test_configs import tiny_batch

    inputs, samples = tiny_batch(128, 160)
    onnx_file = exported.onnx
    inputs = inputs * 255  # the detector's input before normalisation: 0-255
    outputs = {}
    # the compile path: tests/test_compile.py (a compile costs more than the rest of this test)
    for path, extra in (
        ('eager', {}),
        ('bf16', {}),
        ('onnxruntime', {'model_file': str(onnx_file)}),
        ('openvino', {'model_file': str(onnx_file), 'precision': 'f32'}),
    ):
        options = {f'model.inference.{k}': v for k, v in dict(path=path, **extra).items()}
        model = init_detector(str(demo_config), str(demo_checkpoint), device='cpu', cfg_options=options)
        keys = set(model.state_dict())
        data = model.data_preprocessor({'inputs': [inputs[0].flip(0)], 'data_samples': samples}, False)
        with torch.no_grad():
            result = model.predict(data['inputs'], data['data_samples'])[0].pred_instances
        assert result.bboxes.dtype == torch.float32 and set(model.state_dict()) == keys
        outputs[path] = result
        if path == 'onnxruntime':  # a batch of two in one onnxruntime call: each image as alone
            _, more = tiny_batch(128, 160)
            data = model.data_preprocessor(
                {'inputs': [inputs[0], inputs[0].flip(0)], 'data_samples': more + samples}, False
            )
            with torch.no_grad():
                pair = model.predict(data['inputs'], data['data_samples'])
            assert torch.allclose(pair[1].pred_instances.bboxes, result.bboxes, atol=1e-3)
            assert torch.equal(pair[1].pred_instances.labels, result.labels)
    eager = outputs['eager']
    for path in ('onnxruntime', 'openvino'):
        assert (outputs[path].bboxes - eager.bboxes).abs().max() < 0.05, path
        assert torch.equal(outputs[path].labels, eager.labels), path
    assert (outputs['bf16'].scores[:5] - eager.scores[:5]).abs().max() < 0.05
    with pytest.raises(
        ValueError,
        match='model.inference.model_file=FILE goes with model.inference.path=onnxruntime/openvino/openvino-int8',
    ):
        init_detector(
            str(demo_config), str(demo_checkpoint), device='cpu', cfg_options={'model.inference.path': 'onnxruntime'}
        )


def test_one_graph_takes_every_size_in_onnxruntime_and_openvino(exported):
    """Exported at one size, run at three: at each, the top 20 of mmdet's predict at that size (0.05 px, 1e-4,
    identical labels), in onnxruntime and OpenVINO f32, from the ONNX file and from the IR."""
    model, onnx_file, ir = exported.model, exported.onnx, exported.ir
    assert ir.is_file() and ir.with_suffix('.bin').is_file()
    runtimes = [
        Runtime('onnxruntime', onnx_file),
        Runtime('openvino', onnx_file, precision='f32'),
        Runtime('openvino', ir, precision='f32'),
    ]
    assert [r.precision for r in runtimes] == ['f32'] * 3
    # the last three have a level one pixel high or wide (linspace's exported step was NaN there)
    for height, width in ((128, 160), (96, 224), (160, 96), (32, 128), (256, 64), (40, 160)):
        image = torch.rand(1, 3, height, width) * 255
        for runtime in runtimes:
            result = compare(model, runtime, image, topk=20)
            assert result.ok and result.size == (height, width), result


def test_openvino_files_of_another_model_or_format_are_refused(
    demo_config, demo_checkpoint, exported, tmp_path, capsys
):
    model, ir = exported.model, exported.ir
    assert open_exported('openvino', ir, model, precision='f32').precision == 'f32'
    with pytest.raises(
        CheckpointMismatchError,
        match='is exported as openvino, which the openvino-int8 path does not run: use the path openvino',
    ):
        open_exported('openvino-int8', ir, model)
    with pytest.raises(CheckpointMismatchError, match='is exported as onnx, which the openvino-int8 path does not run'):
        open_exported('openvino-int8', exported.onnx, model)
    torch.manual_seed(1)
    other = MODELS.build(Config.fromfile(str(demo_config)).model)
    other.init_weights()
    with pytest.raises(CheckpointMismatchError, match='was exported from other weights'):
        open_exported('openvino', ir, other)
    args = [str(demo_config), str(demo_checkpoint)]
    for extra, fact in (
        (['x.onnx', '--format', 'tflite'], '--format tflite: use one of onnx, openvino, openvino-int8'),
        (['x.onnx', '--format', 'openvino'], '--out x.onnx: a --format openvino file is named *.xml'),
        (['x.xml', '--calibration-images', '8'], '--calibration-images goes with --format openvino-int8'),
    ):
        assert main(args + ['--out', str(tmp_path / extra[0]), '--size', '128x128', *extra[1:]]) == 1
        assert fact.replace('x.', str(tmp_path / 'x.')) in capsys.readouterr().err
    assert not list(tmp_path.glob('x.*'))
    (tmp_path / 'b.bin').write_bytes(b'a file of the user')  # the weights file an IR named b.xml would replace
    assert main(args + ['--out', str(tmp_path / 'b.xml'), '--size', '128x128', '--format', 'openvino']) == 1
    assert "--out's weights file" in capsys.readouterr().err
    assert (tmp_path / 'b.bin').read_bytes() == b'a file of the user'


def test_without_openvino_the_message_names_the_extra(demo_config, demo_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'openvino', None)  # as if openvino were not installed
    assert (
        main(
            [
                str(demo_config),
                str(demo_checkpoint),
                '--out',
                str(tmp_path / 'x.xml'),
                '--size',
                '128x128',
                '--format',
                'openvino',
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err
    assert 'the OpenVINO paths need openvino' in err and 'pip install "pit-det[export]"' in err


def test_a_size_the_detector_cannot_run_is_named_with_one_that_it_can(demo_config, demo_checkpoint, tmp_path, capsys):
    out = tmp_path / 'x.onnx'
    assert main([str(demo_config), str(demo_checkpoint), '--out', str(out), '--size', '32x32']) == 1
    err = capsys.readouterr().err
    assert (
        "shape 32x32: the two-stage detector picks its 30 queries among the encoder's positions, and this size "
        'has 15 (levels 3x3, 2x2, 1x1, 1x1): give a larger --size, e.g. 48x48' in err
    ), err
    # the command ends on its message (mmengine's logger may print a stale-stream note of its own before it)
    assert err.strip().splitlines()[-1].startswith('error: shape 32x32:') and not out.exists()


def test_an_ir_whose_weights_file_is_another_exports_is_refused(demo_config, exported, tmp_path):
    """OpenVINO reads any .bin of the sizes the .xml expects: the .xml records the .bin's digest."""
    from pit_det.deploy.metadata import exported_metadata
    from pit_det.models import CheckpointReadError

    model, ir = exported.model, tmp_path / 'a.xml'
    shutil.copy(exported.ir, ir)  # a copy: its weights file is replaced below
    shutil.copy(exported.ir.with_suffix('.bin'), ir.with_suffix('.bin'))
    assert open_exported('openvino', ir, model).path == ir
    torch.manual_seed(1)
    other = MODELS.build(Config.fromfile(str(demo_config)).model)
    other.init_weights()
    other.eval()
    other_ir = save_ir(
        to_openvino(export(other, 128, 160, tmp_path / 'b.onnx'), metadata(other, 128, 160), 'openvino'),
        tmp_path / 'b.xml',
    )
    xml = ir.read_bytes()
    ir.with_suffix('.bin').write_bytes(other_ir.with_suffix('.bin').read_bytes())  # same sizes, other weights
    with pytest.raises(CheckpointReadError, match=r'a\.bin is not the weights file written with .*a\.xml'):
        exported_metadata(ir)
    with pytest.raises(CheckpointReadError, match='is not the weights file written with'):
        open_exported('openvino', ir, model)
    assert ir.read_bytes() == xml  # nothing rewritten


def test_an_ir_whose_graph_was_edited_is_refused(exported, tmp_path):
    """A Sigmoid made a Relu in the .xml ran with exit 0 and collapsed boxes: the .xml records its graph's digest."""
    from pit_det.deploy.metadata import exported_metadata
    from pit_det.models import CheckpointReadError

    ir = tmp_path / 'a.xml'
    shutil.copy(exported.ir.with_suffix('.bin'), ir.with_suffix('.bin'))
    text = exported.ir.read_text()
    assert text.count('type="Sigmoid"') >= 1
    ir.write_text(text)
    assert exported_metadata(ir)['pit_det.num_classes'] == '3'  # a copy as exported reads
    ir.write_text(text.replace('type="Sigmoid"', 'type="Relu"', 1))
    with pytest.raises(CheckpointReadError, match=r'a\.xml is not the graph pit-det exported \(its layers differ'):
        exported_metadata(ir)
    with pytest.raises(CheckpointReadError, match='is not the graph pit-det exported'):
        open_exported('openvino', ir, exported.model)


def test_openvino_precision_takes_its_usual_spellings(exported):
    from pit_det.deploy.runtimes import openvino_precision
    from pit_det.preflight import PreflightError, check_model

    assert [openvino_precision(p) for p in ('F32', 'fp32', 'float32', 'BF16', 'bfloat16', 'FP16')] == [
        'f32',
        'f32',
        'f32',
        'bf16',
        'bf16',
        'f16',
    ]
    with pytest.raises(ValueError, match=r"precision 'fp64': OpenVINO runs f32, bf16 or f16"):
        openvino_precision('fp64')
    onnx_file = exported.onnx
    assert Runtime('openvino', onnx_file, precision='FP32').precision == 'f32'
    assert Runtime('onnxruntime', onnx_file, precision='fp32').precision == 'f32'
    with pytest.raises(PreflightError, match=r"model.inference.precision='int4': OpenVINO runs f32"):
        check_model(
            dict(
                type='FastDeformableDETR', inference=dict(path='openvino', model_file=str(onnx_file), precision='int4')
            )
        )


def test_detections_with_tied_scores_may_come_in_either_order():
    """Two runtimes may order detections whose scores differ by float rounding either way: compare takes the
    closest of the tied ones; a swap of detections with distinct scores is still a difference."""
    import numpy as np

    from pit_det.deploy.onnx import _max_box_diff

    boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 8, 8]]], np.float32)
    labels = np.array([[1, 1, 2]])
    tied = (boxes, np.array([[0.01723224, 0.01723222, 0.01]], np.float32), labels)
    swapped = (boxes[:, [1, 0, 2]], tied[1][:, [1, 0, 2]], labels)
    assert _max_box_diff(swapped, tied, 3) == 0.0
    distinct = (boxes, np.array([[0.5, 0.4, 0.01]], np.float32), labels)
    assert _max_box_diff((boxes[:, [1, 0, 2]], distinct[1], labels), distinct, 3) == 20.0
