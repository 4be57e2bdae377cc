"""Build a wheelhouse: every wheel pit-det and its tools need beside torch, for a Python and platform of your choice.

Run where a package index is reachable, copy the folder to a machine without one, install there with
``scripts/setup.sh --offline DIR``::

    python scripts/wheelhouse.py DIR                       # this machine's Python and platform
    python scripts/wheelhouse.py DIR --python 3.12         # manylinux x86-64, CPython 3.12 (a typical GPU node)
    python scripts/wheelhouse.py DIR --extras test,eval,export

The folder holds the wheels, mmcv's source (it has no Linux wheel; the offline setup builds it for the node's torch
and GPUs), pit-det's own wheel and ``wheelhouse.txt``, the pinned list the offline setup checks before installing.

torch, torchvision and what only they need (nvidia-*, triton, sympy, ...) are left out: the target keeps its own
torch. The resolver is told so by placeholder wheels for torch and torchvision without requirements, which never
enter the folder. mmcv takes part in the resolution the same way, with the requirements of its source.

This script is standalone (stdlib plus pip) because it runs before ``pit_det`` is installable.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from pathlib import Path

# the setup's other scripts, beside this one (on sys.path as a script's folder is): each fact defined once
from build_mmcv import MMCV_VERSION
from requirements import canonical, optional_dependencies

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = 'wheelhouse.txt'
PROVIDED = 'provided-by-target'
# Stand-ins for packages the target environment brings: version high enough for every pin of pit-det and its
# dependencies, a local label that no index carries, no requirements.
PLACEHOLDERS = {'torch': '2.14.1+wheelhouse', 'torchvision': '0.29.1+wheelhouse'}
# Built on the target itself; they must be in every wheelhouse, whatever pip already holds there.
BUILD_TOOLS = ['setuptools<81', 'wheel', 'ninja']
# Installed without its own requirements (they downgrade torch); the ones mim uses are pit-det's (setup.sh).
ALONE = ['openmim==0.3.9']
# pip accepts an exact manylinux tag only: these cover glibc >= 2.17 nodes, newest first.
MANYLINUX = [
    'manylinux_2_39',
    'manylinux_2_35',
    'manylinux_2_34',
    'manylinux_2_31',
    'manylinux_2_28',
    'manylinux_2_27',
    'manylinux_2_24',
    'manylinux_2_17',
    'manylinux2014',
    'manylinux1',
]


class WheelhouseError(RuntimeError):
    """A wheelhouse cannot be built as asked; the message says what to do."""


def platforms(arch: str) -> list[str]:
    return [f'{tag}_{arch}' for tag in MANYLINUX]


def write_placeholder(folder: Path, name: str, version: str, requires: list[str] = ()) -> Path:
    """A wheel that holds nothing but metadata: the resolver sees ``name`` installed with these requirements."""
    stem = re.sub(r'[-_.]+', '_', name)  # a wheel's file and folder names spell the name with underscores
    dist = f'{stem}-{version}.dist-info'
    metadata = ''.join(
        [
            'Metadata-Version: 2.1\n',
            f'Name: {name}\n',
            f'Version: {version}\n',
            *(f'Requires-Dist: {r}\n' for r in requires),
        ]
    )
    wheel = 'Wheel-Version: 1.0\nGenerator: pit-det wheelhouse\nRoot-Is-Purelib: true\nTag: py3-none-any\n'
    path = folder / f'{stem}-{version}-py3-none-any.whl'
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr(f'{dist}/METADATA', metadata)
        zf.writestr(f'{dist}/WHEEL', wheel)
        zf.writestr(f'{dist}/RECORD', f'{dist}/METADATA,,\n{dist}/WHEEL,,\n{dist}/RECORD,,\n')
    return path


def mmcv_requirements(sdist: Path) -> list[str]:
    """mmcv's runtime requirements as its ``setup.py`` writes them into a wheel built without OpenCV present."""
    with tarfile.open(sdist) as tar:
        member = tar.extractfile(f'mmcv-{MMCV_VERSION}/requirements/runtime.txt')
        lines = member.read().decode().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith('#')] + ['opencv-python>=3']


def wheel_name_version(path: Path) -> tuple[str, str]:
    name, version = path.name.split('-')[:2]
    return canonical(name), version


