"""Whether a state dict fits a model: the load report, the errors, and the checks of backbones and detectors.

Backbones that load checkpoints of their own kind (:class:`~pit_det.models.PiT`, :class:`~pit_det.models.ViTPyramid`)
derive from :class:`FitsCheckpoints`: one load-state-dict pre-hook converts, checks and reports every state dict
loaded into them, by ``init_cfg``, ``load_from`` or ``load_state_dict``. A detector checks the rest with
:func:`fit_detector_checkpoint`, through the :class:`FitsDetectorCheckpoints` base, which also refuses another class
set for testing and inference. :func:`check_weights_file` tells, before any run, whether a file holds weights at all.
Nothing loads half a model with warnings only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from mmengine.logging import print_log
from torch import nn

MIN_MATCH = 0.5  # a checkpoint must hold at least this fraction of a model's tensors
# An ImageNet classifier's layers, which a detection backbone drops: PiT's (norm, head, head_dist) and timm ViT's.
CLASSIFIER_PREFIXES = ('norm.', 'fc_norm.', 'head.', 'head_dist.')
# Layers whose size is the number of classes: a checkpoint trained on another class set differs only there, which
# is how a detector is fine-tuned on a new dataset (those layers keep their initialisation, with a warning).
_CLASS_LAYERS = re.compile(r'^(bbox_head\.cls_branches\.|dn_query_generator\.label_embedding\.)')


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into; the message names what differs."""


@dataclass
class ConversionReport:
    layout: str
    renamed: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    loaded: int = 0
    total: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f'layout {self.layout}, {self.loaded}/{self.total} tensors loaded, {len(self.renamed)} renamed, '
            f'{len(self.dropped)} dropped (classifier or unused stages)'
        )
        if self.missing:
            text += f'; missing: {self.missing}'
        if self.unexpected:
            text += f'; unexpected: {self.unexpected}'
        return text


def extract_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """Unwrap ``{'state_dict': ...}`` / ``{'model': ...}`` and strip ``module.``; keep ``backbone.*`` if present."""
    sd = checkpoint
    for key in ('state_dict', 'model'):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise CheckpointMismatchError(f'expected a state dict, found {type(sd).__name__}')
    sd = {k[len('module.') :] if k.startswith('module.') else k: v for k, v in sd.items()}
    if any(k.startswith('backbone.') for k in sd):
        sd = {k[len('backbone.') :]: v for k, v in sd.items() if k.startswith('backbone.')}
    return sd


def check_weights_file(path) -> int:
    """Raise unless ``path`` is a local checkpoint that ``load_from`` can load: a readable PyTorch file (read
    weights-only) holding a state dict of tensors, a detector's or a backbone's. Returns the number of tensors.

    Raises:
        FileNotFoundError: no such file.
        CheckpointReadError: not a readable PyTorch file, or one that holds code.
        CheckpointMismatchError: a PyTorch file that holds no state dict of tensors.
    """
    from .sources import read_checkpoint

    checkpoint = read_checkpoint(path)
    try:
        sd = extract_state_dict(checkpoint)
    except CheckpointMismatchError:
        sd = {}
    tensors = sum(isinstance(v, torch.Tensor) for v in sd.values())
    if not tensors:
        raise CheckpointMismatchError(
            f'checkpoint {path} holds no weights (a {type(checkpoint).__name__} without a '
            'state dict of tensors): give a .pth written by training a detector '
            '(work_dirs/.../epoch_N.pth) or by pit-det-convert'
        )
    return tensors


def take_prefixed(state_dict: dict, prefix: str) -> dict:
    """Remove the entries under ``prefix`` from ``state_dict`` and return them with the prefix stripped."""
    return {k[len(prefix) :]: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(prefix)]}


