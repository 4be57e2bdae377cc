"""Build mmcv from its PyPI source with compiled ops for the installed torch, cache the wheel, verify it.

Run with the interpreter of the target environment (torch must already be installed there)::

    python scripts/build_mmcv.py build     # build the wheel into the cache (nothing when it is there); print it
    python scripts/build_mmcv.py install   # build (or reuse the cached wheel) and install it
    python scripts/build_mmcv.py verify    # import mmcv._ext and MultiScaleDeformableAttention

The source comes from the index, or from a wheelhouse when pip is told so (``PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR``,
what ``scripts/setup.sh --offline DIR`` sets).

Environment:
    PIT_DET_CUDA_OPS: ``auto`` (default: CUDA ops when nvcc and a GPU are present), ``1`` (force, e.g. to build CUDA
        ops on a machine without a GPU) or ``0`` (CPU ops only).
    TORCH_CUDA_ARCH_LIST: honoured for CUDA builds; part of the cache key. Defaults to the capabilities of the
        visible GPUs (:func:`cuda_arch_list`).
    PIT_DET_MMCV_UNITY: ``1`` (default) compiles mmcv's C++ ops as a unity build: a few generated translation
        units that each include a group of mmcv's source files, so torch's headers are parsed a few times instead
        of once per file (77 files for the CPU ops). ``0`` builds file by file, as mmcv's setup.py does. CUDA
        ``.cu`` files are compiled file by file either way. Part of the cache key.
    PIT_DET_CACHE: cache root (default ``${XDG_CACHE_HOME:-~/.cache}/pit-det``).
    MAX_JOBS: parallel compile jobs (default: the CPUs this process may run on, :func:`compile_jobs`).

This script is standalone (stdlib plus the target's torch) because it runs before ``pit_det`` is installable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path

MMCV_VERSION = '2.1.0'
# The functions mmcv._ext exports, recorded from a file-by-file build (mmcv 2.1.0, torch 2.14.1, CPU ops).
EXT_FUNCTIONS = Path(__file__).with_name(f'mmcv-{MMCV_VERSION}_ext_functions.txt')

_STD_BY_CPLUSPLUS = {'202302': 'c++23', '202002': 'c++20', '201703': 'c++17', '201402': 'c++14'}


class BuildError(RuntimeError):
    """The mmcv build or its verification failed; the message says what to do."""


def required_cxx_std(torch_include: Path) -> str:
    """The ``-std=`` value torch's headers require, read from the guard at the top of ``ATen/ATen.h``."""
    header = torch_include / 'ATen' / 'ATen.h'
    match = re.search(r'__cplusplus\s*<\s*(\d{6})L', header.read_text())
    if match is None:
        return 'c++17'  # older torch has no guard; C++17 is what it was built with since 1.x
    value = match.group(1)
    if value not in _STD_BY_CPLUSPLUS:
        raise BuildError(
            f'{header} asks for __cplusplus >= {value}L, a standard this script does not know; '
            'add it to _STD_BY_CPLUSPLUS.'
        )
    return _STD_BY_CPLUSPLUS[value]


def patch_setup_py(text: str, std: str) -> str:
    """Replace every hard-coded ``-std=c++NN`` in mmcv's ``setup.py`` by ``-std=<std>``."""
    patched, count = re.subn(r'-std=c\+\+\d\d', f'-std={std}', text)
    if count == 0:
        raise BuildError('found no -std=c++NN flag in mmcv setup.py; the source layout changed, update the patch.')
    return patched


