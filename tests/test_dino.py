"""DINO under pit-det: the detector, its checkpoints of another class set, its export, the preflight of both heads'
level and channel settings, and the dataset command over a DINO config."""

import copy
import subprocess
import sys

import mmdet
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from pit_det.checkpoint import CheckpointMismatchError
from pit_det.cli.export_onnx import main as export_main
from pit_det.models import FastDINO
from pit_det.models.detectors import build_detector
from pit_det.ops import FusedMultiScaleDeformableAttention
from pit_det.preflight import PreflightError, check_model, lr_scaling_advice

DINO_DEMO = 'demo/dino-4scale_pit-ti_synthetic_cpu.py'


def config(root, name, **options):
    register_all_modules()
    cfg = Config.fromfile(str(root / 'configs' / name))
    cfg.model.backbone.init_cfg = None
    cfg.merge_from_dict(options)
    return cfg


@pytest.fixture(scope='module')
def dino_checkpoint(root, tmp_path_factory):
    """A DINO demo detector of 3 classes, random weights, saved as training saves it."""
    model = MODELS.build(copy.deepcopy(config(root, DINO_DEMO).model))
    model.init_weights()
    path = tmp_path_factory.mktemp('dino') / 'dino.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': {'classes': ['a', 'b', 'c']}}}, path)
    return path


def test_pit_s_dino_trains_a_step_into_the_backbone_and_predicts_900_queries_into_300(root):
    cfg = config(root, 'dino-4scale_pit-s_8xb2-12e_coco.py')
    assert cfg.model.neck.in_channels == [144, 288, 576] and cfg.model.neck.num_outs == 4
    assert cfg.optim_wrapper.optimizer.lr == 1e-4 and cfg.train_cfg.max_epochs == 12  # mmdet's DINO recipe
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert isinstance(model, FastDINO) and model.num_queries == 900
    assert any(isinstance(m, FusedMultiScaleDeformableAttention) for m in model.modules())
    from test_configs import tiny_batch

    inputs, samples = tiny_batch(224, 256, num_classes=80)  # 1133 encoder positions for 900 queries
    model.train()
    losses = model.loss(inputs, samples)
    assert any(k.startswith('dn_loss') for k in losses)  # the denoising queries trained
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    model.eval()
    with torch.no_grad():
        result = model.predict(inputs, samples)[0].pred_instances
    assert len(result.scores) == 300 and result.bboxes.dtype == torch.float32


