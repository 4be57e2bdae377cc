"""One training run per work dir, runs in one second logging apart, a work dir that is a file refused first."""

import subprocess
import sys
import time

import pytest

HOLD = """
import sys, time
from pit_det.runner import WorkDirLock
lock = WorkDirLock(sys.argv[1]).acquire()  # held while this process lives
print('held', flush=True)
time.sleep(600)
"""


def test_a_second_training_run_is_refused_while_the_first_holds_the_work_dir(demo_run, root, tmp_path):
    """A real process holds the work dir (as a training run does while it trains); a real second `tools/train.py`
    in that work dir stops with the holder's pid and the way out, and the lock ends with the first process."""
    from pit_det.runner import WorkDirLock

    config, _ = demo_run
    work = tmp_path / 'work'
    first = subprocess.Popen([sys.executable, '-c', HOLD, str(work)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == 'held'
        second = subprocess.run(
            [sys.executable, str(root / 'tools' / 'train.py'), str(config), '--work-dir', str(work)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 1 and 'Traceback' not in second.stderr, second.stderr[-3000:]
        assert f'work dir {work} is in use by another training run (pid {first.pid}' in second.stderr
        assert '--work-dir' in second.stderr
        assert not list(work.glob('*.pth'))  # it stopped before training
    finally:
        first.kill()  # SIGKILL: the kernel drops the lock with the process
        first.wait()
    assert not WorkDirLock(str(work)).held_by_other()
    WorkDirLock(str(work)).acquire().release()  # free again


def test_runs_started_in_one_second_log_into_folders_of_their_own(demo_run, tmp_path, monkeypatch):
    """mmengine names a run's log folder by the second it started: two runs in that second shared one log file."""
    from mmdet.registry import RUNNERS
    from mmengine.config import Config

    config, _ = demo_run
    monkeypatch.setattr(time, 'time', lambda: 1795940000.0)  # both runs start in the same second
    runners = []
    for _ in range(2):
        cfg = Config.fromfile(str(config))
        cfg.work_dir = str(tmp_path / 'work')
        runners.append(RUNNERS.build(cfg))
    assert runners[0].timestamp == runners[1].timestamp.rsplit('_', 1)[0]
    assert runners[1].log_dir == runners[0].log_dir + '_1'


def test_a_work_dir_that_is_a_file_is_refused_before_anything_runs(demo_config, tmp_path, capsys):
    from pit_det.cli import demo

    taken = tmp_path / 'notes.txt'
    taken.write_text('mine')
    assert demo.main(['--work-dir', str(taken), '--data-root', str(tmp_path / 'data')]) == 1
    assert f'--work-dir {taken} is a file' in capsys.readouterr().err
    assert taken.read_text() == 'mine' and not (tmp_path / 'data').exists()
    from mmdet.registry import RUNNERS
    from mmengine.config import Config

    from pit_det.preflight import PreflightError

    cfg = Config.fromfile(str(demo_config))
    cfg.work_dir = str(taken)
    with pytest.raises(PreflightError, match=f'the work dir {taken} is a file'):
        RUNNERS.build(cfg)
    assert taken.read_text() == 'mine'