def manifest_lines(folder: Path) -> list[str]:
    """The lines of a wheelhouse's ``wheelhouse.txt``."""
    try:
        return (folder / MANIFEST).read_text(encoding='utf-8').splitlines()
    except UnicodeDecodeError:
        raise WheelhouseError(
            f'{folder / MANIFEST} is not a text file (not UTF-8): it is not what '
            'scripts/wheelhouse.sh writes; rebuild the wheelhouse with it'
        ) from None


def read_manifest(folder: Path) -> dict[str, str]:
    """``{canonical name: file name}`` from a wheelhouse's ``wheelhouse.txt``."""
    entries = {}
    for line in manifest_lines(folder):
        if line and not line.startswith('#'):
            name, _, file = line.partition(' ')
            entries[name] = file.strip()
    return entries


def manifest_setting(folder: Path, key: str) -> str:
    """A ``# key value`` header line of ``wheelhouse.txt``."""
    for line in manifest_lines(folder):
        if line.startswith(f'# {key} '):
            return line.split(' ', 2)[2].strip()
    raise WheelhouseError(f'{folder / MANIFEST} has no "# {key}" line: rebuild it with scripts/wheelhouse.sh')


def fetch_command(folder: Path, file: str) -> str:
    """The command that puts ``file`` (a wheel for the wheelhouse's target, or mmcv's source) into ``folder``,
    shell-quoted for pasting."""
    if file.endswith('.tar.gz'):
        return f'python -m pip download --no-deps --no-binary :all: -d {shlex.quote(str(folder))} mmcv=={MMCV_VERSION}'
    name, version, *_, abi, platform = file[: -len('.whl')].split('-')
    python = manifest_setting(folder, 'python')
    return (
        f'python -m pip download --no-deps --only-binary=:all: --python-version {python} --implementation cp '
        f'--abi {abi} --platform {platform.split(".")[0]} -d {shlex.quote(str(folder))} {name}=={version}'
    )


def check(folder: Path) -> list[str]:
    """What stops an offline install from ``folder`` into this interpreter's environment, one line each."""
    import importlib.metadata

    if not (folder / MANIFEST).is_file():
        return [
            f'{folder} holds no {MANIFEST}: it is not a pit-det wheelhouse. Build one where an index is '
            f'reachable: scripts/wheelhouse.sh DIR --python {sys.version_info.major}.{sys.version_info.minor}'
        ]
    python, here = manifest_setting(folder, 'python'), f'{sys.version_info.major}.{sys.version_info.minor}'
    if python != here:
        return [
            f'{folder} holds wheels for CPython {python}, this environment runs {here}: build one with '
            f'scripts/wheelhouse.sh DIR --python {here}'
        ]
    problems = []
    for name, file in read_manifest(folder).items():
        if file == PROVIDED:
            try:
                importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                problems.append(
                    f'{name} was left out of the wheelhouse (--skip) and is not installed here: build '
                    f'the wheelhouse without skipping it, or install {name} into {sys.prefix}'
                )
        elif not (folder / file).is_file():
            problems.append(
                f'the wheelhouse lacks {file}; where an index is reachable, fetch it with: '
                f'{fetch_command(folder, file)}'
            )
        elif not readable_archive(folder / file):
            problems.append(
                f'{folder / file} is damaged (not a readable {"tar" if file.endswith(".tar.gz") else "zip"} '
                'archive, or a member fails its checksum); delete it and, where an index is reachable, '
                f'fetch it again with: {fetch_command(folder, file)}'
            )
    return problems


def readable_archive(path: Path) -> bool:
    """Whether ``path`` reads whole as what its name says: a wheel whose every member passes its CRC and which holds
    its ``.dist-info/METADATA``, or a ``.tar.gz`` source archive."""
    try:
        if path.name.endswith('.tar.gz'):
            with tarfile.open(path) as tar:
                return bool(tar.getmembers())
        with zipfile.ZipFile(path) as wheel:
            return wheel.testzip() is None and any(n.endswith('.dist-info/METADATA') for n in wheel.namelist())
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile):
        return False


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 2**20


