"""A Runner that checks, before building anything, that the dataset and pretrained weights exist.

Selected in our configs with ``runner_type='PiTRunner'``; mmdet's ``tools/train.py`` and ``tools/test.py`` (what
``mim train``/``mim test`` run) build it from the config. Without these checks a missing ``data/coco`` or backbone
checkpoint surfaces as a traceback from deep inside mmengine, minutes into a run.
"""
from __future__ import annotations

import os.path as osp

from mmengine.registry import RUNNERS
from mmengine.runner import Runner

COCO_LAYOUT = """expected COCO layout (data_root, default data/coco/):
    data/coco/annotations/instances_train2017.json
    data/coco/annotations/instances_val2017.json
    data/coco/train2017/*.jpg
    data/coco/val2017/*.jpg
Link or copy COCO 2017 there (e.g. `ln -s /datasets/coco data/coco`), or point the config elsewhere with
--cfg-options train_dataloader.dataset.data_root=DIR val_dataloader.dataset.data_root=DIR \
test_dataloader.dataset.data_root=DIR val_evaluator.ann_file=DIR/annotations/instances_val2017.json \
test_evaluator.ann_file=DIR/annotations/instances_val2017.json"""


class PreflightError(FileNotFoundError):
    """A file the run needs is missing; the message says where it is expected and what to do."""


def _dataset_problems(loader_cfg, role: str) -> list[str]:
    if not loader_cfg:
        return []
    dataset = loader_cfg.get('dataset', {})
    while 'dataset' in dataset:  # RepeatDataset / ClassBalancedDataset wrappers
        dataset = dataset['dataset']
    root = dataset.get('data_root', '') or ''
    problems = []
    ann = dataset.get('ann_file')
    if ann:
        path = ann if osp.isabs(ann) else osp.join(root, ann)
        if not osp.isfile(path):
            problems.append(f'{role} annotations not found: {path}')
    img_dir = (dataset.get('data_prefix') or {}).get('img')
    if img_dir is not None:
        path = img_dir if osp.isabs(img_dir) else osp.join(root, img_dir)
        if not osp.isdir(path):
            problems.append(f'{role} images not found: {path}')
    return problems


def _evaluator_problems(evaluator_cfg, role: str) -> list[str]:
    evaluators = evaluator_cfg if isinstance(evaluator_cfg, (list, tuple)) else [evaluator_cfg or {}]
    return [f'{role} evaluator annotations not found: {e["ann_file"]}' for e in evaluators
            if e.get('ann_file') and not osp.isfile(e['ann_file'])]


def _weights_problem(model_cfg) -> str | None:
    init_cfg = (model_cfg or {}).get('backbone', {}).get('init_cfg')
    if not init_cfg or init_cfg.get('type') != 'Pretrained':
        return None
    path = init_cfg.get('checkpoint')
    if path and not path.startswith(('http://', 'https://', 'torchvision://', 'open-mmlab://')) \
            and not osp.isfile(path):
        from .checkpoint import _missing_file_message
        return _missing_file_message(path)
    return None


# mmengine's root registry: mmdet's tools/train.py builds the runner before any default scope is set, so a runner in
# mmdet's child registry is not found there ('PiTRunner is not in the runner registry'); children see the root's.
@RUNNERS.register_module()
class PiTRunner(Runner):
    """mmengine's Runner with preflight checks in :meth:`train` and :meth:`test`."""

    @staticmethod
    def _preflight(data_problems: list[str], weights_problem: str | None = None) -> None:
        problems = data_problems + ([weights_problem] if weights_problem else [])
        if problems:
            raise PreflightError('\n'.join(['cannot start:'] + [f'  - {p}' for p in problems]
                                           + ([COCO_LAYOUT] if data_problems else [])))

    def train(self):
        data = _dataset_problems(self.cfg.get('train_dataloader'), 'training')
        if self.cfg.get('val_cfg') is not None:
            data += _dataset_problems(self.cfg.get('val_dataloader'), 'validation')
            data += _evaluator_problems(self.cfg.get('val_evaluator'), 'validation')
        # init_weights() runs before load_from, so the backbone's weights are needed even then
        self._preflight(data, _weights_problem(self.cfg.get('model')))
        return super().train()

    def test(self):
        self._preflight(_dataset_problems(self.cfg.get('test_dataloader'), 'test')
                        + _evaluator_problems(self.cfg.get('test_evaluator'), 'test'))
        return super().test()
