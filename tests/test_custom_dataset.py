"""Your own COCO-format dataset: the written config agrees with the file, trains, tests, and refuses bad input."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from pit_det.cli.dataset_config import main
from pit_det.data import make_synthetic_coco
from pit_det.data.custom import read_coco, schedule_for

NAMES = {1: 'red box', 2: 'grüne Scheibe', 3: 'triangle'}  # a space and unicode
IDS = {1: 0, 2: 5, 3: 9}  # ids from 0, with gaps


def own_set(root, num_train=8, num_val=4, seed=0):
    """A generated set relabelled as a user's: other names, ids 0/5/9, one image without boxes."""
    data = make_synthetic_coco(root, num_train=num_train, num_val=num_val, seed=seed)
    for split in ('train', 'val'):
        path = data / 'annotations' / f'{split}.json'
        ann = json.loads(path.read_text())
        ann['categories'] = [dict(c, id=IDS[c['id']], name=NAMES[c['id']]) for c in ann['categories']]
        ann['annotations'] = [dict(a, category_id=IDS[a['category_id']]) for a in ann['annotations']
                              if a['image_id'] != ann['images'][0]['id']]  # its first image has no boxes
        path.write_text(json.dumps(ann))
    return data


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_written_config_agrees_with_the_file_and_the_split_leaves_the_input_alone(tmp_path, capsys):
    data = own_set(tmp_path / 'mine')
    train = data / 'annotations' / 'train.json'
    before = digest(train)
    out = tmp_path / 'cfg' / 'mine.py'
    assert main([str(train), '--train-images', str(data / 'train'), '--val-split', '0.25', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'wrote' in printed and '3 classes (red box, grüne Scheibe, triangle)' in printed
    assert f'mim train mmdet {out} --work-dir work_dirs/mine' in printed and 'mim test mmdet' in printed
    assert digest(train) == before
    cfg = Config.fromfile(str(out))
    assert cfg.train_dataloader.dataset.metainfo.classes == ('red box', 'grüne Scheibe', 'triangle')
    assert cfg.model.bbox_head.num_classes == 3 and cfg.model.backbone.type == 'PiT'
    splits = {p: json.loads((tmp_path / 'cfg' / f'mine_{p}.json').read_text()) for p in ('train', 'val')}
    assert len(splits['train']['images']) == 6 and len(splits['val']['images']) == 2  # 25% of 8, seeded
    ids = [{i['id'] for i in s['images']} for s in splits.values()]
    assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 8  # every image kept, with boxes or without
    assert cfg.val_evaluator.ann_file == str(tmp_path / 'cfg' / 'mine_val.json')
    assert cfg.val_dataloader.dataset.ann_file == cfg.val_evaluator.ann_file
    assert cfg.train_cfg.max_epochs == 50 and cfg.param_scheduler[0].milestones == [40]  # 8 images: the cap
    # the same command again replaces its own config; a file of the user's is refused
    assert main([str(train), '--train-images', str(data / 'train'), '--val-split', '0.25', '--out', str(out)]) == 0
    theirs = tmp_path / 'theirs.py'
    theirs.write_text('x = 1\n')
    assert main([str(train), '--train-images', str(data / 'train'), '--val-split', '0.25', '--out', str(theirs)]) == 1
    assert 'not an output of this tool' in capsys.readouterr().err and theirs.read_text() == 'x = 1\n'


def test_schedule_follows_the_set_size():
    assert schedule_for(100, False).epochs == 50 and schedule_for(2000, False).epochs == 13
    assert schedule_for(100_000, False).epochs == 12 and schedule_for(2000, True).epochs == 6
    assert schedule_for(500, False, epochs=3).epochs == 3


@pytest.mark.parametrize('change,fact', [
    (lambda a: a.pop('categories'), 'no "categories" list'),
    (lambda a: a.update(categories=[]), 'has no categories'),
    (lambda a: a['annotations'][0].update(bbox=[1, 2, 3]), 'annotation 0'),
    (lambda a: a['annotations'][1].update(bbox=[10, 10, 5, -4]), 'annotation 1'),
    (lambda a: a['annotations'][0].update(image_id=999), 'image_id 999 is not an id of "images"'),
    (lambda a: a['annotations'][0].update(category_id=7), 'category_id 7 is not an id of "categories"'),
])
def test_a_file_that_is_not_coco_detection_names_the_file_and_the_entry(tmp_path, capsys, change, fact):
    data = own_set(tmp_path / 'mine')
    ann = json.loads((data / 'annotations' / 'train.json').read_text())
    change(ann)
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(ann))
    assert main([str(bad), '--train-images', str(data / 'train'), '--val-split', '0.25',
                 '--out', str(tmp_path / 'x.py')]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and fact in err and 'Traceback' not in err and not (tmp_path / 'x.py').exists()


def test_the_written_config_trains_and_tests_through_mmdets_scripts(tmp_path):
    """One epoch of the demo's small model on a set it has never seen, then mim test of the checkpoint."""
    import mmdet
    data = own_set(tmp_path / 'mine', num_train=16, num_val=8, seed=3)
    out = tmp_path / 'mine.py'
    assert main([str(data / 'annotations' / 'train.json'), '--train-images', str(data / 'train'),
                 '--val-ann', str(data / 'annotations' / 'val.json'), '--val-images', str(data / 'val'),
                 '--base', 'deformable-detr_pit-ti_synthetic_cpu', '--epochs', '1', '--out', str(out)]) == 0
    tools = Path(mmdet.__file__).parent / '.mim' / 'tools'  # what `mim train/test mmdet` run
    work = tmp_path / 'work'
    train = subprocess.run([sys.executable, str(tools / 'train.py'), str(out), '--work-dir', str(work)],
                           capture_output=True, text=True, cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert 'coco/bbox_mAP' in train.stdout + train.stderr
    test = subprocess.run([sys.executable, str(tools / 'test.py'), str(out), str(work / 'epoch_1.pth'), '--work-dir',
                           str(work)], capture_output=True, text=True, cwd=tmp_path)
    assert test.returncode == 0 and 'coco/bbox_mAP' in test.stdout + test.stderr, test.stderr[-3000:]


def test_read_coco_accepts_ids_from_zero_with_gaps_and_keeps_the_file_order(tmp_path):
    data = own_set(tmp_path / 'mine')
    coco = read_coco(data / 'annotations' / 'train.json')
    assert coco.classes == ['red box', 'grüne Scheibe', 'triangle']
    assert [c['id'] for c in coco.data['categories']] == [0, 5, 9]
