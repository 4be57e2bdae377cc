import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope='module')
def build_mmcv(root):
    """``scripts/build_mmcv.py`` as a module."""
    spec = importlib.util.spec_from_file_location('build_mmcv', root / 'scripts' / 'build_mmcv.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cxx_standard_follows_torch_headers(build_mmcv, tmp_path):
    # torch's headers ask for C++20 from torch 2.13 on (measured: `#error C++20 or later compatible compiler is
    # required to use ATen` with -std=c++17), C++17 before
    version = tuple(int(v) for v in torch.__version__.split('+')[0].split('.')[:2])
    expected = 'c++20' if version >= (2, 13) else 'c++17'
    assert build_mmcv.required_cxx_std(Path(torch.__file__).parent / 'include') == expected
    (tmp_path / 'ATen').mkdir()
    (tmp_path / 'ATen' / 'ATen.h').write_text('#if __cplusplus < 201703L\n#error C++17\n#endif\n')
    assert build_mmcv.required_cxx_std(tmp_path) == 'c++17'
    (tmp_path / 'ATen' / 'ATen.h').write_text('#include <c10/core/Device.h>\n')
    assert build_mmcv.required_cxx_std(tmp_path) == 'c++17'


def test_setup_py_patch_replaces_every_standard_flag(build_mmcv):
    text = "extra_compile_args = {'cxx': ['-std=c++14'], 'nvcc': ['-std=c++17', '-O3']}\nflags = ['-std=c++14']"
    patched = build_mmcv.patch_setup_py(text, 'c++20')
    assert patched.count('-std=c++20') == 3 and 'c++14' not in patched and 'c++17' not in patched
    with pytest.raises(build_mmcv.BuildError, match='no -std=c'):
        build_mmcv.patch_setup_py('nothing here', 'c++20')


@pytest.mark.parametrize(
    'setting,nvcc,gpu,expected',
    [
        ('auto', True, True, True),
        ('auto', True, False, False),
        ('auto', False, True, False),
        ('1', True, False, True),
        ('0', True, True, False),
        ('', True, True, True),
    ],
)
def test_cuda_ops_choice(build_mmcv, setting, nvcc, gpu, expected):
    assert build_mmcv.want_cuda_ops(setting, nvcc, gpu) is expected


def test_cuda_ops_choice_errors(build_mmcv):
    with pytest.raises(build_mmcv.BuildError, match='nvcc is not on PATH'):
        build_mmcv.want_cuda_ops('1', False, True)
    with pytest.raises(build_mmcv.BuildError, match='use auto, 1 or 0'):
        build_mmcv.want_cuda_ops('maybe', True, True)


def test_cache_key_separates_every_input(build_mmcv):
    keys = {
        build_mmcv.cache_key('2.1.0', t, p, a, u)
        for t in ('2.14.1+cu130', '2.13.0+cpu')
        for p in ('cp311-linux_x86_64', 'cp312-linux_x86_64')
        for a in (None, '9.0', '8.0;9.0')
        for u in (True, False)
    }
    assert len(keys) == 24
    assert build_mmcv.cache_key('2.1.0', '2.14.1+cu130', 'cp311-linux_x86_64', '8.0;9.0', False).endswith(
        'ops-cuda-sm8.0_9.0_per-file'
    )


def test_cuda_home_follows_an_nvcc_wrapper(build_mmcv, tmp_path, monkeypatch):
    toolkit = tmp_path / 'cuda-13.0'
    (toolkit / 'include').mkdir(parents=True)
    (toolkit / 'include' / 'cuda_runtime.h').write_text('')
    wrapper = tmp_path / 'bin' / 'nvcc'
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    monkeypatch.delenv('CUDA_HOME', raising=False)
    monkeypatch.delenv('CUDA_PATH', raising=False)
    assert build_mmcv.find_cuda_home(str(wrapper)) == toolkit


def test_installed_mmcv_passes_verification(root):
    out = subprocess.run(
        [sys.executable, str(root / 'scripts' / 'build_mmcv.py'), 'verify'], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert 'mmcv 2.1.0 ops OK' in out.stdout and 'CUDA ops:' in out.stdout


def test_mmdet_tools_are_found():
    from pit_det.cli.mmdet_tools import mmdet_tool_path

    assert mmdet_tool_path('train').name == 'train.py' and mmdet_tool_path('test').is_file()
    with pytest.raises(FileNotFoundError, match='does not ship'):
        mmdet_tool_path('nonexistent')


# ------------------------------------------------------------------------------------------------ unity build
def test_unity_groups_keep_colliding_sources_apart(build_mmcv):
    sizes = {f'op{i}.cpp': 1000 + 37 * i for i in range(57)} | {f'cpu/op{i}.cpp': 500 + 11 * i for i in range(15)}
    sizes |= {name: 4000 for name in build_mmcv.UNITY_APART + build_mmcv.UNITY_LAST}
    for jobs in (1, 2, 16):
        groups = build_mmcv.unity_groups(sizes, jobs)
        assert len(groups) == max(jobs, 4)
        assert sorted(n for g in groups for n in g) == sorted(sizes)  # every source exactly once
        assert all(sum(n in build_mmcv.UNITY_APART for n in g) <= 1 for g in groups)
        assert all(g.index(n) == len(g) - 1 for g in groups for n in build_mmcv.UNITY_LAST if n in g)
        totals = [sum(sizes[n] for n in g) for g in groups]
        assert max(totals) - min(totals) <= max(sizes.values())  # balanced to within one file


def test_unity_build_hooks_into_mmcv_setup_py(build_mmcv, tmp_path):
    src = tmp_path / 'mmcv-2.1.0'
    csrc = src / 'mmcv' / 'ops' / 'csrc' / 'pytorch'
    (csrc / 'cpu').mkdir(parents=True)
    names = ['nms.cpp', 'pybind.cpp', *build_mmcv.UNITY_APART, *build_mmcv.UNITY_LAST]
    for name in names:
        (csrc / name).write_text('// ' + name)
    (src / 'setup.py').write_text(
        'def get_extensions():\n    op_files = []\n    a = ext(sources=op_files,)\n    b = ext(sources=op_files,)\n'
    )
    groups = build_mmcv.write_unity_build(src, 2)
    assert sorted(n for g in groups for n in g) == sorted(names)
    setup = (src / 'setup.py').read_text()
    assert setup.count('sources=_pit_det_unity(op_files),') == 1 and setup.count('sources=op_files,') == 1
    namespace = {}
    exec(setup.split('def get_extensions():')[0], namespace)
    op_files = [f'./mmcv/ops/csrc/pytorch/{n}' for n in names] + ['./mmcv/ops/csrc/pytorch/cuda/nms_cuda.cu']
    import os

    cwd = os.getcwd()
    os.chdir(src)
    try:
        sources = namespace['_pit_det_unity'](op_files)
        with pytest.raises(RuntimeError, match='are not among the sources'):
            namespace['_pit_det_unity'](op_files[1:])
    finally:
        os.chdir(cwd)
    assert sources[0].endswith('nms_cuda.cu') and len(sources) == 1 + len(groups)  # CUDA files untouched
    unit = (src / sources[1]).read_text()
    assert '#include "../pytorch/' in unit
    with pytest.raises(build_mmcv.BuildError, match='PIT_DET_MMCV_UNITY=0'):
        (csrc / 'cpu' / 'psamask.cpp').unlink()
        build_mmcv.write_unity_build(src, 2)


def test_unity_setting(build_mmcv):
    assert build_mmcv.want_unity('') and build_mmcv.want_unity('1') and not build_mmcv.want_unity('0')
    with pytest.raises(build_mmcv.BuildError, match='use 1'):
        build_mmcv.want_unity('fast')


def test_installed_ops_equal_the_file_by_file_build(root):
    """Same exported functions and the same results for a sample of ops (the unity build's colliding sources
    among them) as a file-by-file build of the same mmcv."""
    sys.path.insert(0, str(root / 'tests'))
    import json

    import mmcv_ops
    import numpy as np

    assert mmcv_ops.ext_functions() == (root / 'scripts' / 'mmcv-2.1.0_ext_functions.txt').read_text().split()
    reference = json.loads((root / 'tests' / 'data' / 'mmcv_ops_per_file_build.json').read_text())
    results = mmcv_ops.compute()
    assert results.keys() == reference.keys()
    for name, expected in reference.items():
        if name.startswith('nms'):
            np.testing.assert_allclose(np.array(results[name][0]), np.array(expected[0]), rtol=1e-6, atol=1e-6)
            assert results[name][1] == expected[1], name
        else:
            np.testing.assert_allclose(np.array(results[name]), np.array(expected), rtol=1e-5, atol=1e-6, err_msg=name)


def test_cuda_arch_list_covers_every_gpu_once(build_mmcv):
    assert build_mmcv.cuda_arch_list([(9, 0)]) == '9.0'
    assert build_mmcv.cuda_arch_list([(9, 0), (8, 0), (9, 0), (8, 6)]) == '8.0;8.6;9.0'
    with pytest.raises(build_mmcv.BuildError, match='set TORCH_CUDA_ARCH_LIST'):
        build_mmcv.cuda_arch_list([])


def test_compile_jobs_are_the_cpus_this_process_may_use(build_mmcv, monkeypatch):
    import os

    monkeypatch.delenv('MAX_JOBS', raising=False)
    assert build_mmcv.compile_jobs() == len(os.sched_getaffinity(0))
    monkeypatch.setenv('MAX_JOBS', '3')
    assert build_mmcv.compile_jobs() == 3
