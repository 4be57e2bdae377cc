"""Run mmdet's own ``tools/train.py`` / ``tools/test.py`` (shipped in its wheel under ``mmdet/.mim``)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from . import command


def mmdet_tool_path(name: str) -> Path:
    import mmdet

    path = Path(mmdet.__file__).parent / '.mim' / 'tools' / f'{name}.py'
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found: this mmdet installation does not ship its tools')
    return path


@command
def run_mmdet_tool(name: str, argv: list[str]) -> int:
    """Execute mmdet's tool ``name`` with ``argv`` as its command line, in this process.

    A run that cannot start (preflight), or a checkpoint that is unreadable, unavailable or does not fit, ends with
    the message and exit status 1 instead of a traceback. The config (the first argument) may be a path or the name
    of one of pit-det's configs.
    """
    from ..configs import ConfigNotFoundError, find_config
    from ..runner import STOP_ERRORS

    argv = list(argv)
    if argv and not argv[0].startswith('-'):
        try:
            argv[0] = str(find_config(argv[0]))
        except ConfigNotFoundError as exc:
            print(f'error: {exc}', file=sys.stderr)
            return 1
    path = mmdet_tool_path(name)
    sys.argv = [str(path)] + list(argv)
    try:
        runpy.run_path(str(path), run_name='__main__')
    except STOP_ERRORS as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    return 0


def train_main() -> int:
    """``pit-det-train CONFIG [options]``: mmdet's tools/train.py with pit_det registered."""
    return run_mmdet_tool('train', sys.argv[1:])


def test_main() -> int:
    """``pit-det-test CONFIG CHECKPOINT [options]``: mmdet's tools/test.py with pit_det registered."""
    return run_mmdet_tool('test', sys.argv[1:])
