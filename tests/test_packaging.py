"""pit-det from a pip install: the wheel carries the configs, tools and mim's model index; configs are found by name."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from pit_det.cli.dataset_config import main as dataset_config
from pit_det.cli.mmdet_tools import run_mmdet_tool
from pit_det.configs import ConfigNotFoundError, find_config
from pit_det.data import make_synthetic_coco


def metafile_models(root):
    index = yaml.safe_load((root / 'model-index.yml').read_text())
    return {m['Name']: m for path in index['Import'] for m in yaml.safe_load((root / path).read_text())['Models']}


def test_the_model_index_lists_every_config_once_and_no_result_without_our_weights(root):
    models = metafile_models(root)
    configs = sorted(
        p.relative_to(root).as_posix() for p in (root / 'configs').rglob('*.py') if '_base_' not in p.parts
    )
    assert sorted(m['Config'] for m in models.values()) == configs
    assert all(Path(m['Config']).stem == name for name, m in models.items())
    # mmdet's metafiles give Results beside released weights only: pit-det has trained none of its configs on COCO,
    # so the paper's AP (configs/README.md, labelled as the paper's) is nowhere in the index
    assert not [name for name, m in models.items() if 'Results' in m or 'Weights' in m]
    readme = (root / 'configs' / 'README.md').read_text()
    assert "paper's box AP" in readme and '| 39.4 | not trained yet |' in readme


def test_a_config_is_found_by_name_path_or_sub_folder(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any folder
    front = root / 'configs' / 'pit_s_deformable_detr.py'
    assert find_config('pit_s_deformable_detr') == front == find_config('pit_s_deformable_detr.py')
    assert find_config('configs/pit_s_deformable_detr.py') == front
    demo = root / 'configs' / 'demo' / 'deformable-detr_pit-ti_synthetic_cpu.py'
    assert (
        find_config('deformable-detr_pit-ti_synthetic_cpu')
        == demo
        == find_config('demo/deformable-detr_pit-ti_synthetic_cpu.py')
    )
    (tmp_path / 'pit_s_deformable_detr.py').write_text('x = 1\n')  # a file of the user's wins over our name
    assert find_config('pit_s_deformable_detr.py') == Path('pit_s_deformable_detr.py')
    with pytest.raises(ConfigNotFoundError, match='did you mean pit_s_deformable_detr'):
        find_config('pit_s_deformable')
    with pytest.raises(ConfigNotFoundError, match="pit-det's configs .*pit_s_deformable_detr"):
        find_config('mask_rcnn')
    with pytest.raises(ConfigNotFoundError):
        find_config('deformable-detr_halfres')  # _base_ is not a config to run
    for other in ('pit_s_deformable_detr.pth', 'pit_s_deformable_detr.txt'):  # resolved to the .py, silently
        with pytest.raises(ConfigNotFoundError, match=f'config {other}: no such file, and a config is a Python file'):
            find_config(other)


def test_commands_take_a_config_name_and_refuse_an_unknown_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_mmdet_tool('train', ['no_such_config']) == 1
    assert 'config no_such_config: no such file' in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        dataset_config(['train.json', '--train-images', '.', '--val-split', '0.2', '--base', 'nope', '--out', 'x.py'])
    assert stop.value.code == 2 and 'argument --base: config nope' in capsys.readouterr().err


def _run(cmd, cwd, env):
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f'{cmd}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}'
    return done.stdout + done.stderr


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_finds_its_configs_and_trains(root, tmp_path):
    """Build the wheel, install it into a fresh environment (its dependencies are this environment's: nothing to
    download), then from a folder outside the checkout: mim search, the dataset command, one epoch of mim train."""
    wheels = tmp_path / 'wheels'
    _run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', wheels, root],
        tmp_path,
        os.environ,
    )
    (wheel,) = wheels.glob('pit_det-*.whl')
    env_dir = tmp_path / 'env'
    subprocess.run([sys.executable, '-m', 'venv', env_dir], check=True)
    python = env_dir / 'bin' / 'python'
    purelib = subprocess.run(
        [python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # torch, mmcv, mmdet, mim ...: this environment's packages, after the fresh one's own (.pth files there are not
    # read, so this checkout's editable pit_det stays out)
    Path(purelib, 'dependencies.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    _run([python, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index', wheel], tmp_path, os.environ)

    work = tmp_path / 'elsewhere'
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    where = _run(
        [python, '-c', 'import pit_det.configs as c; print(c.__file__); print(c.find_config("pit_s_deformable_detr"))'],
        work,
        env,
    ).split()
    assert where[0].startswith(purelib) and where[1] == f'{purelib}/pit_det/.mim/configs/pit_s_deformable_detr.py'
    search = _run([python, '-m', 'mim', 'search', 'pit_det'], work, env)
    assert 'config id: pit_s_deformable_detr' in search and '39.4' not in search and '36.9' not in search

    data = make_synthetic_coco(work / 'mine', num_train=8, num_val=4, seed=5)
    printed = _run(
        [
            env_dir / 'bin' / 'pit-det-dataset-config',
            data / 'annotations' / 'train.json',
            '--train-images',
            data / 'train',
            '--val-ann',
            data / 'annotations' / 'val.json',
            '--val-images',
            data / 'val',
            '--base',
            'deformable-detr_pit-ti_synthetic_cpu',
            '--epochs',
            '1',
            '--out',
            'mine.py',
        ],
        work,
        env,
    )
    assert 'mim train mmdet mine.py' in printed
    assert f"_base_ = '{purelib}/pit_det/.mim/configs/demo/" in (work / 'mine.py').read_text()
    log = _run([python, '-m', 'mim', 'train', 'mmdet', 'mine.py', '--work-dir', 'work_dirs/mine'], work, env)
    assert 'coco/bbox_mAP' in log and (work / 'work_dirs' / 'mine' / 'epoch_1.pth').is_file()