class FitsCheckpoints:
    """A backbone that converts and checks every state dict loaded into it, in one load-state-dict pre-hook.

    The contract a subclass fulfils:

    * ``checkpoint_name``: how the log line and the messages name it (``'PiT'``);
    * :meth:`recognises`: whether an unwrapped state dict is this backbone's own kind of checkpoint (ImageNet weights
      given to a whole detector are then handed to the backbone);
    * :meth:`convert_checkpoint`: the state dict in this module's layout, checked against it (raising
      :class:`CheckpointMismatchError`), with ``report`` filled.

    A subclass calls :meth:`register_fit_hook` in its ``__init__``; :attr:`load_report` describes the last load.
    Detectors leave the check of such a backbone's tensors to it.
    """

    checkpoint_name = 'backbone'
    load_report: ConversionReport | None = None

    @staticmethod
    def recognises(state_dict: dict) -> bool:
        raise NotImplementedError

    def convert_checkpoint(self, state_dict: dict, report: ConversionReport) -> dict:
        raise NotImplementedError

    def register_fit_hook(self) -> None:
        self._register_load_state_dict_pre_hook(self._fit_on_load)

    def _fit_on_load(self, state_dict: dict, prefix: str, *args) -> None:
        local = take_prefixed(state_dict, prefix)
        if not local:
            return
        report = ConversionReport('')
        converted = self.convert_checkpoint(local, report)
        self.load_report = report
        print_log(
            f'{self.checkpoint_name}{" " + prefix.rstrip(".") if prefix else ""}: {report.summary()}', logger='current'
        )
        state_dict.update({prefix + k: v for k, v in converted.items()})


def _shape_mismatches(sd: dict, own: dict) -> list[str]:
    return [
        f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in sd.items()
        if k in own and hasattr(v, 'shape') and v.shape != own[k].shape
    ]


def check_backbone_fit(
    sd: dict,
    own: dict,
    name: str,
    arch: str,
    report: ConversionReport,
    advice: str = 'Check that the checkpoint is of the same arch (ti/xs/s/b, distilled or not).',
) -> None:
    """Raise unless ``sd`` (converted) fits the backbone whose state dict is ``own``; fill ``report``'s counts.

    Raises:
        CheckpointMismatchError: a tensor differs in shape, or less than :data:`MIN_MATCH` of ``own`` is present.
    """
    mismatched = _shape_mismatches(sd, own)
    if mismatched:
        raise CheckpointMismatchError(
            f'the checkpoint does not fit this {name} (arch {arch}): {len(mismatched)} tensors differ in shape, e.g. '
            + '; '.join(mismatched[:4])
            + f'. {advice}'
        )
    report.missing = sorted(set(own) - set(sd))
    report.unexpected = sorted(set(sd) - set(own))
    report.total = len(own)
    report.loaded = len(own) - len(report.missing)
    if report.loaded < MIN_MATCH * len(own):
        raise CheckpointMismatchError(
            f'only {report.loaded} of {len(own)} {name} tensors found in the checkpoint (layout {report.layout}); '
            f'missing e.g. {report.missing[:4]}, unexpected e.g. {report.unexpected[:4]}.'
        )


def fit_detector_checkpoint(model: nn.Module, state_dict: dict, prefix: str = '') -> list[str]:
    """Raise unless a detector checkpoint fits ``model``; return the class-layer mismatches it tolerates.

    A checkpoint of the backbone alone (ImageNet weights that a :class:`FitsCheckpoints` backbone ``recognises``,
    no ``backbone.`` prefix) is moved under ``backbone.`` in ``state_dict`` (in place), so that it works as
    ``load_from`` too.

    The backbone's own tensors are checked by the backbone when it converts them (a PiT in another layout has other
    names and shapes); everything else must match in shape, except the classification layers (fine-tuning on
    another class set). A checkpoint holding less than :data:`MIN_MATCH` of the model's tensors is refused unless it
    is a backbone-only checkpoint (``pit-det-convert``'s output, usable as ``load_from``).

    Raises:
        CheckpointMismatchError: naming the tensors that differ, or the keys on both sides when nothing matches.
    """
    own = model.state_dict()
    keys = [k for k in state_dict if k.startswith(prefix)]
    sd = {k[len(prefix) :]: state_dict[k] for k in keys}
    backbone = getattr(model, 'backbone', None)
    converts_itself = isinstance(backbone, FitsCheckpoints)
    if sd and converts_itself and not any(k in own for k in sd) and backbone.recognises(extract_state_dict(sd)):
        # the backbone's own (ImageNet) weights given to the detector, e.g. load_from=hf-hub:...: the backbone's
        # hook converts them once they are under its prefix
        for key in keys:
            state_dict[f'{prefix}backbone.{key[len(prefix) :]}'] = state_dict.pop(key)
        sd = {f'backbone.{k}': v for k, v in sd.items()}
    checked = {k: v for k, v in sd.items() if not (converts_itself and k.startswith('backbone.'))}
    mismatched = _shape_mismatches(checked, own)
    tolerated = [m for m in mismatched if _CLASS_LAYERS.match(m)]
    fatal = [m for m in mismatched if not _CLASS_LAYERS.match(m)]
    if fatal:
        raise CheckpointMismatchError(
            f'the checkpoint does not fit this {type(model).__name__}: {len(fatal)} tensors differ in shape, e.g. '
            + '; '.join(fatal[:4])
            + '. It was trained with another config (backbone size, embed_dims, '
            'num_queries, levels): use the config it was trained with.'
        )
    matched = [k for k in own if k in sd]
    backbone_only = bool(matched) and all(k.startswith('backbone.') for k in sd)
    if len(matched) < MIN_MATCH * len(own) and not backbone_only:
        raise CheckpointMismatchError(
            f'the checkpoint holds only {len(matched)} of the {len(own)} tensors of this {type(model).__name__} '
            f'(first checkpoint keys: {sorted(sd)[:3] or "none"}; model keys: {sorted(own)[:3]}). It is not a '
            'checkpoint of this detector: pass one written by training this config (work_dirs/.../epoch_N.pth).'
        )
    return tolerated


