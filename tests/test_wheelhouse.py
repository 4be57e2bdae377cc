"""The air-gapped install: a wheelhouse built here installs with no index reachable, a missing wheel is named with
the command that fetches it, and the setup's requirement list and CUDA choices."""

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = f'{sys.version_info.major}.{sys.version_info.minor}'


def load_script(root, name):
    if str(root / 'scripts') not in sys.path:  # as when run: a script imports the facts of the setup's others
        sys.path.insert(0, str(root / 'scripts'))
    spec = importlib.util.spec_from_file_location(name, root / 'scripts' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def closure(names: list[str]) -> set[str]:
    """The installed distributions ``names`` need, with themselves (markers evaluated here, extras followed)."""
    seen, stack = set(), [(n, ()) for n in names]
    while stack:
        name, extras = stack.pop()
        name = canonicalize_name(name)
        if (name, extras) in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen.add((name, extras))
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({'extra': e}) for e in ('', *extras)):
                stack.append((req.name, tuple(sorted(req.extras))))
    return {name for name, _ in seen}


def environment_with_torch_only(folder: Path) -> Path:
    """A fresh virtual environment that sees this environment's torch and torchvision (and what they need) and
    nothing else, as a GPU node's Python sees its own torch: a folder of links to their files, on its path."""
    subprocess.run([sys.executable, '-m', 'venv', str(folder / 'venv')], check=True)  # pip from ensurepip: local
    python = folder / 'venv' / 'bin' / 'python'
    links = folder / 'torch_site'
    links.mkdir()
    site = Path(importlib.util.find_spec('torch').origin).parents[1]
    for name in closure(['torch', 'torchvision']) - {'setuptools', 'pip'}:  # the new environment has its own
        for file in importlib.metadata.distribution(name).files or []:
            top = file.parts[0]
            if top != '..' and (site / top).exists() and not (links / top).exists():
                (links / top).symlink_to(site / top)
    (folder / 'venv' / 'lib' / f'python{HERE}' / 'site-packages' / 'torch_only.pth').write_text(f'{links}\n')
    return python


