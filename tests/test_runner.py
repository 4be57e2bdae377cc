"""CheckedRunner writes checkpoints so that a file under a final name is always whole."""

import subprocess
import sys

import pytest
import torch

SCRIPT = r"""
import resource, signal, sys
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
import pit_det
from pit_det.runner import CheckedRunner

class Toy(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(256, 256)
    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.linear(inputs)

runner_cls = CheckedRunner if sys.argv[2] == 'pit' else Runner
loader = torch.utils.data.DataLoader([torch.zeros(256)])
runner = runner_cls(model=Toy(), work_dir=sys.argv[1], train_dataloader=loader,
                    train_cfg=dict(by_epoch=True, max_epochs=1),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)))
runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
runner.save_checkpoint(sys.argv[1], 'epoch_1.pth')             # whole: about 260 kB
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))   # the disk fills up 100 kB into the next file
try:
    runner.save_checkpoint(sys.argv[1], 'epoch_2.pth')
except OSError as exc:
    print('save failed:', exc)
"""


@pytest.mark.slow
def test_a_save_that_fails_midway_leaves_no_file_under_the_final_name(tmp_path):
    for kind in ('pit', 'mmengine'):
        work = tmp_path / kind
        run = subprocess.run([sys.executable, '-c', SCRIPT, str(work), kind], capture_output=True, text=True)
        assert run.returncode == 0 and 'save failed: [Errno 27] File too large' in run.stdout, run.stderr[-2000:]
        assert torch.load(work / 'epoch_1.pth', weights_only=True)['state_dict']['linear.weight'].shape == (256, 256)
        if kind == 'pit':  # nothing under the final name, and no half file left behind
            assert not (work / 'epoch_2.pth').exists() and not list(work.glob('epoch_2.pth*'))
        else:  # mmengine's own runner: a truncated file under the final name, as issue 7 found
            assert (work / 'epoch_2.pth').stat().st_size == 100_000


def test_a_run_never_rewrites_the_config_it_was_started_from(tmp_path):
    from mmdet.registry import RUNNERS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from pit_det.data import make_synthetic_coco
    from pit_det.demo import load_demo_config

    register_all_modules()
    data = make_synthetic_coco(tmp_path / 'data', num_train=2, num_val=2)
    work = tmp_path / 'work'
    work.mkdir()
    config = work / 'demo_config.py'  # a dumped config in its own work dir, as the demo leaves it
    load_demo_config(data, work).dump(str(config))
    before = config.read_text()
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict({'test_cfg.fp16': True})  # what --cfg-options does
    RUNNERS.build(cfg)
    assert config.read_text() == before  # mmengine's own dump would have written fp16=True into it
    dumps = [p for p in work.glob('demo_config_*.py')]
    assert len(dumps) == 1 and 'fp16=True' in dumps[0].read_text()


PLAIN_RUNNERS = r"""
import sys
from mmdet.utils import register_all_modules
from mmengine.runner import Runner
from pit_det.demo import load_demo_config
register_all_modules()
runners = []
for work in sys.argv[2:]:
    cfg = load_demo_config(sys.argv[1], work)
    cfg.pop('runner_type')
    runners.append(Runner.from_cfg(cfg))
print('SAVE_DIR', runners[1].visualizer._vis_backends['LocalVisBackend']._save_dir)
"""


@pytest.mark.slow
def test_two_runs_in_one_process_write_into_their_own_work_dirs(tmp_path):
    from mmdet.registry import RUNNERS
    from mmdet.utils import register_all_modules

    from pit_det.data import make_synthetic_coco
    from pit_det.demo import load_demo_config

    register_all_modules()
    data = make_synthetic_coco(tmp_path / 'data', num_train=2, num_val=2)
    runners = [RUNNERS.build(load_demo_config(data, tmp_path / name)) for name in ('first', 'second')]
    for runner, name in zip(runners, ('first', 'second'), strict=True):
        assert type(runner).__name__ == 'CheckedRunner'
        assert runner.visualizer._vis_backends['LocalVisBackend']._save_dir.startswith(str(tmp_path / name))
        assert list((tmp_path / name).glob('*/vis_data/config.py'))  # each run's config beside its own logs
    # mmengine's own Runner, in a fresh process: the second run gets the first run's visualizer back
    plain = [str(tmp_path / 'plain1'), str(tmp_path / 'plain2')]
    run = subprocess.run([sys.executable, '-c', PLAIN_RUNNERS, str(data), *plain], capture_output=True, text=True)
    assert f'SAVE_DIR {plain[0]}' in run.stdout, run.stderr[-2000:]
