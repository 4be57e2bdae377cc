import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet.evaluation import CocoMetric
from mmdet.registry import RUNNERS
from mmdet.utils import register_all_modules
from mmengine.config import Config

from pit_det.data import make_synthetic_coco
from pit_det.demo import best_checkpoint, load_demo_config
from pit_det.preflight import PreflightError


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp('data') / 'synthetic', num_train=16, num_val=8)


def test_generator_is_deterministic(tmp_path, synthetic):
    again = make_synthetic_coco(tmp_path / 'again', num_train=16, num_val=8)
    for name in ('annotations/train.json', 'annotations/val.json', 'train/000003.png', 'val/000007.png'):
        assert (again / name).read_bytes() == (synthetic / name).read_bytes()
    ann = json.loads((synthetic / 'annotations' / 'train.json').read_text())
    assert len(ann['images']) == 16 and [c['name'] for c in ann['categories']] == ['square', 'disc', 'triangle']
    assert all(1 <= sum(a['image_id'] == i['id'] for a in ann['annotations']) <= 3 for i in ann['images'])
    with pytest.raises(ValueError, match='at least 32'):
        make_synthetic_coco(tmp_path / 'bad', size=16)


def test_generator_never_writes_into_a_foreign_folder(tmp_path):
    real = tmp_path / 'coco'
    (real / 'annotations').mkdir(parents=True)
    (real / 'annotations' / 'train.json').write_text('{"precious": true}')
    with pytest.raises(FileExistsError, match='not empty and holds no pit-det synthetic set'):
        make_synthetic_coco(real, num_train=2, num_val=1)
    assert (real / 'annotations' / 'train.json').read_text() == '{"precious": true}'
    assert sorted(p.name for p in real.rglob('*')) == ['annotations', 'train.json']


def coco_metric(ann_file):
    metric = CocoMetric(ann_file=str(ann_file), metric='bbox')
    metric.dataset_meta = dict(classes=('square', 'disc', 'triangle'))
    return metric


def test_ground_truth_scores_one_and_nothing_scores_zero(synthetic):
    ann = json.loads((synthetic / 'annotations' / 'val.json').read_text())
    perfect, empty = (
        coco_metric(synthetic / 'annotations' / 'val.json'),
        coco_metric(synthetic / 'annotations' / 'val.json'),
    )
    for image in ann['images']:
        objs = [a for a in ann['annotations'] if a['image_id'] == image['id']]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in objs)], dtype=np.float32)
        pred = dict(
            bboxes=torch.from_numpy(boxes),
            scores=torch.ones(len(objs)),
            labels=torch.tensor([a['category_id'] - 1 for a in objs]),
        )
        # nothing found: one tiny box per image in a corner, where no object is (COCO AP needs a prediction)
        none = dict(
            bboxes=torch.tensor([[0.0, 0.0, 2.0, 2.0]]), scores=torch.ones(1), labels=torch.zeros(1, dtype=torch.long)
        )
        meta = dict(img_id=image['id'], ori_shape=(image['height'], image['width']))
        perfect.process({}, [dict(meta, pred_instances=pred)])
        empty.process({}, [dict(meta, pred_instances=none)])
    good = perfect.evaluate(len(ann['images']))
    bad = empty.evaluate(len(ann['images']))
    assert good['coco/bbox_mAP'] == pytest.approx(1.0) and good['coco/bbox_mAP_50'] == pytest.approx(1.0)
    assert bad['coco/bbox_mAP'] == 0.0 and bad['coco/bbox_mAP_50'] == 0.0


def _mim() -> str:
    exe = Path(sys.executable).parent / 'mim'
    return str(exe) if exe.exists() else shutil.which('mim')