# ---------------------------------------------------------------------------------------------------- unity build
# Found by compiling mmcv 2.1.0's 77 C++ op sources as one translation unit (g++ 12, torch 2.14): these four define
# the same file-level helpers (PreCalc, pre_calc_for_bilinear_interpolate, bilinear_interpolate_gradient, add) with
# other bodies, so no two of them share a unit.
UNITY_APART = (
    'cpu/bezier_align.cpp',
    'cpu/roi_align.cpp',
    'cpu/roi_align_rotated.cpp',
    'cpu/rotated_feature_align.cpp',
)
# This one #defines min and max, which breaks every source included after it: always last in its unit.
UNITY_LAST = ('cpu/psamask.cpp',)
UNITY_DIR = 'mmcv/ops/csrc/pit_det_unity'
_CSRC = 'mmcv/ops/csrc/pytorch'
_SETUP_HOOK = '''
def _pit_det_unity(op_files):
    """pit-det: the unity translation units in place of the C++ sources they include (pit_det_unity.json)."""
    import json
    with open('pit_det_unity.json') as f:
        manifest = json.load(f)
    absent = [p for p in manifest['replaces'] if p not in op_files]
    if absent:
        raise RuntimeError(f'pit-det unity build: {absent} are not among the sources setup.py compiles')
    return [p for p in op_files if p not in manifest['replaces']] + manifest['units']


'''


def unity_groups(sizes: dict[str, int], count: int) -> list[list[str]]:
    """Split C++ sources (paths under ``csrc/pytorch``, with their sizes) into ``count`` groups of similar size.

    The files of :data:`UNITY_APART` go to different groups; those of :data:`UNITY_LAST` end their group.
    """
    count = max(count, len(UNITY_APART))
    groups: list[list[str]] = [[] for _ in range(count)]
    totals = [0] * count
    for i, name in enumerate(n for n in UNITY_APART if n in sizes):
        groups[i].append(name)
        totals[i] += sizes[name]
    for name in sorted((n for n in sizes if n not in UNITY_APART), key=lambda n: (-sizes[n], n)):
        i = totals.index(min(totals))
        groups[i].append(name)
        totals[i] += sizes[name]
    for group in groups:
        group.sort(key=lambda n: (n in UNITY_LAST, n))
    return [g for g in groups if g]


def write_unity_build(src: Path, jobs: int) -> list[list[str]]:
    """Write the unity units and their manifest into mmcv's source tree and hook them into its ``setup.py``."""
    csrc = src / _CSRC
    sources = sorted(p.relative_to(csrc).as_posix() for p in [*csrc.glob('*.cpp'), *csrc.glob('cpu/*.cpp')])
    missing = [n for n in UNITY_APART + UNITY_LAST if n not in sources]
    if missing:
        raise BuildError(
            f'mmcv sources {missing} not found: the source layout changed; update UNITY_APART/'
            'UNITY_LAST in scripts/build_mmcv.py, or build file by file with PIT_DET_MMCV_UNITY=0.'
        )
    groups = unity_groups({n: (csrc / n).stat().st_size for n in sources}, jobs)
    (src / UNITY_DIR).mkdir(parents=True, exist_ok=True)
    units = []
    for i, group in enumerate(groups):
        unit = src / UNITY_DIR / f'unity_{i}.cpp'
        unit.write_text(
            '// generated by pit-det scripts/build_mmcv.py: a unity translation unit\n'
            + ''.join(f'#include "../pytorch/{name}"\n' for name in group)
        )
        units.append(f'./{unit.relative_to(src).as_posix()}')
    manifest = dict(replaces=[f'./{_CSRC}/{n}' for n in sources], units=units)
    (src / 'pit_det_unity.json').write_text(json.dumps(manifest, indent=1))
    setup_py = src / 'setup.py'
    text = setup_py.read_text()
    if 'sources=op_files,' not in text or 'def get_extensions():' not in text:
        raise BuildError(
            'mmcv setup.py has no "sources=op_files," to hook the unity build into; build file by file '
            'with PIT_DET_MMCV_UNITY=0.'
        )
    text = text.replace('def get_extensions():', _SETUP_HOOK + 'def get_extensions():', 1)
    head, _, tail = text.rpartition('sources=op_files,')  # the last one: the PyTorch extension (not parrots)
    setup_py.write_text(head + 'sources=_pit_det_unity(op_files),' + tail)
    return groups


