import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('build_mmcv', ROOT / 'scripts' / 'build_mmcv.py')
build_mmcv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_mmcv)


def test_cxx_standard_follows_torch_headers(tmp_path):
    header = (Path(torch.__file__).parent / 'include' / 'ATen' / 'ATen.h').read_text()
    expected = 'c++20' if '202002L' in header else 'c++17'
    assert build_mmcv.required_cxx_std(Path(torch.__file__).parent / 'include') == expected
    (tmp_path / 'ATen').mkdir()
    (tmp_path / 'ATen' / 'ATen.h').write_text('#if __cplusplus < 201703L\n#error C++17\n#endif\n')
    assert build_mmcv.required_cxx_std(tmp_path) == 'c++17'
    (tmp_path / 'ATen' / 'ATen.h').write_text('#include <c10/core/Device.h>\n')
    assert build_mmcv.required_cxx_std(tmp_path) == 'c++17'


def test_setup_py_patch_replaces_every_standard_flag():
    text = "extra_compile_args = {'cxx': ['-std=c++14'], 'nvcc': ['-std=c++17', '-O3']}\nflags = ['-std=c++14']"
    patched = build_mmcv.patch_setup_py(text, 'c++20')
    assert patched.count('-std=c++20') == 3 and 'c++14' not in patched and 'c++17' not in patched
    with pytest.raises(build_mmcv.BuildError, match='no -std=c'):
        build_mmcv.patch_setup_py('nothing here', 'c++20')


@pytest.mark.parametrize('setting,nvcc,gpu,expected', [
    ('auto', True, True, True), ('auto', True, False, False), ('auto', False, True, False),
    ('1', True, False, True), ('0', True, True, False), ('', True, True, True),
])
def test_cuda_ops_choice(setting, nvcc, gpu, expected):
    assert build_mmcv.want_cuda_ops(setting, nvcc, gpu) is expected


def test_cuda_ops_choice_errors():
    with pytest.raises(build_mmcv.BuildError, match='nvcc is not on PATH'):
        build_mmcv.want_cuda_ops('1', False, True)
    with pytest.raises(build_mmcv.BuildError, match='use auto, 1 or 0'):
        build_mmcv.want_cuda_ops('maybe', True, True)


def test_cache_key_separates_every_input():
    keys = {build_mmcv.cache_key('2.1.0', t, p, a) for t in ('2.14.1+cu130', '2.13.0+cpu')
            for p in ('cp311-linux_x86_64', 'cp312-linux_x86_64') for a in (None, '9.0', '8.0;9.0')}
    assert len(keys) == 12
    assert build_mmcv.cache_key('2.1.0', '2.14.1+cu130', 'cp311-linux_x86_64', '8.0;9.0').endswith('ops-cuda-sm8.0_9.0')


def test_cuda_home_follows_an_nvcc_wrapper(tmp_path, monkeypatch):
    toolkit = tmp_path / 'cuda-13.0'
    (toolkit / 'include').mkdir(parents=True)
    (toolkit / 'include' / 'cuda_runtime.h').write_text('')
    wrapper = tmp_path / 'bin' / 'nvcc'
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    monkeypatch.delenv('CUDA_HOME', raising=False)
    monkeypatch.delenv('CUDA_PATH', raising=False)
    assert build_mmcv.find_cuda_home(str(wrapper)) == toolkit


def test_installed_mmcv_passes_verification():
    out = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'build_mmcv.py'), 'verify'], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert 'mmcv 2.1.0 ops OK' in out.stdout and 'CUDA ops:' in out.stdout


def test_mmdet_tools_are_found():
    from pit_det.cli.mmdet_tools import mmdet_tool_path
    assert mmdet_tool_path('train').name == 'train.py' and mmdet_tool_path('test').is_file()
    with pytest.raises(FileNotFoundError, match='does not ship'):
        mmdet_tool_path('nonexistent')
