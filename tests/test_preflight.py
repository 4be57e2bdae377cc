"""What a run checks before it starts (pit_det.preflight through CheckedRunner): each case once stopped late or not
at all."""

import json
import logging
import os
import shutil

import pytest
from mmdet.registry import RUNNERS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.logging import MMLogger

from pit_det.data import make_synthetic_coco
from pit_det.demo import load_demo_config
from pit_det.preflight import PreflightError


@pytest.fixture()
def data(tmp_path):
    return make_synthetic_coco(tmp_path / 'synthetic', num_train=4, num_val=2)


def runner_for(cfg):
    register_all_modules()
    return RUNNERS.build(cfg)


def test_evaluator_must_score_against_the_datasets_own_annotations(tmp_path, data):
    other = make_synthetic_coco(tmp_path / 'other', num_train=4, num_val=2, seed=1)
    cfg = load_demo_config(data, tmp_path / 'work')
    cfg.test_dataloader.dataset.data_root = str(other) + '/'  # new data, evaluator left at the old ground truth
    with pytest.raises(PreflightError) as err:
        runner_for(cfg).test()
    message = str(err.value)
    assert f'scores against {data}/annotations/val.json' in message
    assert f'dataset reads {other}/annotations/val.json' in message
    assert f'test_evaluator.ann_file={other}/annotations/val.json' in message


def test_classes_matching_no_category_stop_before_training(tmp_path, data):
    cfg = load_demo_config(data, tmp_path / 'work')
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.metainfo = dict(classes=('cat', 'dog', 'bird'))
    with pytest.raises(PreflightError) as err:
        runner_for(cfg).train()
    message = str(err.value)
    assert "none of the config's 3 classes (cat, dog, bird) is a category of" in message
    assert '(square, disc, triangle)' in message and 'train_dataloader.dataset.metainfo.classes' in message
    assert not (tmp_path / 'work' / 'epoch_1.pth').exists()


def test_a_custom_set_without_metainfo_is_checked_against_coco_classes(tmp_path, data):
    cfg = load_demo_config(data, tmp_path / 'work')
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        del loader.dataset['metainfo']  # CocoDataset's default: the 80 COCO classes
    with pytest.raises(PreflightError, match=r"none of the config's 80 classes \(person, bicycle"):
        runner_for(cfg).train()


def test_a_category_the_config_omits_is_a_warning(tmp_path, data):
    cfg = load_demo_config(data, tmp_path / 'work')
    cfg.val_cfg = None
    cfg.train_dataloader.dataset.metainfo = dict(classes=('square', 'disc'))
    cfg.model.bbox_head.num_classes = 2  # a coherent config that trains on two of the file's three categories
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        from pit_det.preflight import check_train

        check_train(cfg)
    finally:
        logger.removeHandler(handler)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any('1 categories of' in w and 'triangle' in w for w in warnings), warnings


def test_images_listed_but_missing_stop_before_training(tmp_path, data):
    (data / 'train' / '000002.png').unlink()
    cfg = load_demo_config(data, tmp_path / 'work')
    with pytest.raises(
        PreflightError,
        match=r'training: 1 of the 4 images listed in .*train.json are not in '
        r'.*train/?, e.g. 000002.png',
    ):
        runner_for(cfg).train()


def test_an_empty_dataset_is_named(tmp_path, data):
    ann = json.loads((data / 'annotations' / 'train.json').read_text())
    (data / 'annotations' / 'train.json').write_text(json.dumps(dict(ann, images=[], annotations=[])))
    cfg = load_demo_config(data, tmp_path / 'work')
    with pytest.raises(PreflightError, match='training annotations .*train.json list no images'):
        runner_for(cfg).train()