def want_unity(setting: str) -> bool:
    setting = setting.strip().lower()
    if setting in ('', '1', 'true', 'yes', 'on'):
        return True
    if setting in ('0', 'false', 'no', 'off'):
        return False
    raise BuildError(f'PIT_DET_MMCV_UNITY={setting!r}: use 1 (unity build, default) or 0 (file by file).')


def want_cuda_ops(setting: str, has_nvcc: bool, has_gpu: bool) -> bool:
    """Whether to compile CUDA kernels: forced by ``1``/``0``, else only when both nvcc and a GPU exist."""
    setting = setting.strip().lower()
    if setting in ('1', 'true', 'yes', 'on'):
        if not has_nvcc:
            raise BuildError(
                'PIT_DET_CUDA_OPS=1 but nvcc is not on PATH: install a CUDA toolkit matching '
                'torch.version.cuda or set CUDA_HOME.'
            )
        return True
    if setting in ('0', 'false', 'no', 'off'):
        return False
    if setting not in ('', 'auto'):
        raise BuildError(f'PIT_DET_CUDA_OPS={setting!r}: use auto, 1 or 0.')
    return has_nvcc and has_gpu


def cuda_arch_list(capabilities: list[tuple[int, int]]) -> str:
    """``TORCH_CUDA_ARCH_LIST`` for GPUs of these compute capabilities: each once, oldest first (``8.0;9.0``)."""
    if not capabilities:
        raise BuildError('building CUDA ops without a GPU: set TORCH_CUDA_ARCH_LIST, e.g. "9.0" for H100/H200.')
    return ';'.join(f'{major}.{minor}' for major, minor in sorted(set(capabilities)))


def compile_jobs() -> int:
    """Every CPU this process may use (a cluster job's allotment, not the node's count), unless MAX_JOBS says."""
    if os.environ.get('MAX_JOBS'):
        return int(os.environ['MAX_JOBS'])
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cache_key(
    mmcv_version: str, torch_version: str, python_tag: str, cuda_arches: str | None, unity: bool = True
) -> str:
    """Directory name under the wheel cache; every input that changes the binary is in it."""
    ops = 'ops-cpu' if cuda_arches is None else 'ops-cuda-sm' + re.sub(r'[^0-9A-Za-z.]+', '_', cuda_arches)
    return f'mmcv-{mmcv_version}_torch-{torch_version}_{python_tag}_{ops}_{"unity" if unity else "per-file"}'


def find_cuda_home(nvcc: str | None = None) -> Path | None:
    """The CUDA toolkit root: ``CUDA_HOME``/``CUDA_PATH``, else the toolkit holding the real ``nvcc``.

    ``nvcc`` on PATH may be a wrapper script (``/usr/local/bin/nvcc`` exec-ing ``/usr/local/cuda-13.0/bin/nvcc``),
    which makes torch guess ``/usr/local``; the wrapper's target is followed.
    """
    candidates = [os.environ.get('CUDA_HOME'), os.environ.get('CUDA_PATH')]
    nvcc = nvcc or shutil.which('nvcc')
    if nvcc:
        real = Path(nvcc).resolve()
        candidates.append(str(real.parent.parent))
        if real.stat().st_size < 4096:  # a wrapper script: look for the nvcc it calls
            candidates += [m.group(1) for m in re.finditer(r'(/\S+)/bin/nvcc', real.read_text(errors='ignore'))]
    candidates += ['/usr/local/cuda'] + sorted(str(p) for p in Path('/usr/local').glob('cuda-*'))
    for candidate in candidates:
        if candidate and (Path(candidate) / 'include' / 'cuda_runtime.h').is_file():
            return Path(candidate)
    return None


def _nvidia_wheel_dirs(kind: str) -> list[str]:
    """``include``/``lib`` folders of the nvidia-* wheels torch depends on (cuSPARSE, cuBLAS, ... headers)."""
    root = Path(sysconfig.get_paths()['purelib']) / 'nvidia'
    return sorted(str(p) for p in root.glob(f'*/{kind}') if p.is_dir())