def test_the_fused_kernel_gives_mmcvs_numbers_inside_dino(root):
    cfg = config(root, DINO_DEMO)
    fused = MODELS.build(copy.deepcopy(cfg.model))
    fused.init_weights()
    plain = MODELS.build(dict(copy.deepcopy(cfg.model), cpu_deform_attn='mmcv'))
    plain.load_state_dict(fused.state_dict())
    assert not any(isinstance(m, FusedMultiScaleDeformableAttention) for m in plain.modules())
    from test_configs import tiny_batch

    inputs, samples = tiny_batch(128, 128)
    with torch.no_grad():
        a = fused.eval().predict(inputs, samples)[0].pred_instances
        b = plain.eval().predict(inputs, samples)[0].pred_instances
    torch.testing.assert_close(a.bboxes, b.bboxes, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(a.scores, b.scores, rtol=1e-4, atol=1e-5)
    assert torch.equal(a.labels, b.labels)


def test_a_dino_checkpoint_of_another_class_count_is_refused_for_testing_and_fine_tunes(root, dino_checkpoint):
    five = config(root, DINO_DEMO, **{'model.bbox_head.num_classes': 5})
    with pytest.raises(CheckpointMismatchError, match='classifies 3 classes, this config 5'):
        build_detector(copy.deepcopy(five), dino_checkpoint)
    model = MODELS.build(five.model)  # load_from: fine-tuning on a 5-class set
    load_checkpoint(model, str(dino_checkpoint), map_location='cpu')
    named = {m.split(':')[0] for m in model.class_layers_differ}
    assert 'dn_query_generator.label_embedding.weight' in named  # DINO's denoising label embedding
    assert {'bbox_head.cls_branches.0.weight', 'bbox_head.cls_branches.2.bias'} <= named
    assert not any(n.startswith(('backbone.', 'encoder.', 'decoder.', 'bbox_head.reg_')) for n in named)
    assert model.dn_query_generator.label_embedding.num_embeddings == 5


def test_an_exported_dino_matches_mmdets_predict_at_every_checked_size(root, dino_checkpoint, tmp_path, capsys):
    out = tmp_path / 'dino.onnx'
    assert (
        export_main([str(root / 'configs' / DINO_DEMO), str(dino_checkpoint), '--out', str(out), '--size', '128x128'])
        == 0
    )
    printed = capsys.readouterr().out
    compared = [line for line in printed.splitlines() if line.startswith('onnxruntime vs mmdet predict at')]
    assert [line.split(' at ')[1].split(',')[0] for line in compared] == [
        '128x128 (batch of 2)',
        '96x128 (batch of 1)',
        '32x128 (batch of 1)',
    ]
    assert all('labels identical' in line for line in compared) and 'DIFFER' not in printed


def dino_model(root, **options):
    return config(root, 'dino-4scale_pit-s_8xb2-12e_coco.py', **options).model


@pytest.mark.parametrize(
    'options, message',
    [
        (
            {'model.neck.num_outs': 5},
            'the level settings disagree: model.num_feature_levels=4, model.neck.num_outs=5, '
            'model.encoder.layer_cfg.self_attn_cfg.num_levels=4, model.decoder.layer_cfg.cross_attn_cfg.num_levels=4',
        ),
        ({'model.decoder.layer_cfg.cross_attn_cfg.num_levels': 3}, 'cross_attn_cfg.num_levels=3'),
        (
            {'model.neck.in_channels': [512, 1024, 2048]},
            'model.neck.in_channels=[512, 1024, 2048] but the backbone (PiT, arch s, out_indices (0, 1, 2)) returns '
            'maps of [144, 288, 576] channels: set --cfg-options model.neck.in_channels="[144, 288, 576]"',
        ),
        (
            {'model.neck.in_channels': [288, 576], 'model.neck.num_outs': 4},
            'returns 3 maps but model.neck.in_channels takes 2: the outputs the neck does not use feed no loss, and '
            'DDP stops',
        ),
        (
            {'model.dn_cfg.num_classes': 80},
            'model.dn_cfg sets num_classes: DINO sizes its denoising queries from the '
            "detector (the label embedding's classes from model.bbox_head.num_classes",
        ),
        (
            {'model.positional_encoding.num_feats': 64},
            'model.positional_encoding.num_feats=64 but the transformer is 256 wide: set it to 128',
        ),
        ({'model.as_two_stage': False}, 'model.as_two_stage=False: DINO is always two-stage with box refinement'),
    ],
)
def test_the_preflight_names_each_setting_that_would_fail_inside_the_model(root, options, message):
    with pytest.raises(PreflightError) as caught:
        check_model(dino_model(root, **options))
    assert message in str(caught.value)


def test_the_preflight_refuses_resnet_stages_that_feed_no_loss_under_both_heads(root):
    for name in ('dino-4scale_r50_8xb2-12e_coco.py', 'deformable-detr_r50_16xb2-50e_coco-halfres.py'):
        model = config(
            root, name, **{'model.backbone.out_indices': (0, 1, 2), 'model.neck.in_channels': [256, 512, 1024]}
        ).model
        with pytest.raises(
            PreflightError, match='builds 4 stages but returns none after stage 2: .* Set model.backbone.num_stages=3'
        ):
            check_model(model)
    for name in (
        'dino-4scale_r50_8xb2-12e_coco.py',
        'dino-4scale_vit-s_8xb2-12e_coco.py',
        'deformable-detr_vit-s_16xb2-50e_coco-halfres.py',
    ):
        check_model(config(root, name).model)  # the shipped baselines pass


def test_a_batch_other_than_the_recipes_is_told_to_scale_its_lr(root):
    cfg = config(root, 'dino-4scale_pit-s_8xb2-12e_coco.py')
    advice = lr_scaling_advice(cfg, world_size=1)
    assert advice.startswith("this run's total batch is 2 (1 x 2) but the config's learning rate is set for 16")
    assert '--auto-scale-lr' in advice and '(0.0001 -> 1.25e-05)' in advice
    assert lr_scaling_advice(cfg, world_size=8) is None
    cfg.auto_scale_lr.enable = True  # what --auto-scale-lr sets
    assert lr_scaling_advice(cfg, world_size=1) is None


def test_mim_train_of_a_dino_config_with_bad_levels_stops_with_the_message_and_no_traceback(root, tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text(
        f'_base_ = {str(root / "configs" / "dino-4scale_pit-s_8xb2-12e_coco.py")!r}\n'
        'model = dict(neck=dict(num_outs=5, in_channels=[512, 1024, 2048]))\n'
    )
    train = f'{mmdet.__file__.rsplit("/", 1)[0]}/.mim/tools/train.py'  # what `mim train mmdet CONFIG` runs
    run = subprocess.run(
        [sys.executable, train, str(bad), '--work-dir', str(tmp_path / 'work')],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 1 and 'Traceback' not in run.stderr, run.stderr[-3000:]
    assert 'model.neck.num_outs=5' in run.stderr and 'model.neck.in_channels="[144, 288, 576]"' in run.stderr
    assert not (tmp_path / 'work').exists() or not any((tmp_path / 'work').rglob('*.pth'))


def test_the_dataset_command_writes_a_dino_config_with_dinos_schedule(root, tmp_path, capsys):
    from pit_det.cli.dataset_config import main as dataset_main
    from pit_det.data import make_synthetic_coco

    data = make_synthetic_coco(tmp_path / 'mine', num_train=8, num_val=4, seed=3)
    out = tmp_path / 'mine_dino.py'
    assert (
        dataset_main(
            [
                str(data / 'annotations' / 'train.json'),
                '--train-images',
                str(data / 'train'),
                '--val-ann',
                str(data / 'annotations' / 'val.json'),
                '--val-images',
                str(data / 'val'),
                '--base',
                'dino-4scale_pit-s_8xb2-12e_coco',
                '--out',
                str(out),
            ]
        )
        == 0
    )
    assert ': a DINO for the dataset of' in out.read_text()
    cfg = Config.fromfile(str(out))
    assert cfg.model.type == 'FastDINO' and cfg.model.bbox_head.num_classes == 3
    assert cfg.train_cfg.max_epochs == 50 and cfg.param_scheduler[0].milestones == [46]  # DINO drops at 11/12
    check_model(cfg.model)  # before the build: mmdet's DINO writes the detector's numbers into dn_cfg
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert model.dn_query_generator.num_classes == 3 and model.dn_query_generator.label_embedding.num_embeddings == 3


@pytest.mark.slow
def test_the_convergence_study_trains_both_heads_on_one_set_and_says_what_the_claim_comes_to(tmp_path, capsys):
    from pit_det.analysis.convergence import epochs_to_reach, run_convergence, verdict

    result = run_convergence(tmp_path / 'out', tmp_path / 'data', epochs=1, seed=11, num_train=16, num_val=8)
    assert set(result['curves']) == {'Deformable DETR', 'DINO'}
    for curve in result['curves'].values():  # one validation per epoch, AP from pycocotools
        assert [p['epoch'] for p in curve] == [1] and 0 <= curve[0]['bbox_mAP'] <= 1
    assert (tmp_path / 'out' / 'convergence.png').stat().st_size > 0
    assert (tmp_path / 'out' / 'deformable-detr_pit-ti_synthetic_cpu' / 'epoch_1.pth').is_file()
    assert (tmp_path / 'out' / 'dino-4scale_pit-ti_synthetic_cpu' / 'epoch_1.pth').is_file()
    ddetr = [dict(epoch=e, bbox_mAP=ap) for e, ap in enumerate([0.1, 0.3, 0.5, 0.6], 1)]
    assert epochs_to_reach(ddetr, 0.5) == 3 and epochs_to_reach(ddetr, 0.7) is None
    fast = [dict(epoch=e, bbox_mAP=ap) for e, ap in enumerate([0.2, 0.6, 0.7, 0.7], 1)]
    assert verdict({'Deformable DETR': ddetr, 'DINO': fast})['holds']  # 0.6 reached at epoch 2 of 4
    slow = [dict(epoch=e, bbox_mAP=ap) for e, ap in enumerate([0.1, 0.2, 0.6, 0.7], 1)]
    assert verdict({'Deformable DETR': ddetr, 'DINO': slow}) == dict(
        deformable_detr_final_ap=0.6, dino_final_ap=0.7, epochs=4, dino_epoch_reaching_it=3, holds=False
    )


def test_the_convergence_command_refuses_a_data_root_that_is_a_file(tmp_path, capsys):
    from pit_det.cli.convergence import main as convergence_main

    (tmp_path / 'data').write_text('not a folder')
    assert convergence_main(['--out-dir', str(tmp_path / 'out'), '--data-root', str(tmp_path / 'data')]) == 1
    assert f'--data-root {tmp_path / "data"} is a file: give a folder' in capsys.readouterr().err
    assert (tmp_path / 'data').read_text() == 'not a folder' and not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_the_dataset_config_budget_trains_what_the_command_writes(tmp_path, capsys):
    """--budget dataset-config trains, for each head, the very file pit-det-dataset-config writes over its demo for
    the generated set (its epochs and learning-rate step), validated after every epoch."""
    from pit_det.analysis.convergence import HEADS, WRITTEN, train_written_curve, written_config
    from pit_det.cli.dataset_config import main as dataset_config_main
    from pit_det.data import make_synthetic_coco

    data = make_synthetic_coco(tmp_path / 'data', num_train=16, num_val=8, seed=11)
    for name, demo in HEADS.items():
        ours = written_config(name, data, tmp_path / 'ours' / demo.stem)
        by_command = tmp_path / 'command' / demo.stem / WRITTEN
        by_command.parent.mkdir(parents=True)
        argv = [str(data / 'annotations' / 'train.json'), '--train-images', str(data / 'train'), '--val-ann']
        argv += [str(data / 'annotations' / 'val.json'), '--val-images', str(data / 'val'), '--base', str(demo)]
        assert dataset_config_main([*argv, '--out', str(by_command)]) == 0
        assert ours.read_text() == by_command.read_text()
        assert 'max_epochs=50' in ours.read_text()  # 16 images: the most the command gives
    # the command's --epochs 1 over the Deformable DETR demo, trained as written
    one = tmp_path / 'one' / WRITTEN
    one.parent.mkdir()
    assert dataset_config_main([*argv[:-1], str(HEADS['Deformable DETR']), '--out', str(one), '--epochs', '1']) == 0
    curve, schedule = train_written_curve(one, tmp_path / 'work', seed=11)
    assert schedule == dict(epochs=1, lr_step=1) and [p['epoch'] for p in curve] == [1]
    assert 0 <= curve[0]['bbox_mAP'] <= 1


def test_the_convergence_command_takes_epochs_only_for_the_same_budget(capsys):
    from pit_det.cli.convergence import main as convergence_main

    with pytest.raises(SystemExit) as stop:
        convergence_main(['--budget', 'dataset-config', '--epochs', '8'])
    assert stop.value.code == 2 and '--epochs goes with --budget same' in capsys.readouterr().err
