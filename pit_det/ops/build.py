"""Compiling the fused CPU kernel: torch alone, so that ``scripts/setup.sh`` can build it while mmcv builds.

No import of mmcv or of the rest of pit_det here: the setup loads this file by its path before either is installed
(``scripts/setup.sh``, "fused CPU deformable attention kernel").
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

import torch

SOURCE = Path(__file__).parent / 'csrc' / 'ms_deform_attn_cpu.cpp'
# no -march: the source compiles its loops for AVX-512, AVX2 and the baseline and picks one at run time, so one
# build serves every x86-64 CPU (a cache folder shared between machines, a wheelhouse)
FLAGS = ['-O3', '-fopenmp']
NAME = 'pit_det_ms_deform_attn_cpu'


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """The CPU's model name and feature flags (``/proc/cpuinfo``; the model from ``platform`` and no flags where
    there is none): what the benchmark reports."""
    try:
        lines = Path('/proc/cpuinfo').read_text().splitlines()
    except OSError:
        return platform.processor(), set()

    def field(key: str) -> str:
        return next((line.split(':', 1)[1].strip() for line in lines if line.startswith(key) and ':' in line), '')

    return field('model name') or platform.processor(), set(field('flags').split())


def cpu_isa() -> tuple[str, bool]:
    """The CPU's widest vector ISA (AMX / AVX-512 BF16 / AVX-512 / AVX2) and whether it computes bf16 natively."""
    flags = cpu_model_and_flags()[1]
    if not flags:
        return 'unknown', False
    native = bool(flags & {'amx_bf16', 'avx512_bf16'})
    for flag, name in (('amx_bf16', 'AMX'), ('avx512_bf16', 'AVX-512 BF16'), ('avx512f', 'AVX-512'), ('avx2', 'AVX2')):
        if flag in flags:
            return name, native
    return 'SSE', native


def _build_inputs() -> str:
    """Everything of the environment that torch writes into the kernel's build command: its include and library
    paths (as torch spells them: a venv reached through a symbolic link gives other paths than its target), Python's
    include path and the compiler."""
    import sysconfig

    from torch.utils.cpp_extension import include_paths, library_paths

    return '\n'.join(
        [*include_paths(), *library_paths(), sysconfig.get_paths()['include'], os.environ.get('CXX', 'c++')]
    )


def extension_dir(source: Path = SOURCE) -> Path:
    """Build directory keyed by everything that changes the binary (source, flags, torch, Python) and by
    everything else in torch's build command (:func:`_build_inputs`): ninja rebuilds whenever the command of the
    folder's last build differs, so two environments sharing one folder would rebuild it each time they took
    turns."""
    root = Path(
        os.environ.get('PIT_DET_CACHE', Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'pit-det')
    )
    digest = hashlib.sha256(source.read_bytes() + ' '.join(FLAGS).encode() + _build_inputs().encode())
    tag = f'torch{torch.__version__}-py{sys.version_info.major}{sys.version_info.minor}-{digest.hexdigest()[:12]}'
    return root / 'ext' / tag.replace('+', '_')


def compile_extension(source: Path = SOURCE):
    """Compile (or load, when the cache holds it) the kernel of ``source``; raises what the build raised.

    The source is compiled from a copy inside the build directory, so every copy of pit-det with the same source
    (a clone and an installed package) shares one build: torch records the source's path in its build file and
    would rebuild whenever that path changed.
    """
    from torch.utils.cpp_extension import load

    build_dir = extension_dir(source)
    build_dir.mkdir(parents=True, exist_ok=True)
    copy = build_dir / source.name
    if not copy.is_file() or copy.read_bytes() != source.read_bytes():
        # renamed into place: two processes (test workers, DDP ranks) may build at once, neither reads half a file
        tmp = copy.with_name(f'{copy.name}.{os.getpid()}.partial')
        tmp.write_bytes(source.read_bytes())
        os.replace(tmp, copy)
    return load(
        name=NAME,
        sources=[str(copy)],
        build_directory=str(build_dir),
        extra_cflags=FLAGS,
        extra_ldflags=['-fopenmp'],
        verbose=False,
    )