def _run(cmd: list[str], **kwargs) -> None:
    print('+', ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def _cache_root() -> Path:
    if os.environ.get('PIT_DET_CACHE'):
        return Path(os.environ['PIT_DET_CACHE'])
    return Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'pit-det'


def _build_wheel(dest: Path, std: str, cuda_arches: str | None, unity: bool) -> Path:
    pip = [sys.executable, '-m', 'pip']
    env = dict(os.environ, MMCV_WITH_OPS='1', MAX_JOBS=str(compile_jobs()))
    if cuda_arches is None:
        env.pop('FORCE_CUDA', None)
        env['CUDA_VISIBLE_DEVICES'] = ''  # mmcv's setup.py builds CUDA ops whenever it sees a GPU
    else:
        env.update(FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST=cuda_arches)
        cuda_home = find_cuda_home()
        if cuda_home is None:
            raise BuildError('no CUDA toolkit found (include/cuda_runtime.h): set CUDA_HOME to its root.')
        env['CUDA_HOME'] = str(cuda_home)
        env['PATH'] = f'{cuda_home / "bin"}{os.pathsep}{env["PATH"]}'
        # torch's CUDA headers include cusparse.h, cublas_v2.h, ...: a toolkit of nvcc and the runtime alone lacks
        # them, the nvidia-* wheels installed with torch have them.
        for var, kind in (('CPATH', 'include'), ('LIBRARY_PATH', 'lib')):
            dirs = _nvidia_wheel_dirs(kind) + ([env[var]] if env.get(var) else [])
            if dirs:
                env[var] = os.pathsep.join(dirs)
        print(f'CUDA_HOME={cuda_home}', flush=True)
    with tempfile.TemporaryDirectory(prefix='pit-det-mmcv-') as tmp:
        tmp_path = Path(tmp)
        _run(
            pip
            + [
                'download',
                '--no-deps',
                '--no-binary',
                ':all:',
                '--no-build-isolation',
                '-d',
                str(tmp_path),
                f'mmcv=={MMCV_VERSION}',
            ]
        )
        sdist = next(tmp_path.glob(f'mmcv-{MMCV_VERSION}.tar.gz'))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp_path, filter='data')
        src = tmp_path / f'mmcv-{MMCV_VERSION}'
        setup_py = src / 'setup.py'
        setup_py.write_text(patch_setup_py(setup_py.read_text(), std))
        kind = 'file by file'
        if unity:
            groups = write_unity_build(src, int(env['MAX_JOBS']))
            kind = f'unity build: {len(groups)} units for {sum(map(len, groups))} C++ sources'
        out = tmp_path / 'wheels'
        start = time.time()
        _run(pip + ['wheel', '--no-deps', '--no-build-isolation', '-w', str(out), str(src)], env=env)
        print(f'mmcv wheel built in {time.time() - start:.0f} s ({kind})', flush=True)
        wheels = list(out.glob('mmcv-*.whl'))
        if len(wheels) != 1 or wheels[0].name.endswith('py3-none-any.whl'):
            raise BuildError(
                f'expected one platform wheel with compiled ops, got {[w.name for w in wheels]}; '
                'was the build isolated from torch?'
            )
        staging = dest.with_name(dest.name + '.partial')
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy2(wheels[0], staging / wheels[0].name)
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)  # atomic: a cache entry is complete or absent
    return next(dest.glob('*.whl'))


