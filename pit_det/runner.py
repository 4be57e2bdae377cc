"""A Runner that checks a run before it starts, never leaves a half-written checkpoint, and runs distributed on CPUs.

Selected in our configs with ``runner_type='CheckedRunner'``; mmdet's ``tools/train.py`` and ``tools/test.py`` (what
``mim train``/``mim test`` run) build it from the config. The checks are in :mod:`pit_det.preflight`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import os.path as osp
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from mmengine.dist import barrier, get_rank, is_distributed, master_only
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS, RUNNERS
from mmengine.runner import Runner
from mmengine.visualization import Visualizer

from .checkpoint.matching import CheckpointMismatchError
from .checkpoint.sources import CheckpointReadError, WeightsUnavailableError
from .extensions import show_without_traceback
from .outputs import atomic_write, writable
from .preflight import PreflightError, check_model, check_test, check_train


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the moment of writing. mmengine's ``MMLogger`` binds its console
    handler to the ``sys.stdout`` of the moment it is created, and its loggers live as long as the process: after a
    caller (pytest's ``capsys``, a notebook, a program running pit-det's commands twice) replaces and closes that
    stream, every record ended in ``--- Logging error ---`` and a traceback on stderr."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


CURRENT_STDOUT = _CurrentStdout()


def log_to_current_stdout() -> None:
    """Point the console handler of every ``MMLogger`` made so far at :data:`CURRENT_STDOUT`. Called by each command
    (before and after its work) and by :class:`CheckedRunner` once its logger exists; a logger made later by other
    code keeps its own stream until then. Only plain ``StreamHandler``s change: log files stay where they are."""
    from mmengine.logging import MMLogger

    for logger in list(MMLogger._instance_dict.values()):  # ManagerMixin's registry of instances; no public list
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler and handler.stream is not CURRENT_STDOUT:
                with handler.lock:  # not setStream(): it flushes the old stream first, which may be closed
                    handler.stream = CURRENT_STDOUT


class WorkDirBusyError(RuntimeError):
    """Another live process trains in this work dir; the message names it and the ways out."""


# What stops a run for a reason its message explains (data, weights, a checkpoint that does not fit, a work dir in
# use): the command line tools print the message alone, without a traceback.
STOP_ERRORS = (PreflightError, CheckpointMismatchError, CheckpointReadError, WeightsUnavailableError, WorkDirBusyError)


class WorkDirLock:
    """An exclusive lock on a work dir for one training process: ``WORK_DIR/.pit_det_train.lock``.

    The lock is the kernel's (``flock``) on that file, so it ends with the process however it ends (``kill -9``
    included) and a file left behind locks nothing; the file records the holder (pid, host, start, command) for the
    message a second run prints.
    """

    NAME = '.pit_det_train.lock'

    def __init__(self, work_dir: str) -> None:
        self.path = osp.join(work_dir, self.NAME)
        self._file = None

    def acquire(self) -> WorkDirLock:
        """Take the lock, or raise :class:`WorkDirBusyError` naming the process that holds it."""
        import fcntl
        import json
        import socket
        import time

        os.makedirs(osp.dirname(self.path), exist_ok=True)
        file = open(self.path, 'a+')
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.seek(0)
            holder = file.read().strip()
            file.close()
            try:
                info = json.loads(holder)
                who = f'pid {info["pid"]} on {info["host"]}, started {info["started"]}: {" ".join(info["command"])}'
            except (ValueError, KeyError, TypeError):
                who = 'a process that left no details'
            raise WorkDirBusyError(
                f'work dir {osp.dirname(self.path)} is in use by another training run ({who}). Two runs in one work '
                "dir overwrite each other's checkpoints and logs. Wait for it to finish, stop it (kill PID), or "
                'give this run its own --work-dir.'
            ) from None
        file.seek(0)
        file.truncate()
        file.write(
            json.dumps(
                dict(
                    pid=os.getpid(),
                    host=socket.gethostname(),
                    started=time.strftime('%Y-%m-%d %H:%M:%S'),
                    command=sys.argv,
                )
            )
        )
        file.flush()
        self._file = file
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the flock
            self._file = None

    def held_by_other(self) -> bool:
        """Whether another process holds the lock now (this one does not take it)."""
        import fcntl

        if self._file is not None or not osp.isfile(self.path):
            return False
        with open(self.path) as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(file, fcntl.LOCK_UN)
        return False


@OPTIM_WRAPPERS.register_module()
class BF16AutocastOptimWrapper(OptimWrapper):
    """Mixed precision on the CPU: the forward pass and loss under ``torch.autocast('cpu', dtype=torch.bfloat16)``.

    bfloat16 keeps float32's exponent range, so no loss scaling is needed; parameters, gradients and the optimiser
    stay in float32. mmengine's ``AmpOptimWrapper`` is for GPUs only; :class:`CheckedRunner` uses this one for ``--amp``
    on a machine without CUDA.
    """

    @contextlib.contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=torch.bfloat16):
            yield


# mmengine's root registry: mmdet's tools/train.py builds the runner before any default scope is set, so a runner in
# mmdet's child registry is not found there ('CheckedRunner is not in the runner registry'); children see the root's.
@RUNNERS.register_module()
class CheckedRunner(Runner):
    """mmengine's Runner with preflight checks in :meth:`train` and :meth:`test`, one training run per work dir
    (:class:`WorkDirLock`), atomic checkpoint files, a config dump that never replaces the run's own config file, a
    log dir and a visualizer of its own, ``--amp`` as bf16 autocast on the CPU, and a run stopped by one of
    :data:`STOP_ERRORS` ending with its message instead of a traceback.

    With ``--launcher pytorch`` on a machine without a GPU (``torchrun --nproc_per_node N tools/train.py CONFIG
    --launcher pytorch``) the processes join a gloo group and the model is wrapped in DDP without device ids:
    mmengine 0.10.7 would call ``torch.cuda.set_device`` and pass ``device_ids=[LOCAL_RANK]`` there, which fails
    without CUDA.
    """

    def __init__(self, *args, launcher: str = 'none', **kwargs) -> None:
        # mmdet's tools/train.py and tools/test.py (what `mim train`/`mim test` run) do not catch errors: a run that
        # cannot start printed a traceback into mmengine's internals above the message. Only uncaught exceptions
        # reach sys.excepthook, so code that builds a runner and catches these errors is unaffected.
        show_without_traceback(STOP_ERRORS)
        if isinstance(kwargs.get('model'), dict):
            check_model(kwargs['model'])  # options the model's constructor would reject inside a traceback
        if osp.isfile(str(kwargs.get('work_dir', ''))):
            raise PreflightError(
                f'cannot start: the work dir {kwargs["work_dir"]} is a file; give a folder (--work-dir DIR)'
            )
        if kwargs.get('work_dir'):
            existing = next(
                p
                for p in (Path(kwargs['work_dir']).absolute(), *Path(kwargs['work_dir']).absolute().parents)
                if p.exists()
            )
            if not writable(existing):
                raise PreflightError(
                    f'cannot start: the work dir {kwargs["work_dir"]} cannot be written ({existing} '
                    'is read-only, or not yours): give a folder you can write (--work-dir DIR)'
                )
        self._work_dir_lock = None
        if launcher == 'pytorch' and not torch.cuda.is_available() and not dist.is_initialized():
            dist.init_process_group(backend='gloo')  # torchrun's env://; mmengine then skips its own init_dist
        super().__init__(*args, launcher=launcher, **kwargs)
        log_to_current_stdout()  # the run's logger outlives the stdout it was made under

    def setup_env(self, env_cfg) -> None:
        """mmengine's environment setup, with a log dir of this run's own: mmengine names it by the second the run
        started, so two runs started in one second in one work dir wrote one log file. Rank 0 creates the folder
        (``TIMESTAMP``, else ``TIMESTAMP_1``, ...) and the other ranks take its name."""
        from mmengine.dist import broadcast_object_list

        super().setup_env(env_cfg)
        stamp = [self._timestamp]
        if self.rank == 0:
            os.makedirs(self._work_dir, exist_ok=True)
            for n in range(1, 1000):
                try:
                    os.mkdir(osp.join(self._work_dir, stamp[0]))
                    break
                except FileExistsError:
                    stamp[0] = f'{self._timestamp}_{n}'
        if self.world_size > 1:
            broadcast_object_list(stamp)
        self._timestamp = stamp[0]

    def build_visualizer(self, visualizer=None):
        """The visualizer of this run, writing under this run's log dir.

        mmengine keeps one visualizer per name for the whole process and mmdet's configs all name theirs
        ``'visualizer'``: a second run in the same process (a notebook, a sweep, a test session) would get the first
        run's visualizer back and write its config, scalars and drawings into the first run's work dir (or fail once
        that dir is gone). A name already taken gets this run's log dir appended.
        """
        if (
            isinstance(visualizer, dict)
            and visualizer.get('name')
            and Visualizer.check_instance_created(visualizer['name'])
        ):
            visualizer = {**visualizer, 'name': f'{visualizer["name"]}@{self.log_dir}'}
        return super().build_visualizer(visualizer)

    def build_optim_wrapper(self, optim_wrapper):
        """``--amp`` (mmengine's ``AmpOptimWrapper``, fp16 with dynamic loss scaling) as bf16 autocast on the CPU."""
        if (
            isinstance(optim_wrapper, dict)
            and optim_wrapper.get('type') == 'AmpOptimWrapper'
            and not torch.cuda.is_available()
        ):
            optim_wrapper = {k: v for k, v in optim_wrapper.items() if k not in ('loss_scale', 'dtype', 'use_fsdp')}
            optim_wrapper['type'] = 'BF16AutocastOptimWrapper'
            print_log(
                'no CUDA device: mixed precision runs as bf16 autocast on the CPU (BF16AutocastOptimWrapper)',
                logger='current',
            )
        return super().build_optim_wrapper(optim_wrapper)

    def wrap_model(self, model_wrapper_cfg, model):
        if model_wrapper_cfg is None and is_distributed() and not torch.cuda.is_available():
            model_wrapper_cfg = dict(
                type='MMDistributedDataParallel',
                device_ids=None,
                broadcast_buffers=False,
                find_unused_parameters=self.cfg.get('find_unused_parameters', False),
            )
        return super().wrap_model(model_wrapper_cfg, model)

    def _preflight(self, check) -> None:
        """``check(cfg)`` on rank 0 only (it reads whole annotation files), the other ranks wait for it; a failure
        there ends the run (torchrun stops the other processes)."""
        if get_rank() == 0:
            check(self.cfg)
        barrier()

    def train(self):
        """mmengine's training, after the preflight, holding the work dir's :class:`WorkDirLock` (rank 0)."""
        if get_rank() == 0 and self._work_dir_lock is None:
            self._work_dir_lock = WorkDirLock(self.work_dir).acquire()
        try:
            self._preflight(check_train)
            return super().train()
        finally:
            if self._work_dir_lock is not None:
                self._work_dir_lock.release()
                self._work_dir_lock = None

    def test(self):
        self._preflight(check_test)
        self._testing = True
        try:
            return super().test()
        finally:
            self._testing = False

    def load_or_resume(self) -> None:
        """mmengine's loading; a test refuses a checkpoint whose classifier has another number of classes, or that
        lacks tensors of the model (another detector's); training from it is fine-tuning: those layers keep their
        initialisation."""
        super().load_or_resume()
        model = self.model.module if hasattr(self.model, 'module') else self.model
        if getattr(self, '_testing', False) and hasattr(model, 'refuse_for_testing'):
            model.refuse_for_testing(self._load_from)
        if self._resume:
            self._forget_best_checkpoints_elsewhere()

    def resume(self, filename: str, *args, **kwargs) -> None:
        """mmengine's resume, refusing a checkpoint of another detector or class set before its optimizer state is
        read: a Deformable DETR checkpoint resumed into a DINO config ended in a traceback about parameter groups.
        Resuming continues a run of this config; starting from another model's weights is ``load_from``."""
        self._resuming = True
        try:
            super().resume(filename, *args, **kwargs)
        finally:
            self._resuming = False

    def load_checkpoint(self, filename: str, *args, **kwargs):
        checkpoint = super().load_checkpoint(filename, *args, **kwargs)
        model = self.model.module if hasattr(self.model, 'module') else self.model
        if getattr(self, '_resuming', False) and hasattr(model, 'refuse_for_testing'):
            try:
                model.refuse_for_testing(filename)
            except CheckpointMismatchError as exc:
                raise CheckpointMismatchError(
                    f'--resume {filename}: {exc}. A resumed run continues the run that wrote the checkpoint, with '
                    "its optimizer state; to start this config from another model's weights, pass the file as "
                    f'--cfg-options load_from={filename} without --resume'
                ) from None
        return checkpoint

    def _forget_best_checkpoints_elsewhere(self) -> None:
        """A run resumed from another work dir's checkpoint inherits that run's best checkpoint path and score;
        mmengine's CheckpointHook deletes the previous best at each new best, so the other run's file was removed.
        Such a run starts a best of its own (path and score forgotten): a run deletes files in its own work dir
        only. A run resumed in its own work dir keeps both, as mmengine does."""
        own = osp.realpath(self.work_dir)
        info = self.message_hub.runtime_info
        elsewhere = [
            str(info[k])
            for k in info
            if k.startswith('best_ckpt')
            and isinstance(info[k], str)
            and osp.commonpath([own, osp.realpath(info[k])]) != own
        ]
        if elsewhere:
            for key in [k for k in info if k.startswith(('best_ckpt', 'best_score'))]:
                self.message_hub.pop_info(key)  # the hook reads a missing key as "no best checkpoint yet"
            print_log(
                f'resumed from another work dir: its best checkpoint {", ".join(elsewhere)} stays where it '
                f'is; this run keeps a best checkpoint of its own in {self.work_dir}',
                logger='current',
            )

    @master_only
    def dump_config(self) -> None:
        """mmengine's config dump into the work dir, except over the config file this run was started from.

        mmengine writes ``WORK_DIR/<config file name>``; when a run's config lives in its own work dir (a dumped
        config, such as the demo's ``work_dirs/demo/demo_config.py``), that would replace the user's file with the
        merged options of this run, which the next run would then inherit. While another process trains in the work
        dir, its config stays and this run's goes into this run's log dir.
        """
        source = self.cfg.filename
        target = osp.join(self.work_dir, osp.basename(source) if source else f'{self.timestamp}.py')
        if source and osp.exists(target) and osp.samefile(source, target):
            target = osp.join(self.work_dir, f'{osp.splitext(osp.basename(source))[0]}_{self.timestamp}.py')
        elif WorkDirLock(self.work_dir).held_by_other():  # the live run's config stays; this one goes in its log dir
            target = osp.join(self.log_dir, osp.basename(target))
        self.cfg.dump(target)

    @master_only
    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs) -> None:
        """mmengine's checkpoint, written to ``FILENAME.partial``, flushed to disk, then renamed.

        A file under a checkpoint's final name is therefore always whole; a save that fails leaves nothing behind,
        a run killed while saving only its ``.PID.partial`` file (:func:`pit_det.outputs.atomic_write`). Non-local
        backends (``backend_args``) are written as mmengine writes them.
        """
        if kwargs.get('backend_args') or kwargs.get('file_client_args') or '://' in str(out_dir):
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        save = super().save_checkpoint
        atomic_write(osp.join(out_dir, filename), lambda tmp: save(out_dir, tmp.name, *args, **kwargs))