def build(dest: Path, python: str, arch: str, extras: list[str], skip: list[str], pip: list[str]) -> list[Path]:
    """Fill ``dest``; returns the files in it.

    A package in ``skip`` joins the placeholders at the version a first resolution chose, so that what only it
    needs (matplotlib's fonttools, say) stays out too.
    """
    target = [
        '--only-binary=:all:',
        '--implementation',
        'cp',
        '--python-version',
        python,
        '--abi',
        f'cp{python.replace(".", "")}',
        '--abi',
        'abi3',
        '--abi',
        'none',
    ]
    for platform in platforms(arch) + ['any']:
        target += ['--platform', platform]
    with tempfile.TemporaryDirectory(prefix='pit-det-wheelhouse-') as tmp:
        tmp = Path(tmp)
        print(f'== mmcv {MMCV_VERSION} source', flush=True)
        # pip reads the source's metadata by running its setup.py, which imports pkg_resources: in an isolated
        # environment whose setuptools is held below 81 (this interpreter's own may be newer, or absent)
        build_limits = tmp / 'build-constraints.txt'
        build_limits.write_text('setuptools<81\n')
        subprocess.run(
            pip + ['download', '-q', '--no-deps', '--no-binary', ':all:', '-d', str(dest), f'mmcv=={MMCV_VERSION}'],
            check=True,
            env=dict(os.environ, PIP_CONSTRAINT=str(build_limits)),
        )
        sdist = dest / f'mmcv-{MMCV_VERSION}.tar.gz'
        print('== pit-det wheel', flush=True)
        subprocess.run(pip + ['wheel', '-q', '--no-deps', '-w', str(tmp / 'own'), str(ROOT)], check=True)
        own = next((tmp / 'own').glob('pit_det-*.whl'))
        requirement = f'{own}[{",".join(extras)}]' if extras else str(own)
        placeholders = {**PLACEHOLDERS, 'mmcv': f'{MMCV_VERSION}+wheelhouse'}
        print(
            f'== wheels for CPython {python} on manylinux {arch}'
            + (f' with the extras {", ".join(extras)}' if extras else ''),
            flush=True,
        )

        def resolve(into: Path) -> dict[str, Path]:
            """Download the resolution with the current placeholders into ``into``: {name: file}."""
            stubs = tmp / f'placeholders-{into.name}'
            stubs.mkdir()
            for name, version in placeholders.items():
                write_placeholder(stubs, name, version, mmcv_requirements(sdist) if name == 'mmcv' else [])
            constraints = stubs / 'constraints.txt'
            constraints.write_text(''.join(f'{n}=={v}\n' for n, v in placeholders.items()))
            env = dict(os.environ, PIP_CONSTRAINT=str(constraints))  # in place of a global constraint file
            subprocess.run(
                pip
                + ['download', '-q', '--find-links', str(stubs), '-d', str(into), *target, requirement, *BUILD_TOOLS],
                check=True,
                env=env,
            )
            subprocess.run(pip + ['download', '-q', '--no-deps', '-d', str(into), *target, *ALONE], check=True, env=env)
            found = {wheel_name_version(p)[0]: p for p in into.glob('*.whl')}
            return {n: p for n, p in found.items() if n not in placeholders}

        wheels = resolve(tmp / 'first')
        unknown = sorted(set(skip) - set(wheels))
        if unknown:
            raise WheelhouseError(f'--skip {",".join(unknown)}: not among the packages this wheelhouse would hold')
        if skip:
            placeholders.update({n: wheel_name_version(wheels[n])[1] + '+wheelhouse' for n in skip})
            wheels = resolve(tmp / 'second')
        for path in wheels.values():
            shutil.copy2(path, dest / path.name)
        shutil.copy2(own, dest / own.name)
    entries = {wheel_name_version(p)[0]: p.name for p in sorted(dest.glob('*.whl'))}
    entries.update({'mmcv': sdist.name, **{n: PROVIDED for n in skip}})
    lines = [
        f'# pit-det wheelhouse for CPython {python}, manylinux {arch}',
        f'# python {python}',
        f'# extras {",".join(extras) or "none"}',
        f'# one line per package: name, then its file, or "{PROVIDED}" where the target must have it installed',
        '# the target brings torch and torchvision; scripts/setup.sh --offline DIR checks this list',
    ]
    lines += [f'{name} {entries[name]}' for name in sorted(entries)]
    (dest / MANIFEST).write_text('\n'.join(lines) + '\n')
    return sorted(p for p in dest.iterdir() if p.is_file())


