"""CPU deployment: a trained detector through the exported-graph paths on images of several sizes, against eager."""

import pytest
from mmdet.registry import RUNNERS
from mmengine.config import Config

from pit_det.cli.export_onnx import main as export_main
from pit_det.data import make_synthetic_coco
from pit_det.demo import load_demo_config

EPOCHS = 8
SIZES = ((128, 128), (96, 128), (128, 96))  # the validation images' sizes (they stay so through the test pipeline)


def default_precision() -> str:
    """The precision OpenVINO picks on this CPU (bf16 where it has bf16 instructions)."""
    import openvino

    return openvino.Core().get_property('CPU', 'INFERENCE_PRECISION_HINT').get_type_name()


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """The demo detector trained briefly on a generated set whose validation images have three sizes."""
    tmp = tmp_path_factory.mktemp('deploy')
    data = make_synthetic_coco(tmp / 'data', num_train=64, num_val=24, seed=2, val_sizes=SIZES)
    cfg = load_demo_config(data, tmp / 'work', max_epochs=EPOCHS)
    cfg.train_dataloader.batch_size = 8
    cfg.val_dataloader.batch_size = cfg.test_dataloader.batch_size = 1  # each image at its own size, as runtimes run
    cfg.train_cfg.val_interval = EPOCHS
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=EPOCHS)
    cfg.randomness = dict(seed=0)
    config = tmp / 'config.py'
    cfg.dump(str(config))
    RUNNERS.build(cfg).train()
    return config, tmp / 'work' / f'epoch_{EPOCHS}.pth'


@pytest.mark.slow
def test_test_through_onnxruntime_openvino_and_int8_keeps_the_map(trained, tmp_path):
    """What ``mim test ... model.inference.path=P model.inference.model_file=F`` runs: the float paths give eager's
    mAP within 0.001, INT8 (NNCF, calibrated on the training images) loses at most 0.02."""
    config, checkpoint = trained
    onnx_file, int8 = tmp_path / 'model.onnx', tmp_path / 'model_int8.xml'
    assert export_main([str(config), str(checkpoint), '--out', str(onnx_file), '--size', '128x128']) == 0
    assert (
        export_main(
            [
                str(config),
                str(checkpoint),
                '--out',
                str(int8),
                '--size',
                '128x128',
                '--format',
                'openvino-int8',
                '--calibration-images',
                '32',
            ]
        )
        == 0
    )
    maps, images = {}, set()
    for name, inference in (
        ('eager', {}),
        ('onnxruntime', dict(path='onnxruntime', model_file=str(onnx_file))),
        ('openvino f32', dict(path='openvino', model_file=str(onnx_file), precision='f32')),
        *(
            [('openvino', dict(path='openvino', model_file=str(onnx_file)))] if default_precision() != 'f32' else []
        ),  # else the run above
        ('openvino-int8', dict(path='openvino-int8', model_file=str(int8))),
    ):
        cfg = Config.fromfile(str(config))
        cfg.work_dir, cfg.load_from = str(tmp_path / name.replace(' ', '_')), str(checkpoint)
        cfg.model.inference = {'path': 'eager', **inference}
        runner = RUNNERS.build(cfg)
        maps[name] = runner.test()['coco/bbox_mAP']
        if not images:
            images = {tuple(item['data_samples'].img_shape) for item in runner.test_dataloader.dataset}
    assert images == set(SIZES)
    eager = maps['eager']
    assert eager >= 0.1, maps  # a detector that finds the shapes: the comparisons below mean something
    assert abs(maps['onnxruntime'] - eager) <= 0.001 and abs(maps['openvino f32'] - eager) <= 0.001, maps
    assert eager - maps.get('openvino', maps['openvino f32']) <= 0.01, maps  # OpenVINO's choice for the CPU
    assert eager - maps['openvino-int8'] <= 0.02, maps
