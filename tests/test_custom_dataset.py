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
from pit_det.data.coco import read_coco
from pit_det.data.dataset_config import schedule_for

NAMES = {1: 'red box', 2: 'grüne Scheibe', 3: 'triangle'}  # a space and unicode
IDS = {1: 0, 2: 5, 3: 9}  # ids from 0, with gaps


def own_set(root, num_train=8, num_val=4, seed=0):
    """A generated set relabelled as a user's: other names, ids 0/5/9, one image without boxes."""
    data = make_synthetic_coco(root, num_train=num_train, num_val=num_val, seed=seed)
    for split in ('train', 'val'):
        path = data / 'annotations' / f'{split}.json'
        ann = json.loads(path.read_text())
        ann['categories'] = [dict(c, id=IDS[c['id']], name=NAMES[c['id']]) for c in ann['categories']]
        ann['annotations'] = [
            dict(a, category_id=IDS[a['category_id']])
            for a in ann['annotations']
            if a['image_id'] != ann['images'][0]['id']
        ]  # its first image has no boxes
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
    # what to expect, at the schedule written: judged at its end, each head at its own
    epochs = cfg.train_cfg.max_epochs
    assert 'expect: box AP near 0 for the first epochs' in printed and f'at the end of its {epochs} epochs' in printed
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