def test_demo_config_before_its_data_exists_says_run_the_demo(demo_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(str(demo_config))
    cfg.work_dir = str(tmp_path / 'work')
    with pytest.raises(PreflightError) as err:
        runner_for(cfg).train()
    assert 'run `pit-det-demo`' in str(err.value) and 'instances_train2017' not in str(err.value)


def test_torchvision_weights_offline_and_uncached_stop_with_the_way_out(root, tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setenv('https_proxy', 'http://127.0.0.1:9')  # a closed local port: no route to the internet
    monkeypatch.setenv('HTTPS_PROXY', 'http://127.0.0.1:9')
    data = make_synthetic_coco(tmp_path / 'coco', num_train=2, num_val=2)
    cfg = Config.fromfile(str(root / 'configs' / 'deformable-detr_r50_16xb2-50e_coco-halfres.py'))
    cfg.work_dir = str(tmp_path / 'work')
    shapes = dict(classes=('square', 'disc', 'triangle'))
    for loader, split in ((cfg.train_dataloader, 'train'), (cfg.val_dataloader, 'val')):
        loader.dataset.update(
            data_root=str(data) + '/',
            ann_file=f'annotations/{split}.json',
            data_prefix=dict(img=f'{split}/'),
            metainfo=shapes,
        )
    cfg.val_evaluator.ann_file = str(data / 'annotations' / 'val.json')
    with pytest.raises(PreflightError) as err:
        runner_for(cfg).train()
    message = str(err.value)
    cached = tmp_path / 'torch' / 'hub' / 'checkpoints'
    assert 'weights torchvision://resnet50 (https://download.pytorch.org/models/resnet50-' in message
    assert f"are not in torch.hub's cache {cached} (set by TORCH_HOME)" in message
    assert 'model.backbone.init_cfg.checkpoint=PATH' in message
    # with the file in torch.hub's cache the same check passes (the download is not needed)
    cached.mkdir(parents=True)
    name = message.split('https://download.pytorch.org/models/', 1)[1].split(')')[0]
    shutil.copy(os.devnull, cached / name)
    from pit_det.preflight import Findings, check_weights

    findings = Findings()
    check_weights(cfg.model, findings)
    assert findings.config_problems == []


def test_config_classes_missing_from_the_data_stop_before_training(tmp_path, data):
    cfg = load_demo_config(data, tmp_path / 'work')
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.metainfo = dict(classes=('square', 'star', 'triangle'))  # 'triangle' would get star's label
    with pytest.raises(PreflightError) as err:
        runner_for(cfg).train()
    message = str(err.value)
    assert "training: 1 of the config's 3 classes are not categories of" in message and 'star' in message
    assert "validation: 1 of the config's 3 classes" in message and 'model.bbox_head.num_classes' in message


@pytest.mark.parametrize('num_classes', [2, 5])
def test_num_classes_must_match_the_dataset_in_train_and_test(tmp_path, data, num_classes):
    """Fewer classes than the data ended in an IndexError after training; more trained phantom classes silently."""
    from pit_det.preflight import check_test, check_train  # what CheckedRunner.train()/test() run first

    cfg = load_demo_config(data, tmp_path / 'work')
    cfg.model.bbox_head.num_classes = num_classes
    for check, role in ((check_train, 'training'), (check_test, 'test')):
        with pytest.raises(PreflightError) as err:
            check(cfg)
        message = str(err.value)
        assert f'{role}: model.bbox_head.num_classes is {num_classes} but the dataset has 3 classes' in message
        assert '--cfg-options model.bbox_head.num_classes=3' in message


def test_a_checkpoint_of_another_class_set_is_refused_in_test_and_inference(tmp_path, data, demo_config):
    """Training from it is fine-tuning (tests/test_checkpoint.py); testing or drawing with it scores wrong classes."""
    import copy

    import torch
    from mmdet.registry import MODELS

    from pit_det.models import CheckpointMismatchError
    from pit_det.models.detectors import build_detector

    cfg = load_demo_config(data, tmp_path / 'work')
    five = copy.deepcopy(cfg.model)
    five.bbox_head.num_classes = 5
    register_all_modules()
    path = tmp_path / 'five.pth'
    torch.save({'state_dict': MODELS.build(five).state_dict(), 'meta': {}}, path)
    cfg.load_from = str(path)
    with pytest.raises(CheckpointMismatchError, match=r'five.pth classifies 5 classes, this config 3'):
        runner_for(cfg).test()
    with pytest.raises(CheckpointMismatchError, match='model.bbox_head.num_classes=5'):
        build_detector(demo_config, path)


@pytest.mark.parametrize(
    'keep,fact',
    [
        (
            1000,
            'model.test_cfg.max_per_img=1000 but the head ranks 30 queries x 3 '
            'classes = 90 scores: set model.test_cfg.max_per_img to at most 90',
        ),
        (0, 'model.test_cfg.max_per_img=0: keep at least 1 detection'),
    ],
)
def test_more_detections_per_image_than_the_head_ranks_stop_before_training(tmp_path, data, keep, fact):
    """max_per_img=1000 trained a whole epoch, wrote a checkpoint, then failed in topk at the first validation."""
    cfg = load_demo_config(data, tmp_path / 'work')
    cfg.merge_from_dict({'model.test_cfg.max_per_img': keep})  # as --cfg-options gives it to train and test
    with pytest.raises(PreflightError) as err:
        runner_for(cfg)
    assert fact in str(err.value)
    assert not (tmp_path / 'work').exists() or not list((tmp_path / 'work').rglob('*.pth'))


def test_a_backbone_argument_its_constructor_rejects_stops_before_the_build(tmp_path, data):
    """--cfg-options model.backbone.arch=zz ended in a traceback from PiT's constructor."""
    cfg = load_demo_config(data, tmp_path / 'work')
    cfg.merge_from_dict({'model.backbone.arch': 'zz'})
    with pytest.raises(PreflightError) as err:
        runner_for(cfg)
    assert "model.backbone (PiT): unknown PiT arch 'zz'; valid names: ti, xs, s, b" in str(err.value)


def test_a_checkpoint_of_another_detector_is_refused_in_test_and_inference(tmp_path, data, root):
    """A Deformable DETR checkpoint in a DINO config scored mAP 0.046 with exit 0 (DINO's query and denoising
    embeddings, its decoder norm left untrained); training from it stays allowed (fine-tuning)."""
    import torch
    from mmdet.registry import MODELS

    from pit_det.models import CheckpointMismatchError
    from pit_det.models.detectors import build_detector

    register_all_modules()
    ddetr = Config.fromfile(str(root / 'configs' / 'demo' / 'deformable-detr_pit-ti_synthetic_cpu.py'))
    path = tmp_path / 'ddetr.pth'
    torch.save({'state_dict': MODELS.build(ddetr.model).state_dict(), 'meta': {}}, path)
    dino = root / 'configs' / 'demo' / 'dino-4scale_pit-ti_synthetic_cpu.py'
    cfg = load_demo_config(data, tmp_path / 'work')  # the demo's data and schedule ...
    cfg.model = Config.fromfile(str(dino)).model  # ... with the DINO demo's detector
    cfg.load_from = str(path)
    message = r'ddetr.pth lacks \d+ of the \d+ tensors of this FastDINO \(e.g. .*\): it is a checkpoint of another'
    with pytest.raises(CheckpointMismatchError, match=message):
        runner_for(cfg).test()
    with pytest.raises(CheckpointMismatchError, match=message):
        build_detector(dino, path)
    cfg.load_from, cfg.resume = str(path), True  # --resume: continues a run, with its optimizer state
    cfg.work_dir = str(tmp_path / 'resumed')
    with pytest.raises(
        CheckpointMismatchError,
        match=r'--resume .*ddetr.pth: .*lacks .* pass the file as '
        r'--cfg-options load_from=.* without --resume',
    ):
        runner_for(cfg).train()
    assert not list((tmp_path / 'resumed').rglob('*.pth'))
    own = tmp_path / 'dino.pth'  # its own checkpoint: every tensor there
    torch.save({'state_dict': MODELS.build(cfg.model).state_dict(), 'meta': {}}, own)
    assert build_detector(dino, own).missing_from_checkpoint == []


@pytest.mark.parametrize('split,role', [('train', 'training'), ('val', 'validation')])
def test_annotations_without_area_stop_before_training(tmp_path, data, split, role):
    """mmdet's CocoDataset and CocoMetric read every annotation's area: without one, training used to end in
    KeyError: 'area' (at the first evaluation for the validation set)."""
    path = data / 'annotations' / f'{split}.json'
    ann = json.loads(path.read_text())
    del ann['annotations'][1]['area']
    path.write_text(json.dumps(ann))
    cfg = load_demo_config(data, tmp_path / 'work')
    with pytest.raises(
        PreflightError,
        match=rf'{split}.json: 1 annotations have no "area", e\.g\. annotation 1, '
        r'.*pit-det-dataset-config',
    ):
        runner_for(cfg).train()
    assert json.loads(path.read_text()) == ann  # the user's file is never filled in


def test_the_preflight_checks_coco_as_the_dataset_command_does(tmp_path, data):
    path = data / 'annotations' / 'train.json'
    ann = json.loads(path.read_text())
    ann['annotations'][0]['id'] = ann['annotations'][1]['id']  # mmdet asserts unique annotation ids mid-start
    path.write_text(json.dumps(ann))
    cfg = load_demo_config(data, tmp_path / 'work')
    with pytest.raises(
        PreflightError, match=r'training: .*train.json, annotation 1 .*an annotation needs an integer "id" of its own'
    ):
        runner_for(cfg).train()
