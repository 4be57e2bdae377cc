"""What the tests share: the repository's paths, a fixed seed, PiT weights in each checkpoint layout, the configs."""

import os
from pathlib import Path

import pytest
import torch
from mmengine.logging import MMLogger

import pit_det  # noqa: F401  (registers PiT, allow-lists mmengine checkpoint classes)
from pit_det.demo import DEMO_CONFIG
from pit_det.runner import log_to_current_stdout

REPO = Path(__file__).resolve().parents[1]

# mmengine's default logger ('mmengine'), made here once and pointed at the sys.stdout of each moment, as every
# command does with the loggers it meets: made by the first mmengine call of a test instead (Config.fromfile,
# load_checkpoint), it would write to that test's capsys stream after the test closed it.
MMLogger.get_current_instance()
log_to_current_stdout()

if os.environ.get('PYTEST_XDIST_WORKER'):  # make test: two workers share the cores; one thread each, children too
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    torch.set_num_threads(1)

CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)


@pytest.fixture(scope='session')
def root():
    """The repository's root folder."""
    return REPO


@pytest.fixture(scope='session')
def demo_config():
    """The demo config, ``configs/demo/deformable-detr_pit-ti_synthetic_cpu.py``."""
    return DEMO_CONFIG


@pytest.fixture()
def mmengine_log():
    """The messages mmengine's current logger emits during the test (``print_log(..., logger='current')``)."""
    import logging

    from mmengine.logging import MMLogger

    class Lines(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    handler = Lines()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


@pytest.hookimpl(trylast=True)  # after pytest-randomly's shuffle
def pytest_collection_modifyitems(items):
    """Files holding more slow tests first: xdist hands whole files to the two workers in this order (--dist
    loadfile), so the long ones start early and the workers end together instead of one waiting on a long file
    drawn last. pytest-randomly's order stays within each file and among files of equal weight."""
    weight, first = {}, {}
    for index, item in enumerate(items):
        weight[item.path] = weight.get(item.path, 0) + (item.get_closest_marker('slow') is not None)
        first.setdefault(item.path, index)
    items.sort(key=lambda item: (-weight[item.path], first[item.path]))


def pytest_generate_tests(metafunc):
    """A test taking ``config_path`` runs once per config of ``configs/`` (``_base_`` left out)."""
    if 'config_path' in metafunc.fixturenames:
        metafunc.parametrize('config_path', CONFIGS, ids=[str(p.relative_to(REPO / 'configs')) for p in CONFIGS])


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _no_logger_on_a_closed_stream(request):
    """A test that leaves an mmengine logger writing to a stream closed since (capsys's, say) fails by name: the next
    record logged there would print '--- Logging error ---' into whichever test runs next in this worker."""
    import logging

    yield
    closed = [
        name
        for name, logger in MMLogger._instance_dict.items()
        for handler in logger.handlers
        if type(handler) is logging.StreamHandler and getattr(handler.stream, 'closed', False)
    ]
    assert not closed, f'{request.node.nodeid} left mmengine loggers {closed} on a closed stream'


@pytest.fixture(scope='session')
def relayout():
    """``relayout(sd, layout)``: see :func:`_relayout`."""
    return _relayout


def _relayout(sd: dict, layout: str) -> dict:
    """The same PiT weights (timm >= 0.9 keys) in another layout: ``official`` (``pools.{i-1}``), ``timm-legacy``
    (``transformers.{i-1}.pool``) or ``timm`` (unchanged)."""
    out = {}
    for k, v in sd.items():
        if layout != 'timm' and k.startswith(('transformers.1.pool.', 'transformers.2.pool.')):
            i, rest = int(k.split('.')[1]), k.split('.pool.', 1)[1]
            k = f'pools.{i - 1}.{rest}' if layout == 'official' else f'transformers.{i - 1}.pool.{rest}'
        out[k] = v
    return out


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    """A demo config over a small generated set, and two random-weight checkpoints of it (seeds 0 and 1)."""
    import copy

    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from pit_det.data import make_synthetic_coco
    from pit_det.demo import load_demo_config

    tmp = tmp_path_factory.mktemp('demo')
    data = make_synthetic_coco(tmp / 'data', num_train=8, num_val=4)
    cfg = load_demo_config(data, tmp / 'work', max_epochs=50)
    cfg.train_dataloader.batch_size = cfg.val_dataloader.batch_size = 4
    config = tmp / 'config.py'
    cfg.dump(str(config))
    register_all_modules()
    checkpoints = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = MODELS.build(copy.deepcopy(cfg.model))
        model.init_weights()
        checkpoints.append(tmp / f'model_{seed}.pth')
        torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoints[-1])
    return config, checkpoints


@pytest.fixture()
def read_only_folder(tmp_path):
    """A folder on a read-only file system (a tmpfs mounted ro: refused to root too), holding nothing; skipped where
    this user may not mount."""
    import subprocess

    folder = tmp_path / 'read_only'
    folder.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f'cannot mount a read-only file system here: {mounted.stderr.decode().strip()}')
    yield folder
    subprocess.run(['umount', str(folder)], check=True)
