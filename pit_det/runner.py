"""A Runner that checks a run before it starts, never leaves a half-written checkpoint, and runs distributed on CPUs.

Selected in our configs with ``runner_type='PiTRunner'``; mmdet's ``tools/train.py`` and ``tools/test.py`` (what
``mim train``/``mim test`` run) build it from the config. The checks are in :mod:`pit_det.preflight`.
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
import sys

import torch
import torch.distributed as dist
from mmengine.dist import barrier, get_rank, is_distributed, master_only
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS, RUNNERS
from mmengine.runner import Runner
from mmengine.visualization import Visualizer

from .models.weights import CheckpointMismatchError, CheckpointReadError, WeightsUnavailableError
from .preflight import PreflightError, check_test, check_train

# What stops a run for a reason its message explains (data, weights, a checkpoint that does not fit): the command
# line tools print the message alone, without a traceback.
STOP_ERRORS = (PreflightError, CheckpointMismatchError, CheckpointReadError, WeightsUnavailableError)


def _print_stop_errors(previous):
    """A ``sys.excepthook`` that prints a :data:`STOP_ERRORS` exception as ``error: MESSAGE`` (exit status 1, as
    for any uncaught exception) and hands everything else to ``previous``."""
    def hook(exc_type, exc, tb):
        if issubclass(exc_type, STOP_ERRORS):
            print(f'error: {exc}', file=sys.stderr)
        else:
            previous(exc_type, exc, tb)
    hook.pit_det_stop_errors = True
    return hook


@OPTIM_WRAPPERS.register_module()
class BF16AutocastOptimWrapper(OptimWrapper):
    """Mixed precision on the CPU: the forward pass and loss under ``torch.autocast('cpu', dtype=torch.bfloat16)``.

    bfloat16 keeps float32's exponent range, so no loss scaling is needed; parameters, gradients and the optimiser
    stay in float32. mmengine's ``AmpOptimWrapper`` is for GPUs only; :class:`PiTRunner` uses this one for ``--amp``
    on a machine without CUDA.
    """

    @contextlib.contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=torch.bfloat16):
            yield


# mmengine's root registry: mmdet's tools/train.py builds the runner before any default scope is set, so a runner in
# mmdet's child registry is not found there ('PiTRunner is not in the runner registry'); children see the root's.
@RUNNERS.register_module()
class PiTRunner(Runner):
    """mmengine's Runner with preflight checks in :meth:`train` and :meth:`test`, atomic checkpoint files, a config
    dump that never replaces the run's own config file, a visualizer of its own, ``--amp`` as bf16 autocast on the
    CPU, and a run stopped by one of :data:`STOP_ERRORS` ending with its message instead of a traceback.

    With ``--launcher pytorch`` on a machine without a GPU (``torchrun --nproc_per_node N tools/train.py CONFIG
    --launcher pytorch``) the processes join a gloo group and the model is wrapped in DDP without device ids:
    mmengine 0.10.7 would call ``torch.cuda.set_device`` and pass ``device_ids=[LOCAL_RANK]`` there, which fails
    without CUDA.
    """

    def __init__(self, *args, launcher: str = 'none', **kwargs) -> None:
        # mmdet's tools/train.py and tools/test.py (what `mim train`/`mim test` run) do not catch errors: a run that
        # cannot start printed a traceback into mmengine's internals above the message. Only uncaught exceptions
        # reach sys.excepthook, so code that builds a runner and catches these errors is unaffected.
        if not getattr(sys.excepthook, 'pit_det_stop_errors', False):
            sys.excepthook = _print_stop_errors(sys.excepthook)
        if launcher == 'pytorch' and not torch.cuda.is_available() and not dist.is_initialized():
            dist.init_process_group(backend='gloo')  # torchrun's env://; mmengine then skips its own init_dist
        super().__init__(*args, launcher=launcher, **kwargs)

    def build_visualizer(self, visualizer=None):
        """The visualizer of this run, writing under this run's log dir.

        mmengine keeps one visualizer per name for the whole process and mmdet's configs all name theirs
        ``'visualizer'``: a second run in the same process (a notebook, a sweep, a test session) got the first run's
        visualizer back and wrote its config, scalars and drawings into the first run's work dir (or failed once that
        dir was gone). A name already taken gets this run's log dir appended.
        """
        if isinstance(visualizer, dict) and visualizer.get('name') and \
                Visualizer.check_instance_created(visualizer['name']):
            visualizer = {**visualizer, 'name': f"{visualizer['name']}@{self.log_dir}"}
        return super().build_visualizer(visualizer)

    def build_optim_wrapper(self, optim_wrapper):
        """``--amp`` (mmengine's ``AmpOptimWrapper``, fp16 with dynamic loss scaling) as bf16 autocast on the CPU."""
        if isinstance(optim_wrapper, dict) and optim_wrapper.get('type') == 'AmpOptimWrapper' and \
                not torch.cuda.is_available():
            optim_wrapper = {k: v for k, v in optim_wrapper.items() if k not in ('loss_scale', 'dtype', 'use_fsdp')}
            optim_wrapper['type'] = 'BF16AutocastOptimWrapper'
            print_log('no CUDA device: mixed precision runs as bf16 autocast on the CPU (BF16AutocastOptimWrapper)',
                      logger='current')
        return super().build_optim_wrapper(optim_wrapper)

    def wrap_model(self, model_wrapper_cfg, model):
        if model_wrapper_cfg is None and is_distributed() and not torch.cuda.is_available():
            model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
                                     find_unused_parameters=self.cfg.get('find_unused_parameters', False))
        return super().wrap_model(model_wrapper_cfg, model)

    def _preflight(self, check) -> None:
        """``check(cfg)`` on rank 0 only (it reads whole annotation files), the other ranks wait for it; a failure
        there ends the run (torchrun stops the other processes)."""
        if get_rank() == 0:
            check(self.cfg)
        barrier()

    def train(self):
        self._preflight(check_train)
        return super().train()

    def test(self):
        self._preflight(check_test)
        return super().test()

    @master_only
    def dump_config(self) -> None:
        """mmengine's config dump into the work dir, except over the config file this run was started from.

        mmengine writes ``WORK_DIR/<config file name>``; when a run's config lives in its own work dir (a dumped
        config, such as the demo's ``work_dirs/demo/demo_config.py``), that would replace the user's file with the
        merged options of this run, which the next run would then inherit.
        """
        source = self.cfg.filename
        target = osp.join(self.work_dir, osp.basename(source) if source else f'{self.timestamp}.py')
        if source and osp.exists(target) and osp.samefile(source, target):
            target = osp.join(self.work_dir, f'{osp.splitext(osp.basename(source))[0]}_{self.timestamp}.py')
        self.cfg.dump(target)

    @master_only
    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs) -> None:
        """mmengine's checkpoint, written to ``FILENAME.partial``, flushed to disk, then renamed.

        A file under a checkpoint's final name is therefore always whole; a run killed while saving leaves only the
        ``.partial`` file. Non-local backends (``backend_args``) are written as mmengine writes them.
        """
        if kwargs.get('backend_args') or kwargs.get('file_client_args') or '://' in str(out_dir):
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        partial = f'{filename}.partial'
        super().save_checkpoint(out_dir, partial, *args, **kwargs)
        src, dst = osp.join(out_dir, partial), osp.join(out_dir, filename)
        with open(src, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(src, dst)
