"""What every tool that writes files checks first, and how it writes them: :func:`check_file_output` and
:func:`check_dir_output` (the checks), :func:`atomic_write`, :func:`write_text` and :func:`write_csv` (the writing),
:func:`table` and :func:`save_figure` (the text tables and figures the reports write).

A destination is refused when it is one of the tool's inputs (by any spelling of the path: relative, ``..``, a
symbolic or hard link), when it is a folder where a file is due (or a file where a folder is due), and when it is an
existing file that is not an earlier output of the same tool, unless the user passes ``--force``. All of this runs
before the first model is built. Files are written next to their destination and renamed into place, so a reader
never sees half a file and a failed run leaves the previous file as it was.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any


class OutputError(ValueError):
    """A destination the tool must not write; the message names it and what to do."""


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same resolved path, or (both existing) the same inode."""
    a, b = Path(a), Path(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _input_at(path: Path, inputs: Iterable[tuple[str, str | Path | None]]) -> tuple[str, Path] | None:
    """The ``(what, path)`` of the input that ``path`` names, if any."""
    return next(((what, Path(source)) for what, source in inputs if source and same_file(path, source)), None)


def _check_parent(path: Path, option: str) -> None:
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise OutputError(f'{option} {path}: {parent} is a file, not a folder')
    if parent is not None and not writable(parent):
        raise OutputError(
            f'{option} {path}: the folder {parent} cannot be written (read-only, or not yours): '
            'choose a folder you can write'
        )


def writable(folder: str | Path) -> bool:
    """Whether files can be made in ``folder``: its permissions for this user, and a read-only file system (which
    refuses root too)."""
    return os.access(folder, os.W_OK | os.X_OK)


def check_file_output(
    path: str | Path,
    inputs: Iterable[tuple[str, str | Path | None]] = (),
    *,
    option: str = '--out',
    own: Callable[[Path], bool] | None = None,
    force: bool = False,
) -> Path:
    """Refuse to write the file ``path`` over an input, a folder, or an existing file that is not the tool's own.

    Args:
        path: the file the tool will write.
        inputs: ``(what, path)`` of every file the tool reads (``None`` paths are skipped).
        option: how the user gave ``path`` (``--out``), for the message.
        own: tells an earlier output of this tool (replaced without asking) from any other file; ``None``: the
            tool cannot tell, so an existing file needs ``force``.
        force: replace an existing file that is not an input.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputError: naming the path and the way out.
    """
    path = Path(path)
    hit = _input_at(path, inputs)
    if hit:
        raise OutputError(
            f'{option} {path} is the {hit[0]} ({hit[1]}): choose another path; a tool never writes over its input'
        )
    if path.is_dir():
        raise OutputError(f'{option} {path} is a folder: give a file name')
    _check_parent(path, option)
    if path.exists() and not force and not (own is not None and own(path)):
        raise OutputError(
            f'{option} {path} exists and is not an output of this tool: choose another path, or pass '
            '--force to replace it'
        )
    return path


def check_dir_output(
    folder: str | Path,
    names: Iterable[str],
    inputs: Iterable[tuple[str, str | Path | None]] = (),
    *,
    option: str = '--out-dir',
) -> Path:
    """Refuse a folder that is a file, or whose files ``names`` (what the tool writes there) include an input.

    Existing files of those names are taken as earlier outputs of the tool (the names are its own) and replaced.
    """
    folder = Path(folder)
    inputs, names = list(inputs), list(names)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f'{option} {folder} is a file: give a folder (it will hold {", ".join(names)})')
    _check_parent(folder, option)
    for name in names:
        check_file_output(folder / name, inputs, option=f'{option} {folder}: its file', own=lambda p: True)
    return folder


def table(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """Columns padded to their widest cell; ``markdown``: with ``|`` borders, to paste into docs."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells):
        padded = [str(c).ljust(w) for c, w in zip(cells, widths, strict=True)]
        return '| ' + ' | '.join(padded) + ' |' if markdown else '  '.join(padded)

    rule = '|' + '|'.join('-' * (w + 2) for w in widths) + '|' if markdown else '  '.join('-' * w for w in widths)
    return '\n'.join([line(header), rule] + [line(row) for row in rows])


def code_span(text: str) -> str:
    """``text`` as one Markdown code span, whatever backticks it holds: fenced by one backtick more than its longest
    run of them, padded with a space where it begins or ends with one (CommonMark)."""
    fence = '`' * (max((len(run) for run in re.findall('`+', text)), default=0) + 1)
    pad = ' ' if text.startswith('`') or text.endswith('`') else ''
    return f'{fence}{pad}{text}{pad}{fence}'


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """A matplotlib figure laid out, written to ``path`` (whole or not at all) and closed."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip('.') or 'png'))
    plt.close(fig)
    return path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, flushed to disk, then renamed to ``path``.

    The temporary name carries the process id, so two processes writing one destination never share it. On any
    failure the temporary file is removed and ``path`` keeps what it held.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'{path.name}.{os.getpid()}.partial')
    try:
        write(tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(path: str | Path, text: str) -> Path:
    """``text`` written to ``path`` by :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


# A spreadsheet runs a cell that begins with one of these as a formula (OWASP's "CSV injection"): a model spec or a
# config file named '=HYPERLINK(...)' would run when the table is opened.
FORMULA_STARTS = ('=', '+', '-', '@', '\t', '\r')


def csv_cell(value: Any) -> Any:
    """``value`` as a CSV cell a spreadsheet shows as text: a string that begins like a formula gets a leading ``'``
    (numbers, negative ones included, stay numbers)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(path: str | Path, fieldnames: list[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """A CSV table written by :func:`atomic_write`, every cell through :func:`csv_cell`."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=fieldnames)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(v) for k, v in row.items()})
    return write_text(path, table.getvalue())