def cached_wheel() -> Path:
    """The mmcv wheel for this torch, Python and these GPUs: from the cache, else built into it."""
    import torch

    has_nvcc = shutil.which('nvcc') is not None or find_cuda_home() is not None
    has_gpu = torch.cuda.is_available()
    cuda = want_cuda_ops(os.environ.get('PIT_DET_CUDA_OPS', 'auto'), has_nvcc, has_gpu)
    arches = None
    if cuda:
        arches = os.environ.get('TORCH_CUDA_ARCH_LIST')
        if not arches:
            gpus = range(torch.cuda.device_count()) if has_gpu else []
            arches = cuda_arch_list([torch.cuda.get_device_capability(i) for i in gpus])
    std = required_cxx_std(Path(torch.__file__).parent / 'include')
    unity = want_unity(os.environ.get('PIT_DET_MMCV_UNITY', '1'))
    python_tag = f'cp{sys.version_info.major}{sys.version_info.minor}-{sysconfig.get_platform().replace("-", "_")}'
    key = cache_key(MMCV_VERSION, torch.__version__, python_tag, arches, unity)
    entry = _cache_root() / 'wheels' / key
    wheels = list(entry.glob('*.whl')) if entry.is_dir() else []
    print(
        f'mmcv {MMCV_VERSION}: torch {torch.__version__}, -std={std}, '
        f'{"CUDA ops for sm " + arches if arches else "CPU ops only"}, '
        f'{"unity build" if unity else "file-by-file build"}',
        flush=True,
    )
    if wheels:
        print(f'using cached wheel {wheels[0]}', flush=True)
        wheel = wheels[0]
    else:
        print(
            f'no cached wheel at {entry}; building mmcv from source '
            f'({"a few minutes" if unity else "10-20 min"} on 2 cores)',
            flush=True,
        )
        wheel = _build_wheel(entry, std, arches, unity)
    return wheel


def install() -> None:
    _run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--force-reinstall', str(cached_wheel())])


def verify() -> None:
    try:
        import mmcv
        from mmcv.utils import ext_loader

        ext = ext_loader.load_ext('_ext', ['ms_deform_attn_forward', 'ms_deform_attn_backward'])
        from mmcv.ops import MultiScaleDeformableAttention  # noqa: F401
    except Exception as exc:  # report any import failure with the fix, then re-raise as BuildError
        raise BuildError(
            f'mmcv ops do not load ({type(exc).__name__}: {exc}). Rebuild them: remove the cache entry '
            'under ~/.cache/pit-det/wheels for this torch and run `make setup` again; '
            'see README "Troubleshooting the mmcv build".'
        ) from exc
    exported = {name for name in dir(ext) if not name.startswith('_')}
    expected = set(EXT_FUNCTIONS.read_text().split())
    if expected - exported:
        raise BuildError(
            f'mmcv._ext lacks {len(expected - exported)} of the functions a file-by-file build exports '
            f'(e.g. {sorted(expected - exported)[:3]}): rebuild file by file with PIT_DET_MMCV_UNITY=0 '
            'make setup, and report the compiler and torch versions.'
        )
    import torch
    from mmcv.ops import get_compiler_version, get_compiling_cuda_version

    cuda_version = get_compiling_cuda_version()
    cuda_ops = cuda_version not in ('not available', '')
    print(
        f'mmcv {mmcv.__version__} ops OK, {len(exported)} functions (compiler {get_compiler_version()}); '
        f'CUDA ops: {"yes (CUDA " + cuda_version + ")" if cuda_ops else "no (CPU ops only)"}; '
        f'torch {torch.__version__}, GPU visible: {torch.cuda.is_available()}; ext {Path(ext.__file__).name}'
    )
    if torch.cuda.is_available() and not cuda_ops:
        print(
            'WARNING: a GPU is visible but mmcv has no CUDA ops; Deformable DETR will fail on cuda tensors. '
            'Rebuild with PIT_DET_CUDA_OPS=1 make setup.',
            file=sys.stderr,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('command', choices=['build', 'install', 'verify'])
    args = parser.parse_args()
    try:
        if args.command == 'build':
            print(f'mmcv wheel: {cached_wheel()}')
        else:
            install() if args.command == 'install' else verify()
    except (BuildError, subprocess.CalledProcessError) as exc:
        print(f'ERROR: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