class FitsDetectorCheckpoints:
    """A detector that checks every state dict loaded into it (``load_from``, ``--resume``, ``mim test``, inference)
    with :func:`fit_detector_checkpoint`, tolerating classification layers of another class set and tensors the
    checkpoint lacks (fine-tuning, from another detector too) and remembering both, so that a test or an inference
    can refuse them (:meth:`refuse_for_testing`). Call :meth:`check_loaded_checkpoints` at the end of
    ``__init__``."""

    def check_loaded_checkpoints(self) -> None:
        self.class_layers_differ: list[str] = []
        self.missing_from_checkpoint: list[str] = []
        self.checkpoint_num_classes: int | None = None
        self._register_load_state_dict_pre_hook(self._check_fit_on_load)

    def _check_fit_on_load(self, state_dict: dict, prefix: str, *args) -> None:
        tolerated = fit_detector_checkpoint(self, state_dict, prefix)
        self.class_layers_differ = tolerated  # fine-tuning tolerates them; testing and inference do not
        # the backbone's own tensors are checked by the backbone, in whichever of its layouts they come
        own_backbone = isinstance(getattr(self, 'backbone', None), FitsCheckpoints)
        self.missing_from_checkpoint = [
            k
            for k in self.state_dict()
            if f'{prefix}{k}' not in state_dict and not (own_backbone and k.startswith('backbone.'))
        ]
        bias = state_dict.get(f'{prefix}bbox_head.cls_branches.0.bias')
        self.checkpoint_num_classes = int(bias.shape[0]) if bias is not None else None
        if tolerated:
            print_log(
                f'classification layers differ in size (another class set; they keep their initialisation): '
                f'{"; ".join(tolerated)}',
                logger='current',
                level=30,
            )

    def refuse_for_testing(self, checkpoint) -> None:
        """Raise unless the last loaded checkpoint holds every tensor of this model, with this model's number of
        classes: a test or an inference would otherwise score with layers that were never trained (a checkpoint of
        another detector, DINO's denoising embedding and query embedding missing from a Deformable DETR's) or score
        every class as another.

        Raises:
            CheckpointMismatchError: naming what differs and what to do.
        """
        if self.class_layers_differ:
            theirs = self.checkpoint_num_classes
            raise CheckpointMismatchError(
                f'{checkpoint} classifies {theirs} classes, this config {self.bbox_head.num_classes} '
                f'({self.class_layers_differ[0]}): test and infer with the config it was trained with, or set '
                f"model.bbox_head.num_classes={theirs} and the datasets' metainfo.classes to its classes"
            )
        if self.missing_from_checkpoint:
            missing = self.missing_from_checkpoint
            raise CheckpointMismatchError(
                f'{checkpoint} lacks {len(missing)} of the {len(self.state_dict())} tensors of this '
                f'{type(self).__name__} (e.g. {", ".join(missing[:3])}): it is a checkpoint of another detector, '
                'and a test or an inference would run those layers untrained. Test and infer with the config it '
                'was trained with; to start this detector from it, train (load_from) first'
            )
