"""Where a tool writes: an input is never a destination by any spelling of its path, an existing file is replaced
only when it is the tool's own or forced, a failed write leaves the previous file (pit_det.outputs)."""

import hashlib
import os
from pathlib import Path

import pytest

from pit_det.outputs import OutputError, atomic_write, check_file_output, same_file


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_an_input_is_refused_by_every_spelling_of_its_path(tmp_path):
    src = tmp_path / 'model.pth'
    src.write_bytes(b'weights')
    (tmp_path / 'sub').mkdir()
    link = tmp_path / 'link.pth'
    link.symlink_to(src)
    hard = tmp_path / 'hard.pth'
    os.link(src, hard)
    for spelling in (src, tmp_path / 'sub' / '..' / 'model.pth', link, hard):
        with pytest.raises(OutputError, match='is the checkpoint'):
            check_file_output(spelling, [('checkpoint', src)], force=True)
        assert same_file(spelling, src)
    assert not same_file(tmp_path / 'other.pth', src)


def test_an_existing_file_is_replaced_only_when_it_is_the_tools_own_or_forced(tmp_path):
    theirs = tmp_path / 'notes.json'
    theirs.write_text('{"mine": 1}')
    with pytest.raises(OutputError, match='exists and is not an output of this tool.*--force'):
        check_file_output(theirs, [], option='--out', own=lambda p: False)
    assert check_file_output(theirs, [], own=lambda p: True) == theirs
    assert check_file_output(theirs, [], force=True) == theirs
    folder = tmp_path / 'folder'
    folder.mkdir()
    with pytest.raises(OutputError, match='is a folder'):
        check_file_output(folder, [], force=True)


def test_a_failed_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / 'report.json'
    path.write_text('before')

    def fail(tmp):
        tmp.write_text('half')
        raise RuntimeError('disk full')

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == 'before' and sorted(p.name for p in tmp_path.iterdir()) == ['report.json']


def test_csv_cells_that_a_spreadsheet_would_run_are_text(tmp_path):
    import csv

    from pit_det.outputs import write_csv

    risky = ['=1+1', '+cmd', '-2+3', '@SUM(A1)', '\tx', '\rx']
    path = write_csv(tmp_path / 't.csv', ['model', 'ms'], [{'model': v, 'ms': -1.5} for v in [*risky, 'pit-s']])
    rows = list(csv.DictReader(path.open(newline='')))
    assert [r['model'] for r in rows] == ["'" + v for v in risky] + ['pit-s']
    assert all(r['ms'] == '-1.5' for r in rows)  # numbers stay numbers