def check_main(argv: list[str]) -> int:
    """``wheelhouse.py check DIR``: what scripts/setup.sh --offline runs before it installs anything."""
    parser = argparse.ArgumentParser(prog='wheelhouse.py check', description=check_main.__doc__)
    parser.add_argument('dir', type=Path)
    parser.add_argument('--extras', default=None, help='the extras to install: each must be in the wheelhouse')
    parser.add_argument('--print-extras', action='store_true', help="print the wheelhouse's extras and stop")
    args = parser.parse_args(argv)
    folder = args.dir
    try:
        problems = check(folder)
        if not problems:
            held = manifest_setting(folder, 'extras')
            if args.print_extras:
                print(held)
                return 0
            asked = [e for e in (args.extras or '').split(',') if e.strip() and e.strip() != 'none']
            lacking = [e for e in asked if e not in held.split(',')]
            if lacking:
                problems.append(
                    f'--extras {args.extras}: the wheelhouse holds the extras {held}, not '
                    f'{",".join(lacking)}; build one with scripts/wheelhouse.sh DIR --python '
                    f'{manifest_setting(folder, "python")} --extras {args.extras}'
                )
    except WheelhouseError as exc:
        problems = [str(exc)]
    for problem in problems:
        print(f'ERROR: {problem}', file=sys.stderr)
    if not problems:
        print(
            f'wheelhouse {folder}: {len(read_manifest(folder))} packages for CPython '
            f'{manifest_setting(folder, "python")}, extras {manifest_setting(folder, "extras")}: complete'
        )
    return 1 if problems else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog='python scripts/wheelhouse.py check DIR: check a wheelhouse for this '
        'interpreter (what setup.sh --offline does first)',
    )
    parser.add_argument('dir', type=Path, help='the folder to fill (new or empty)')
    here = f'{sys.version_info.major}.{sys.version_info.minor}'
    parser.add_argument('--python', default=here, help=f'target CPython, e.g. 3.12 (default: {here}, this one)')
    arch = sysconfig.get_platform().rsplit('-', 1)[-1]
    parser.add_argument(
        '--platform',
        default=arch,
        choices=['x86_64', 'aarch64'],
        help=f'target manylinux architecture (default: {arch})',
    )
    parser.add_argument(
        '--extras',
        default='test',
        help="pit-det's extras, comma-separated: test, eval, export, peers, or none (default: test, which "
        'the GPU check needs)',
    )
    parser.add_argument(
        '--skip',
        default='',
        help='packages the target already has, comma-separated (e.g. scipy,matplotlib): left out '
        'of the folder; the offline setup checks that the target has them',
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['check']:
        return check_main(argv[1:])
    args = parse_args(argv)
    if not re.fullmatch(r'3\.\d{1,2}', args.python):
        print(f'error: --python {args.python}: give a CPython version such as 3.12', file=sys.stderr)
        return 2
    extras = [] if args.extras.strip().lower() in ('', 'none') else [e.strip() for e in args.extras.split(',')]
    known = tuple(optional_dependencies())
    if any(e not in known for e in extras):
        print(f'error: --extras {args.extras}: choose from {", ".join(known)} or none', file=sys.stderr)
        return 2
    skip = [canonical(n) for n in args.skip.split(',') if n.strip()]
    if args.dir.exists() and (not args.dir.is_dir() or any(args.dir.iterdir())):
        print(
            f'error: {args.dir} exists and is not an empty folder: give a new folder, so no wheel of another '
            'build mixes in',
            file=sys.stderr,
        )
        return 2
    created = not args.dir.exists()
    args.dir.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check']
    try:
        files = build(args.dir.resolve(), args.python, args.platform, extras, skip, pip)
    except (subprocess.CalledProcessError, WheelhouseError) as exc:
        # a half-filled folder would pass for a wheelhouse: it was empty, it is emptied again
        for path in args.dir.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if created:
            args.dir.rmdir()
        hint = (
            ''
            if isinstance(exc, WheelhouseError)
            else ": see pip's message above; check that an index is reachable (pip config list)"
        )
        print(f'error: {exc}{hint}', file=sys.stderr)
        return 1
    sizes = sorted(((p.stat().st_size / 2**20, p.name) for p in files), reverse=True)
    print(
        f'{len(files)} files, {folder_mib(args.dir):.1f} MiB in {args.dir}; largest: '
        + ', '.join(f'{name} {mib:.1f} MiB' for mib, name in sizes[:4])
    )
    print(f'copy it to the target, then there: PIT_DET_PYTHON=python3 scripts/setup.sh --offline {args.dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
