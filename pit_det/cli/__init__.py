"""Command-line entry points; each is also a thin script in ``tools/``.

One vocabulary (docs/cli.md lists every command and flag): ``--out`` is always a file and ``--out-dir`` always a
folder; a size is ``--size HxW``; a checkpoint is positional where one is needed (``none``: random weights, where a
tool can run them); a refused input exits 1 with ``error: MESSAGE``, bad usage 2 (argparse); every parser is built by
:func:`parser_from_doc`.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable


def command(main: Callable[..., int]) -> Callable[..., int]:
    """Every command's ``main``: mmengine's loggers write to the ``sys.stdout`` of each call, so a caller that runs
    commands in one process with its own streams (tests, notebooks) never meets a handler on a closed stream."""

    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        from ..runner import log_to_current_stdout

        log_to_current_stdout()
        try:
            return main(*args, **kwargs)
        except (MemoryError, RuntimeError) as exc:
            if not out_of_memory(exc):
                raise
            print(
                f'error: out of memory ({_first_line(exc)}): this run needs more memory than the machine has; use '
                'a smaller --size or batch, or fewer models at once',
                file=sys.stderr,
            )
            return 1
        finally:
            log_to_current_stdout()

    return run


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that failed: Python's ``MemoryError``, torch's CPU allocator ("can't
    allocate memory") or a CUDA out-of-memory error."""
    import torch

    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(exc)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def parser_from_doc(doc: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """A parser whose description is the first line of ``doc`` and whose epilog is the rest (or ``epilog``), kept
    as written."""
    return argparse.ArgumentParser(
        description=doc.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=epilog if epilog is not None else doc.split('\n\n', 1)[1],
    )


MAX_SIDE = 8192  # past any detector's input (COCO's largest is 1333): 99999x99999 asked torch for 120-212 GB


def image_size(text: str) -> tuple[int, int]:
    """An argparse ``type``: an image size ``HxW`` (``400x666``), each side from 1 to :data:`MAX_SIDE` px, the one
    spelling of every command's ``--size``."""
    match = re.fullmatch(r'(\d+)x(\d+)', text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f'size {text!r}: use HxW, e.g. 400x666')
    size = int(match.group(1)), int(match.group(2))
    if not all(1 <= side <= MAX_SIDE for side in size):
        raise argparse.ArgumentTypeError(f'size {text!r}: each side from 1 to {MAX_SIDE} px, e.g. 400x666 or 800x1333')
    return size


def config_file(value: str) -> str:
    """An argparse ``type``: a config path, or the name of one of pit-det's configs (``pit_s_deformable_detr``)
    found in the checkout or the installed package, from any folder."""
    from ..configs import ConfigNotFoundError, find_config

    try:
        return str(find_config(value))
    except ConfigNotFoundError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