def offline_env(**extra) -> dict:
    """No index reachable: pip's configuration and index variables gone, the network through a closed port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('PIP_') and k not in ('PIT_DET_WHEELHOUSE',)}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        https_proxy='http://127.0.0.1:9',
        http_proxy='http://127.0.0.1:9',
        HTTPS_PROXY='http://127.0.0.1:9',
        HTTP_PROXY='http://127.0.0.1:9',
        **extra,
    )
    env.pop('VIRTUAL_ENV', None)
    return env


@pytest.fixture(scope='module')
def wheelhouse(root, tmp_path_factory):
    """A wheelhouse for this Python, without extras (built from the index, or pip's cache), in a folder whose name
    has a space; beside it a folder named as the name's first word, holding a wheel the setup must never see."""
    parent = tmp_path_factory.mktemp('wheelhouse')
    folder = parent / 'wheel house'
    (parent / 'wheel').mkdir()
    load_script(root, 'wheelhouse').write_placeholder(parent / 'wheel', 'wheel', '99.0', [])
    run = subprocess.run(
        ['bash', str(root / 'scripts' / 'wheelhouse.sh'), str(folder), '--extras', 'none'],
        capture_output=True,
        text=True,
        env=dict(os.environ, PIT_DET_PYTHON=sys.executable),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'MiB in' in run.stdout
    return folder


@pytest.mark.slow
def test_wheelhouse_installs_with_no_index_and_names_a_missing_wheel(root, wheelhouse, tmp_path):
    manifest = (wheelhouse / 'wheelhouse.txt').read_text()
    names = {line.split()[0] for line in manifest.splitlines() if line and not line.startswith('#')}
    assert {'mmengine', 'mmdet', 'pycocotools', 'openmim', 'pit-det', 'mmcv', 'setuptools', 'ninja'} <= names
    assert not names & {'torch', 'torchvision', 'triton', 'sympy'}  # the target's torch and what it needs
    assert (wheelhouse / 'mmcv-2.1.0.tar.gz').is_file() and list(wheelhouse.glob('pit_det-0.1.0-*.whl'))
    python = environment_with_torch_only(tmp_path)
    probe = 'import torch; import importlib.util as u; print(u.find_spec("mmdet") is None, u.find_spec("mmcv") is None)'
    assert subprocess.run(
        [str(python), '-c', probe], capture_output=True, text=True, env=offline_env()
    ).stdout.split() == ['True', 'True']

    # one wheel missing: named, with the command that fetches it, before anything is installed
    broken = tmp_path / 'broken'
    shutil.copytree(wheelhouse, broken, copy_function=os.link)
    addict = next(broken.glob('addict-*.whl'))
    addict.unlink()
    run = subprocess.run(
        ['bash', str(root / 'scripts' / 'setup.sh'), '--offline', str(broken)],
        capture_output=True,
        text=True,
        env=offline_env(PIT_DET_PYTHON=str(python)),
    )
    assert run.returncode == 1
    assert f'the wheelhouse lacks {addict.name}' in run.stderr and 'pip download --no-deps' in run.stderr
    assert subprocess.run([str(python), '-c', 'import mmengine'], capture_output=True, env=offline_env()).returncode

    run = subprocess.run(
        ['bash', str(root / 'scripts' / 'setup.sh'), '--offline', str(wheelhouse)],
        capture_output=True,
        text=True,
        env=offline_env(PIT_DET_PYTHON=str(python)),
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert 'setup done' in run.stdout and 'extras: none' in run.stdout
    check = subprocess.run(
        [
            str(python),
            '-c',
            'import pit_det, mmdet, mmcv.ops, torch; '
            'from mmcv.ops import MultiScaleDeformableAttention; '
            'print(pit_det.__file__, torch.__file__)',
        ],
        capture_output=True,
        text=True,
        env=offline_env(),
    )
    assert check.returncode == 0, check.stderr[-2000:]
    own, torch_file = check.stdout.split()
    assert Path(own).is_relative_to(root) and 'torch_site' in torch_file  # the checkout's, the kept torch
    # only the folder given: not '.../wheel' and 'house', the words of its name (PIP_FIND_LINKS split on spaces)
    assert 'wheel-99.0' not in run.stdout + run.stderr
    version = subprocess.run(
        [str(python), '-c', 'import importlib.metadata as m; print(m.version("wheel"))'],
        capture_output=True,
        text=True,
        env=offline_env(),
    )
    assert (
        version.stdout.strip() != '99.0' and (wheelhouse / f'wheel-{version.stdout.strip()}-py3-none-any.whl').is_file()
    )


def test_check_names_the_python_a_wheelhouse_is_for(root, tmp_path):
    wheelhouse = load_script(root, 'wheelhouse')
    (tmp_path / 'wheelhouse.txt').write_text('# python 3.99\n# extras none\naddict addict-2.4.0-py3-none-any.whl\n')
    assert wheelhouse.check(tmp_path) == [
        f'{tmp_path} holds wheels for CPython 3.99, this environment runs '
        f'{HERE}: build one with scripts/wheelhouse.sh DIR --python {HERE}'
    ]
    (tmp_path / 'wheelhouse.txt').write_text(
        f'# python {HERE}\n# extras none\nscipy provided-by-target\n'
        'not-installed-anywhere provided-by-target\n'
        'pyyaml PyYAML-6.0.4-cp312-cp312-manylinux2014_x86_64.whl\n'
    )
    problems = wheelhouse.check(tmp_path)
    assert len(problems) == 2
    assert 'not-installed-anywhere was left out of the wheelhouse (--skip) and is not installed here' in problems[0]
    assert problems[1].endswith(
        f'--python-version {HERE} --implementation cp --abi cp312 --platform '
        f'manylinux2014_x86_64 -d {tmp_path} PyYAML==6.0.4'
    )
    assert 'holds no wheelhouse.txt' in wheelhouse.check(tmp_path / 'nothing')[0]
    import shlex  # the fetch command pastes into a shell: a folder with a space stays one argument

    spaced = tmp_path / 'wheel house'
    spaced.mkdir()
    (spaced / 'wheelhouse.txt').write_text((tmp_path / 'wheelhouse.txt').read_text())
    command = shlex.split(wheelhouse.check(spaced)[-1].split('fetch it with: ', 1)[1])
    assert command[command.index('-d') + 1] == str(spaced) and command[-1] == 'PyYAML==6.0.4'


def test_check_refuses_damaged_wheels_and_a_manifest_that_is_not_text(root, tmp_path):
    """Wheels of random bytes were called complete, and pip failed later, halfway through the install."""
    wheelhouse = load_script(root, 'wheelhouse')
    good = wheelhouse.write_placeholder(tmp_path, 'addict', '2.4.0', [])
    bad = tmp_path / 'pyyaml-6.0.4-py3-none-any.whl'
    bad.write_bytes(os.urandom(4096))
    (tmp_path / 'wheelhouse.txt').write_text(f'# python {HERE}\n# extras none\naddict {good.name}\npyyaml {bad.name}\n')
    problems = wheelhouse.check(tmp_path)
    assert len(problems) == 1 and problems[0].startswith(f'{bad} is damaged (not a readable zip archive')
    assert f'-d {tmp_path} pyyaml==6.0.4' in problems[0]
    good.write_bytes(good.read_bytes()[:-30])  # truncated
    assert len(wheelhouse.check(tmp_path)) == 2
    (tmp_path / 'wheelhouse.txt').write_bytes(b'# python \xff\xfe\n')
    run = subprocess.run(
        [sys.executable, str(root / 'scripts' / 'wheelhouse.py'), 'check', str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1 and 'Traceback' not in run.stderr, run.stderr
    assert 'wheelhouse.txt is not a text file (not UTF-8)' in run.stderr


def test_wheelhouse_refuses_a_folder_with_files(root, tmp_path):
    (tmp_path / 'keep.txt').write_text('mine')
    run = subprocess.run(
        [sys.executable, str(root / 'scripts' / 'wheelhouse.py'), str(tmp_path)], capture_output=True, text=True
    )
    assert run.returncode == 2 and 'is not an empty folder' in run.stderr
    assert [p.name for p in tmp_path.iterdir()] == ['keep.txt']
    run = subprocess.run(
        [sys.executable, str(root / 'scripts' / 'wheelhouse.py'), str(tmp_path / 'new'), '--extras', 'gpu'],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and 'choose from test, eval, export, peers or none' in run.stderr
    assert not (tmp_path / 'new').exists()


def test_setup_rejects_a_folder_that_is_no_wheelhouse(root, tmp_path):
    run = subprocess.run(
        ['bash', str(root / 'scripts' / 'setup.sh'), '--offline', str(tmp_path / 'absent')],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and 'is not a folder' in run.stderr
    run = subprocess.run(
        ['bash', str(root / 'scripts' / 'setup.sh'), '--offline', str(tmp_path)],
        capture_output=True,
        text=True,
        env=offline_env(PIT_DET_PYTHON=sys.executable),
    )
    assert run.returncode == 1 and 'it is not a pit-det wheelhouse' in run.stderr


def test_requirements_leave_out_what_the_setup_installs_apart(root, tmp_path):
    requirements = load_script(root, 'requirements')
    listed = requirements.requirements(['test'], ['torch', 'torchvision', 'mmcv'])
    names = [requirements.requirement_name(r) for r in listed]
    assert 'mmengine' in names and 'pytest' in names and 'mmdet' in names
    assert not {'torch', 'torchvision', 'mmcv', 'openvino'} & set(names)
    with pytest.raises(SystemExit, match='no extra gpu'):
        requirements.requirements(['gpu'], [])
    # the range a kept torch is checked against (scripts/setup.sh with PIT_DET_PYTHON) is pyproject.toml's
    import torch

    assert requirements.outside_range(['torch', 'torchvision']) == []
    narrow = tmp_path / 'pyproject.toml'
    narrow.write_text((root / 'pyproject.toml').read_text().replace('"torch>=2.6,', '"torch>=2.6,<2.7,'))
    here = torch.__version__.split('+')[0]
    (problem,) = requirements.outside_range(['torch'], narrow)
    assert problem.startswith(f'torch {here}: pit-det supports torch') and '<2.7' in problem


def test_a_placeholder_is_a_wheel_pip_reads_back(root, tmp_path):
    """A hyphenated name (opencv-python, --skip) must give a file name pip parses: name and version intact."""
    wheelhouse = load_script(root, 'wheelhouse')
    path = wheelhouse.write_placeholder(tmp_path, 'opencv-python', '4.14.0.94+wheelhouse', ['numpy>=1.26'])
    assert path.name == 'opencv_python-4.14.0.94+wheelhouse-py3-none-any.whl'
    assert wheelhouse.wheel_name_version(path) == ('opencv-python', '4.14.0.94+wheelhouse')
    run = subprocess.run(
        [
            sys.executable,
            '-m',
            'pip',
            'install',
            '--dry-run',
            '--no-index',
            '--no-deps',
            '--ignore-installed',
            '--report',
            '-',
            '-q',
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    import json

    metadata = json.loads(run.stdout)['install'][0]['metadata']
    assert (metadata['name'], metadata['version'], metadata['requires_dist']) == (
        'opencv-python',
        '4.14.0.94+wheelhouse',
        ['numpy>=1.26'],
    )