def test_annotation_files_of_the_user_beside_the_config_are_refused(tmp_path, capsys):
    """--out coco.py writes coco_train.json and coco_val.json: files of those names that the tool did not write (here
    the user's own split) were replaced without --force."""
    import hashlib

    data = make_synthetic_coco(tmp_path / 'data', num_train=8, num_val=2)
    train = data / 'annotations' / 'train.json'
    out = tmp_path / 'coco.py'
    mine = {p: tmp_path / f'coco_{p}.json' for p in ('train', 'val')}
    for path in mine.values():
        path.write_text('{"images": [], "annotations": [], "categories": []}')
    before = {p: hashlib.sha256(path.read_bytes()).hexdigest() for p, path in mine.items()}
    argv = [str(train), '--train-images', str(data / 'train'), '--val-split', '0.2', '--out', str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f'the copy of the annotations {mine["train"]} exists and is not an output of this tool' in err
    assert {p: hashlib.sha256(path.read_bytes()).hexdigest() for p, path in mine.items()} == before
    assert not out.exists()
    assert main(argv + ['--force']) == 0  # the user's say-so
    capsys.readouterr()
    assert main(argv) == 0  # now the tool's own copies: replaced without asking
    assert json.loads(mine['val'].read_text())['pit_det_copy_of'] == str(train.resolve())


def test_the_next_commands_paste_as_one_word_per_path(tmp_path, capsys):
    """The printed next: lines are for a shell: a config name with a space or a quote stays one argument."""
    import shlex

    data = make_synthetic_coco(tmp_path / 'data', num_train=8, num_val=2)
    out = tmp_path / "my set's v2.py"
    assert (
        main(
            [
                str(data / 'annotations' / 'train.json'),
                '--train-images',
                str(data / 'train'),
                '--val-split',
                '0.2',
                '--out',
                str(out),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.split('next:\n', 1)[1].splitlines()
    train, test = (shlex.split(line) for line in lines)
    assert train == ['mim', 'train', 'mmdet', str(out), '--work-dir', "work_dirs/my set's v2"]
    assert test[3] == str(out) and test[5] == "work_dirs/my set's v2/epoch_50.pth"


def test_schedule_follows_the_set_size():
    assert schedule_for(100, False).epochs == 50 and schedule_for(2000, False).epochs == 13
    assert schedule_for(100_000, False).epochs == 12 and schedule_for(2000, True).epochs == 6
    assert schedule_for(500, False, epochs=3).epochs == 3


@pytest.mark.parametrize(
    'change,fact',
    [
        (lambda a: a.pop('categories'), 'no "categories" list'),
        (lambda a: a.update(categories=[]), 'has no categories'),
        (lambda a: a['annotations'][0].update(bbox=[1, 2, 3]), 'annotation 0'),
        (lambda a: a['annotations'][1].update(bbox=[10, 10, 5, -4]), 'annotation 1'),
        (lambda a: a['annotations'][0].update(image_id=999), 'image_id 999 is not an id of "images"'),
        (lambda a: a['annotations'][0].update(category_id=7), 'category_id 7 is not an id of "categories"'),
    ],
)
def test_a_file_that_is_not_coco_detection_names_the_file_and_the_entry(tmp_path, capsys, change, fact):
    data = own_set(tmp_path / 'mine')
    ann = json.loads((data / 'annotations' / 'train.json').read_text())
    change(ann)
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(ann))
    assert (
        main([str(bad), '--train-images', str(data / 'train'), '--val-split', '0.25', '--out', str(tmp_path / 'x.py')])
        == 1
    )
    err = capsys.readouterr().err
    assert str(bad) in err and fact in err and 'Traceback' not in err and not (tmp_path / 'x.py').exists()


@pytest.mark.slow
def test_the_written_config_trains_and_tests_through_mmdets_scripts(tmp_path, capsys):
    """One epoch of the demo's small model on a set it has never seen, then mim test of the checkpoint. The set's
    annotations have no ``area`` (mmdet's CocoDataset and CocoMetric read it: training used to end in KeyError at the
    first evaluation): the config reads copies with the boxes' areas, and the user's files stay as they were."""
    import mmdet

    data = own_set(tmp_path / 'mine', num_train=16, num_val=8, seed=3)
    files = [data / 'annotations' / f'{split}.json' for split in ('train', 'val')]
    for path in files:
        ann = json.loads(path.read_text())
        ann['annotations'] = [{k: v for k, v in a.items() if k != 'area'} for a in ann['annotations']]
        path.write_text(json.dumps(ann))
    before = [digest(path) for path in files]
    out = tmp_path / 'mine.py'
    assert (
        main(
            [
                str(files[0]),
                '--train-images',
                str(data / 'train'),
                '--val-ann',
                str(files[1]),
                '--val-images',
                str(data / 'val'),
                '--base',
                'deformable-detr_pit-ti_synthetic_cpu',
                '--epochs',
                '1',
                '--out',
                str(out),
            ]
        )
        == 0
    )
    assert 'annotations have no "area"; the config reads a copy' in capsys.readouterr().out
    assert [digest(path) for path in files] == before
    cfg = Config.fromfile(str(out))
    assert cfg.train_dataloader.dataset.ann_file == str(tmp_path / 'mine_train.json')
    assert cfg.val_evaluator.ann_file == cfg.val_dataloader.dataset.ann_file == str(tmp_path / 'mine_val.json')
    copy = json.loads((tmp_path / 'mine_train.json').read_text())['annotations'][0]
    assert copy['area'] == copy['bbox'][2] * copy['bbox'][3]
    tools = Path(mmdet.__file__).parent / '.mim' / 'tools'  # what `mim train/test mmdet` run
    work = tmp_path / 'work'
    train = subprocess.run(
        [sys.executable, str(tools / 'train.py'), str(out), '--work-dir', str(work)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert 'coco/bbox_mAP' in train.stdout + train.stderr
    test = subprocess.run(
        [sys.executable, str(tools / 'test.py'), str(out), str(work / 'epoch_1.pth'), '--work-dir', str(work)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert test.returncode == 0 and 'coco/bbox_mAP' in test.stdout + test.stderr, test.stderr[-3000:]


def test_read_coco_accepts_ids_from_zero_with_gaps_and_keeps_the_file_order(tmp_path):
    data = own_set(tmp_path / 'mine')
    coco = read_coco(data / 'annotations' / 'train.json')
    assert coco.classes == ['red box', 'grüne Scheibe', 'triangle']
    assert [c['id'] for c in coco.data['categories']] == [0, 5, 9]


# Names and folders built to break out of a string literal, or to be rewritten by mmengine before Python parses the
# config ({{$ENV:default}}, {{ _base_.x }}, {{ fileDirname }}): the red team's three names first.
HOSTILE = [
    '{{$X:.*\\}}',
    ",__import__('os').system('touch PWNED'),",
    ')#',
    "'''",
    '"""\nimport os',
    "a\nimport os; os.system('touch PWNED')  #",
    'a\r__import__("os").system("touch PWNED")',
    'ends in \\',
    '{{ _base_.model }}',
    '{{ fileDirname }}',
    '}}',
    'nul\x00byte',
    'tab\tand\x0bvt',
    'ünï ✓ \u2028 \U0001f600',
]
HOSTILE_FOLDER = "d{{$HOME:x}}'\"\n),__import__('os').system('touch PWNED')#\\"


def test_no_name_or_folder_runs_code_through_the_written_config(tmp_path, monkeypatch, capsys):
    """Category names, image and annotation folders, the config's folder and the checkpoint path that each hold a
    way out of a literal: loading the config (what mim train, mim test and every tool do) runs nothing, and every
    string reads back as it is in the file."""
    import shutil

    import torch

    monkeypatch.chdir(tmp_path)  # where `touch PWNED` would write
    monkeypatch.setenv('X', 'replaced')  # were {{$X:...}} substituted, the name would read back changed
    monkeypatch.setenv('HOME', 'replaced')
    data = own_set(tmp_path / 'mine')
    folder = tmp_path / HOSTILE_FOLDER
    shutil.copytree(data / 'train', folder / 'images')
    ann = json.loads((data / 'annotations' / 'train.json').read_text())
    ann['categories'] = [dict(c, name=HOSTILE[i]) for i, c in enumerate(ann['categories'])] + [
        dict(id=100 + i, name=name) for i, name in enumerate(HOSTILE[3:])
    ]
    train = folder / 'train.json'
    train.write_text(json.dumps(ann))
    checkpoint = folder / 'detector.pth'
    torch.save({'state_dict': {'backbone.w': torch.zeros(2), 'bbox_head.w': torch.zeros(2)}}, checkpoint)
    before = digest(train)
    out = folder / 'cfg' / 'mine.py'
    assert (
        main(
            [
                str(train),
                '--train-images',
                str(folder / 'images'),
                '--val-split',
                '0.25',
                '--load-from',
                str(checkpoint),
                '--out',
                str(out),
            ]
        )
        == 0
    ), capsys.readouterr().err
    text = out.read_text()
    assert '{{' not in text and '}}' not in text and '\r' not in text
    cfg = Config.fromfile(str(out))
    assert not list(tmp_path.rglob('PWNED'))
    assert list(cfg.train_dataloader.dataset.metainfo.classes) == [c['name'] for c in ann['categories']]
    assert cfg.model.bbox_head.num_classes == len(ann['categories'])
    assert cfg.train_dataloader.dataset.data_prefix.img == str(folder / 'images') + '/'
    assert cfg.train_dataloader.dataset.ann_file == str(folder / 'cfg' / 'mine_train.json')
    assert cfg.load_from == str(checkpoint)
    assert digest(train) == before
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    register_all_modules()
    dataset = DATASETS.build(dict(cfg.train_dataloader.dataset, pipeline=[]))  # mmdet reads the folder and file
    assert list(dataset.metainfo['classes']) == list(cfg.train_dataloader.dataset.metainfo.classes)
    assert len(dataset) == 6 and Path(dataset[0]['img_path']).is_file()


@pytest.mark.parametrize(
    'change,fact',
    [
        (lambda a: a['categories'][0].update(name='\ud800'), 'its name is not valid Unicode'),
        (lambda a: a['images'][0].update(file_name='\udcff.png'), 'its file_name is empty or not valid Unicode'),
        (lambda a: a['images'][0].pop('width'), 'an image needs its "width" and "height"'),
        (lambda a: a['annotations'][0].pop('id'), 'an annotation needs an integer "id" of its own'),
        (lambda a: a['annotations'][1].update(id=a['annotations'][0]['id']), 'an annotation needs an integer "id"'),
        (lambda a: a['annotations'][0].update(area='big'), '"area" must be a finite number'),
    ],
)
def test_what_mmdet_reads_is_checked_when_the_config_is_written(tmp_path, capsys, change, fact):
    data = own_set(tmp_path / 'mine')
    ann = json.loads((data / 'annotations' / 'train.json').read_text())
    change(ann)
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(ann))  # ASCII: lone surrogates as JSON escapes, as a labelling tool writes them
    before = digest(bad)
    assert (
        main([str(bad), '--train-images', str(data / 'train'), '--val-split', '0.25', '--out', str(tmp_path / 'x.py')])
        == 1
    )
    err = capsys.readouterr().err
    assert str(bad) in err and fact in err and 'Traceback' not in err and not (tmp_path / 'x.py').exists()
    assert digest(bad) == before and not list(tmp_path.glob('x_*.json'))


def test_a_load_from_or_base_that_cannot_work_stops_when_the_config_is_written(tmp_path, capsys):
    import torch

    data = own_set(tmp_path / 'mine')
    train = data / 'annotations' / 'train.json'
    (tmp_path / 'broken.py').write_text('model = dict(\n')
    (tmp_path / 'binary.py').write_bytes(bytes(range(256)) * 4)
    torch.save({'state_dict': {'backbone.w': torch.zeros(2)}}, tmp_path / 'weights.pth')
    cases = [
        (['--load-from', str(train)], f'checkpoint {train} is not a readable PyTorch file'),
        (['--load-from', str(tmp_path / 'binary.py')], 'is not a readable PyTorch file'),
        (['--base', str(tmp_path / 'weights.pth')], 'give a config (.py, or a config name'),
        (['--base', str(tmp_path / 'broken.py')], 'is not a config mmengine can read (SyntaxError'),
        (['--base', str(tmp_path / 'binary.py')], 'is not a config mmengine can read'),
    ]
    for extra, fact in cases:
        assert (
            main(
                [
                    str(train),
                    '--train-images',
                    str(data / 'train'),
                    '--val-split',
                    '0.25',
                    '--out',
                    str(tmp_path / 'x.py'),
                    *extra,
                ]
            )
            == 1
        ), extra
        err = capsys.readouterr().err
        assert fact in err and 'Traceback' not in err, err
        assert not (tmp_path / 'x.py').exists() and not list(tmp_path.glob('x_*.json'))  # nothing written