@pytest.mark.slow
def test_mim_train_resume_evaluate_and_mim_test(tmp_path, synthetic):
    register_all_modules()
    work = tmp_path / 'work'
    cfg = load_demo_config(synthetic, work, max_epochs=1)
    cfg.train_dataloader.batch_size = cfg.val_dataloader.batch_size = 8
    config = tmp_path / 'config.py'
    cfg.dump(str(config))
    trained = subprocess.run(
        [_mim(), 'train', 'mmdet', str(config), '--work-dir', str(work)], capture_output=True, text=True, cwd=tmp_path
    )
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    first = work / 'epoch_1.pth'
    assert first.is_file()

    resumed_cfg = load_demo_config(synthetic, work, max_epochs=2)
    resumed_cfg.train_dataloader.batch_size = resumed_cfg.val_dataloader.batch_size = 8
    resumed_cfg.resume, resumed_cfg.load_from = True, str(first)
    resumed = RUNNERS.build(resumed_cfg)
    resumed.train()
    assert resumed.epoch == 2 and resumed.iter == 4 and (work / 'epoch_2.pth').is_file()
    best, epoch = best_checkpoint(resumed)
    assert best.is_file() and best.name == f'best_coco_bbox_mAP_epoch_{epoch}.pth' and epoch in (1, 2)
    assert not list(work.glob('*.partial'))  # every checkpoint was renamed into place whole
    metrics = resumed.test()  # the model in memory: epoch 2's weights

    # resumed into another work dir, from a checkpoint whose next validation is a new best (its best score made
    # low): mmengine deleted the best checkpoint of the first work dir; a run deletes files in its own only
    state = torch.load(work / 'epoch_2.pth', weights_only=True)
    state['message_hub']['runtime_info']['best_score'] = -1.0
    low = tmp_path / 'epoch_2_low.pth'
    torch.save(state, low)
    kept = {p.name: p.read_bytes() for p in work.glob('*.pth')}
    other_cfg = load_demo_config(synthetic, tmp_path / 'other', max_epochs=3)
    other_cfg.train_dataloader.batch_size = other_cfg.val_dataloader.batch_size = 8
    other_cfg.resume, other_cfg.load_from = True, str(low)
    other = RUNNERS.build(other_cfg)
    other.train()
    assert {p.name: p.read_bytes() for p in work.glob('*.pth')} == kept  # byte-identical, none removed
    assert (tmp_path / 'other' / 'best_coco_bbox_mAP_epoch_3.pth').is_file()

    out = subprocess.run(
        [
            _mim(),
            'test',
            'mmdet',
            str(config),
            '--checkpoint',
            str(work / 'epoch_2.pth'),
            '--work-dir',
            str(tmp_path / 'test'),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    logged = dict(re.findall(r'(coco/bbox_\w+): (-?[\d.]+)', out.stdout + out.stderr))
    assert len(logged) == 6  # mAP, mAP_50, mAP_75, mAP_s, mAP_m, mAP_l
    for name, value in logged.items():  # the checkpoint on disk evaluates exactly as the run that wrote it
        assert float(value) == pytest.approx(round(metrics[name], 4), abs=1e-4), name


def test_missing_dataset_and_weights_stop_with_a_message(root, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hf'))  # an empty hub cache ...
    monkeypatch.setattr(constants, 'ENDPOINT', 'http://127.0.0.1:9')  # ... and no network: a closed local port
    register_all_modules()
    cfg = Config.fromfile(str(root / 'configs' / 'pit_s_deformable_detr.py'))
    cfg.work_dir = str(tmp_path / 'work')
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = str(tmp_path / 'coco') + '/'
    runner = RUNNERS.build(cfg)
    with pytest.raises(PreflightError) as err:
        runner.train()
    message = str(err.value)
    assert 'training annotations not found' in message and 'instances_train2017.json' in message
    assert 'data/coco/val2017' in message and 'ln -s' in message
    assert f'weights hf-hub:timm/pit_s_224.in1k are not in the Hugging Face cache {tmp_path / "hf"}' in message
    assert 'http://127.0.0.1:9/api/models/timm/pit_s_224.in1k unreachable' in message
    assert 'Two ways out' in message and 'init_cfg.checkpoint=PATH' in message
    assert not (tmp_path / 'hf').exists()  # nothing was downloaded or created
    with pytest.raises(PreflightError, match='test annotations not found'):
        runner.test()
