"""Weights: where they are read from, which layout they are in, and whether they fit, in one path.

Every checkpoint, whoever asks for it, is read through mmengine's ``CheckpointLoader``: the backbone's
``init_cfg=dict(type='Pretrained', checkpoint=...)``, mmdet's ``load_from``, ``--resume``, ``mim test``,
``pit-det-infer`` and ``pit-det-convert``. This module registers three sources there, each read weights-only:

* local paths, with a clear error for a missing, empty, truncated or foreign file;
* ``hf-hub:ORG/NAME`` (timm's spelling), downloaded and cached by huggingface_hub (``model.safetensors``, else
  ``pytorch_model.bin``) under ``HF_HUB_CACHE`` (default ``$HF_HOME/hub``); ``HF_HUB_OFFLINE=1`` uses the cache only;
* ``http://`` and ``https://`` URLs, downloaded by torch.hub into ``$TORCH_HOME/hub/checkpoints`` with the hash
  prefix of the file name checked (``name-<sha256 prefix>.pth``), a name without one in a folder keyed by the whole
  URL (:func:`url_cache_path`); nothing partial or refused stays in the cache.

In a distributed run rank 0 downloads, the other ranks wait at a barrier and read the cache.
Every state dict that reaches a model then passes the load-state-dict pre-hooks of :class:`~pit_det.models.PiT`
(layout conversion, position-embedding resize, shape check) and of the detector (:func:`check_detector_fit`):
nothing loads half a model with warnings only.

Three layouts exist for PiT's weights (everything but the pooling layers is named alike):

* official naver-ai: ``pools.{0,1}.{conv,fc}.*``
* timm >= 0.9 (this package's own layout): ``transformers.{1,2}.pool.*``
* timm < 0.9: ``transformers.{0,1}.pool.*``: the same key name as timm >= 0.9 means a different layer.

:func:`convert_pit_checkpoint` maps any of them (possibly nested under ``state_dict``/``model`` and prefixed with
``module.``/``backbone.``) to the timm >= 0.9 layout without the classifier (``norm``, ``head``, ``head_dist``).
"""
from __future__ import annotations

import os
import os.path as osp
import pickle
import re
import urllib.error
import urllib.parse
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from mmengine.runner import CheckpointLoader
from torch import nn

_DROPPED_PREFIXES = ('norm.', 'head.', 'head_dist.')
_POOL_KEY = re.compile(r'^(pools\.(\d+)\.|transformers\.(\d+)\.pool\.)')
MIN_MATCH = 0.5  # a checkpoint must hold at least this fraction of a model's tensors
# Layers whose size is the number of classes: a checkpoint trained on another class set differs only there, which
# is how a detector is fine-tuned on a new dataset (those layers keep their initialisation, with a warning).
_CLASS_LAYERS = re.compile(r'^bbox_head\.cls_branches\.')


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into; the message names what differs."""


class CheckpointReadError(ValueError):
    """A checkpoint file cannot be read (empty, truncated, not a PyTorch file, or refused as unsafe)."""


class WeightsUnavailableError(FileNotFoundError):
    """Weights from a hub or URL are neither cached nor downloadable; the message says the ways out."""


@dataclass
class ConversionReport:
    layout: str
    renamed: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    loaded: int = 0
    total: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    origin: str | None = None  # where the tensors were read from (see :func:`origin_of`)

    def summary(self) -> str:
        text = (f'{self.origin}: ' if self.origin else '') + (
            f'layout {self.layout}, {self.loaded}/{self.total} tensors loaded, {len(self.renamed)} renamed, '
            f'{len(self.dropped)} dropped (classifier or unused stages)')
        if self.missing:
            text += f'; missing: {self.missing}'
        if self.unexpected:
            text += f'; unexpected: {self.unexpected}'
        return text


# ----------------------------------------------------------------------------------------------------- reading
def read_checkpoint(path: str | Path, map_location='cpu') -> dict:
    """Read a local checkpoint with ``weights_only=True``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointReadError: a folder, an empty, truncated or non-PyTorch file, or a pickle that holds code.
    """
    path = Path(osp.expanduser(str(path)))
    if not path.exists():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if not path.is_file():
        raise CheckpointReadError(f'checkpoint {path} is a folder, not a file: give the .pth file inside it')
    if path.stat().st_size == 0:
        raise CheckpointReadError(f'checkpoint {path} is empty (0 bytes): the download or save did not finish; '
                                  'fetch or save it again')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if 'GLOBAL' in line), '')
        raise CheckpointReadError(
            f'checkpoint {path} was refused: Weights only load failed, it holds objects other than tensors and '
            f'plain containers ({detail or str(exc).splitlines()[0]}). It may run code when loaded; use a '
            'checkpoint from a source you trust, re-saved as a plain state dict.') from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, IndexError, ... for a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointReadError(f'checkpoint {path} is not a readable PyTorch file ({first}): it is truncated or '
                                  'of another format; fetch or save it again') from None


# Where each tensor read by the loaders below came from, so that the log line of the model that finally loads it
# names the source and the file (a tag or URL and the cached file it resolved to). Keyed by id, checked by weakref.
_ORIGINS: dict[int, tuple[weakref.ref, str]] = {}


def _tensors(obj):
    """Every tensor of ``obj``, a tensor or a dict nesting them (``{'state_dict': {...}}``, ``{'model': {...}}``)."""
    stack = [obj]
    while stack:
        obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, dict):
            stack.extend(obj.values())


def _remember_origin(checkpoint, origin: str):
    """Tag every tensor of a checkpoint just read with ``origin``; return the checkpoint."""
    for key in [k for k, (ref, _) in _ORIGINS.items() if ref() is None]:
        del _ORIGINS[key]
    _ORIGINS.update((id(tensor), (weakref.ref(tensor), origin)) for tensor in _tensors(checkpoint))
    return checkpoint


def origin_of(state_dict: dict) -> str | None:
    """``'SOURCE (FILE)'`` (or the path of a local file) the tensors of ``state_dict`` were read from, if known."""
    for tensor in _tensors(state_dict):
        ref, origin = _ORIGINS.get(id(tensor), (None, None))
        if ref is not None and ref() is tensor:
            return origin
    return None


def load_from_local(filename: str, map_location=None) -> dict:
    """mmengine ``CheckpointLoader`` scheme for local paths (prefix ``''``): :func:`read_checkpoint`."""
    return _remember_origin(read_checkpoint(filename, map_location), osp.abspath(osp.expanduser(filename)))


CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)

HF_PREFIX = 'hf-hub:'
HF_FILES = ('model.safetensors', 'pytorch_model.bin')


def _rank0_first(fetch):
    """``fetch()`` on global rank 0, then, after a barrier, on the other ranks (which then find it cached)."""
    from mmengine.dist import barrier, get_dist_info
    rank, world_size = get_dist_info()
    result = fetch() if rank == 0 else None
    if world_size > 1:
        barrier()
    return fetch() if rank > 0 else result


def url_cache_path(url: str) -> str:
    """Where a downloaded URL is kept, under torch.hub's ``$TORCH_HOME/hub/checkpoints``.

    A file name with a sha256 prefix (``name-<hex>.pth``, checked on download) is kept there under its name, as
    torch.hub keeps it: its content is fixed by the name. Any other file is kept in a folder named for the whole URL
    (``url-<sha256 of the URL>/<file name>``): two URLs ending in the same file name never share a cached file.
    """
    import hashlib

    import torch.hub
    name = osp.basename(urllib.parse.urlparse(url).path)
    folder = osp.join(torch.hub.get_dir(), 'checkpoints')
    if torch.hub.HASH_REGEX.search(name):
        return osp.join(folder, name)
    return osp.join(folder, f'url-{hashlib.sha256(url.encode()).hexdigest()[:16]}', name)


def hf_cache_dir() -> str:
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def cached_file(source: str) -> str | None:
    """The local file a source resolves to without downloading, or None if it is not cached (or absent)."""
    if source.startswith(HF_PREFIX):
        from huggingface_hub import try_to_load_from_cache
        for name in HF_FILES:
            path = try_to_load_from_cache(source[len(HF_PREFIX):], name)
            if isinstance(path, str):
                return path
        return None
    if source.startswith(('http://', 'https://')):
        path = url_cache_path(source)
        return path if osp.isfile(path) else None
    return source if osp.isfile(source) else None


def unavailable_message(source: str, reason: str) -> str:
    if source.startswith(HF_PREFIX):
        where = f'the Hugging Face cache {hf_cache_dir()} (set by HF_HUB_CACHE or HF_HOME)'
    else:
        where = f"torch.hub's cache {osp.dirname(url_cache_path(source))} (set by TORCH_HOME)"
    return (f'weights {source} are not in {where} and cannot be downloaded ({reason}). Two ways out: fetch them on a '
            f'machine with network access (e.g. `pit-det-convert {source} pit.pth` there) and copy that cache folder '
            'here; or convert a local file with `pit-det-convert SRC data/pretrained/NAME.pth` and pass its path '
            '(--cfg-options model.backbone.init_cfg.checkpoint=PATH).')


def _download_hf(source: str) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo = source[len(HF_PREFIX):]
    problem = weights_problem(source)  # one fast probe: huggingface_hub would retry each file five times offline
    if problem:
        raise WeightsUnavailableError(problem)
    reason = ''
    for name in HF_FILES:
        try:
            return hf_hub_download(repo, name)
        except LocalEntryNotFoundError as exc:  # offline, or the hub unreachable, and not cached
            reason = str(exc).strip().splitlines()[0]
        except EntryNotFoundError:  # the repository has no such file: try the next
            reason = f'{repo} has none of {", ".join(HF_FILES)}'
        except OSError as exc:  # repository not found, HTTP errors, connection errors
            raise WeightsUnavailableError(unavailable_message(source, str(exc).strip().splitlines()[0])) from None
    raise WeightsUnavailableError(unavailable_message(source, reason))


def load_from_hf_hub(filename: str, map_location=None) -> dict:
    """mmengine ``CheckpointLoader`` scheme ``hf-hub:``: huggingface_hub's cached download, read weights-only."""
    path = _rank0_first(lambda: _download_hf(filename))
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        checkpoint = load_file(path, device='cpu' if map_location is None else str(map_location))
    else:
        checkpoint = read_checkpoint(path, map_location)
    return _remember_origin(checkpoint, f'{filename} ({path})')


def _download_url(url: str) -> str:
    """The cached file of ``url``, downloaded by torch.hub (hash prefix checked) unless cached."""
    import torch.hub

    path = url_cache_path(url)
    if osp.isfile(path):
        return path
    problem = weights_problem(url)
    if problem:
        raise WeightsUnavailableError(problem)
    os.makedirs(osp.dirname(path), exist_ok=True)
    match = torch.hub.HASH_REGEX.search(osp.basename(path))
    try:  # torch.hub writes to a temporary file, checks the hash and renames; it removes the file on any failure
        torch.hub.download_url_to_file(url, path, match.group(1) if match else None, progress=False)
    except BaseException:
        _forget(path)
        raise
    return path


def _forget(path: str) -> None:
    """Remove a cached download and its URL folder when that is left empty."""
    if osp.isfile(path):
        os.remove(path)
    folder = osp.dirname(path)
    if osp.basename(folder).startswith('url-') and osp.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)


def _fetch_url(url: str) -> str:
    """:func:`_download_url` with its failures as this module's errors."""
    import http.client

    import torch.hub
    path = url_cache_path(url)
    match = torch.hub.HASH_REGEX.search(osp.basename(path))
    try:
        return _download_url(url)
    except WeightsUnavailableError:
        raise
    except RuntimeError as exc:
        raise CheckpointReadError(f'{url} was refused: {exc}; the file name says the sha256 of its content starts '
                                  f'with {match.group(1) if match else "?"}: the download was truncated or the file '
                                  'is another one. Nothing was kept.') from None
    except http.client.HTTPException as exc:
        raise CheckpointReadError(f'{url}: the download broke off ({type(exc).__name__}); nothing was kept, try '
                                  'again.') from None
    except (urllib.error.URLError, OSError) as exc:
        raise WeightsUnavailableError(unavailable_message(url, str(getattr(exc, 'reason', exc)))) from None


def load_from_http(filename: str, map_location=None) -> dict:
    """mmengine ``CheckpointLoader`` scheme for URLs: torch.hub's cached download with the hash prefix checked."""
    path = _rank0_first(lambda: _fetch_url(filename))
    try:
        return _remember_origin(read_checkpoint(path, map_location), f'{filename} ({path})')
    except CheckpointReadError:
        _forget(path)  # a refused file must not be found in the cache next time
        raise


CheckpointLoader.register_scheme(prefixes=HF_PREFIX, loader=load_from_hf_hub, force=True)
CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), loader=load_from_http, force=True)


def weights_problem(source: str) -> str | None:
    """Why ``source`` cannot be loaded now (not cached, offline or unreachable), or None; no download.

    ``torchvision://NAME`` is checked as the URL torchvision gives for it.
    """
    if source.startswith('torchvision://'):
        from mmengine.runner.checkpoint import get_torchvision_models
        url = get_torchvision_models().get(source[len('torchvision://'):])
        if url is None:
            return f'backbone weights {source}: torchvision has no such model'
        problem = weights_problem(url)
        return problem.replace(f'weights {url}', f'weights {source} ({url})', 1) if problem else None
    if not source.startswith((HF_PREFIX, 'http://', 'https://')):
        return None if osp.isfile(source) else missing_weights_message(source)
    if cached_file(source):
        return None
    if source.startswith(HF_PREFIX):
        from huggingface_hub import constants
        if constants.is_offline_mode():
            return unavailable_message(source, 'HF_HUB_OFFLINE is set')
        url = f'{constants.ENDPOINT}/api/models/{source[len(HF_PREFIX):]}'
    else:
        url = source
    try:
        urllib.request.urlopen(urllib.request.Request(url, method='HEAD'), timeout=5).close()
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 401):
            return unavailable_message(source, f'{url}: HTTP {exc.code}, no such model or file')
    except (urllib.error.URLError, OSError) as exc:
        return unavailable_message(source, f'{url} unreachable: {getattr(exc, "reason", exc)}')
    return None


def missing_weights_message(path: str | None) -> str:
    return (f'PiT pretrained weights not found at {path!r}. The configs load timm\'s ImageNet weights by their tag '
            '(hf-hub:timm/pit_s_224.in1k); to use a file instead, convert it with `python tools/convert_checkpoint.py '
            'SRC data/pretrained/pit_s.pth` (or `pit-det-convert`; SRC may be a file, a tag or a URL) and point the '
            "config at it (--cfg-options model.backbone.init_cfg.checkpoint=PATH). To train from scratch on purpose, "
            'pass --cfg-options model.backbone.init_cfg=None.')


# ----------------------------------------------------------------------------------------------------- layouts
def extract_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """Unwrap ``{'state_dict': ...}`` / ``{'model': ...}`` and strip ``module.``; keep ``backbone.*`` if present."""
    sd = checkpoint
    for key in ('state_dict', 'model'):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise CheckpointMismatchError(f'expected a state dict, found {type(sd).__name__}')
    sd = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in sd.items()}
    if any(k.startswith('backbone.') for k in sd):
        sd = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    return sd


def detect_layout(sd: dict[str, torch.Tensor]) -> str:
    """``'official'``, ``'timm'`` (>= 0.9), ``'timm-legacy'`` (< 0.9), or ``'unpooled'`` when no pooling key exists.

    Raises:
        CheckpointMismatchError: when the keys are not those of a PiT.
    """
    if not any(k.startswith(('patch_embed.', 'pools.', 'transformers.')) for k in sd):
        sample = ', '.join(sorted(sd)[:5])
        raise CheckpointMismatchError(f'no PiT keys (patch_embed.*, transformers.*, pools.*) found; first keys: '
                                      f'{sample or "none"}. Is this a PiT checkpoint?')
    if any(k.startswith('pools.') for k in sd):
        return 'official'
    pooled = {int(m.group(3)) for k in sd if (m := _POOL_KEY.match(k)) and m.group(3) is not None}
    if not pooled:
        return 'unpooled'
    if 0 in pooled:
        return 'timm-legacy'
    if 2 in pooled:
        return 'timm'
    # only transformers.1.pool: timm >= 0.9 maps stage 0 -> 1 there, timm < 0.9 maps stage 1 -> 2
    out_dim = sd['transformers.1.pool.conv.weight'].shape[0]
    stage1 = sd.get('transformers.1.blocks.0.norm1.weight')
    if stage1 is not None and stage1.shape[0] == out_dim:
        return 'timm'
    return 'timm-legacy'


def convert_pit_checkpoint(state_dict: dict, num_stages: int = 3,
                           report: ConversionReport | None = None) -> dict[str, torch.Tensor]:
    """Convert a PiT state dict of any known layout to this package's layout (timm >= 0.9, no classifier).

    Args:
        state_dict: a state dict or a checkpoint holding one (see :func:`extract_state_dict`).
        num_stages: keep only stages below this index (a backbone built for fewer outputs).
        report: filled with the layout found and every renamed and dropped key.

    Returns:
        A new dict; tensors are shared, not copied.
    """
    sd = extract_state_dict(state_dict)
    layout = detect_layout(sd)
    report = report if report is not None else ConversionReport(layout)
    report.layout = layout
    out = {}
    for key, value in sd.items():
        new = key
        match = _POOL_KEY.match(key)
        if match is not None and layout in ('official', 'timm-legacy'):
            index = int(match.group(2) if match.group(2) is not None else match.group(3))
            new = f'transformers.{index + 1}.pool.' + key[match.end():]
        stage = re.match(r'^transformers\.(\d+)\.', new)
        if new.startswith(_DROPPED_PREFIXES) or (stage is not None and int(stage.group(1)) >= num_stages):
            report.dropped.append(key)
            continue
        if new != key:
            report.renamed.append((key, new))
        out[new] = value
    return out


def take_prefixed(state_dict: dict, prefix: str) -> dict:
    """Remove the entries under ``prefix`` from ``state_dict`` and return them with the prefix stripped."""
    return {k[len(prefix):]: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(prefix)]}


# ------------------------------------------------------------------------------------------------------ checks
def _shape_mismatches(sd: dict, own: dict) -> list[str]:
    return [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
            for k, v in sd.items() if k in own and hasattr(v, 'shape') and v.shape != own[k].shape]


def check_backbone_fit(sd: dict, own: dict, name: str, arch: str, report: ConversionReport,
                       advice: str = 'Check that the checkpoint is of the same arch (ti/xs/s/b, distilled or not).'
                       ) -> None:
    """Raise unless ``sd`` (converted) fits the backbone whose state dict is ``own``; fill ``report``'s counts.

    Raises:
        CheckpointMismatchError: a tensor differs in shape, or less than :data:`MIN_MATCH` of ``own`` is present.
    """
    mismatched = _shape_mismatches(sd, own)
    if mismatched:
        raise CheckpointMismatchError(
            f'the checkpoint does not fit this {name} (arch {arch}): {len(mismatched)} tensors differ in shape, e.g. '
            + '; '.join(mismatched[:4]) + f'. {advice}')
    report.missing = sorted(set(own) - set(sd))
    report.unexpected = sorted(set(sd) - set(own))
    report.total = len(own)
    report.loaded = len(own) - len(report.missing)
    if report.loaded < MIN_MATCH * len(own):
        raise CheckpointMismatchError(
            f'only {report.loaded} of {len(own)} {name} tensors found in the checkpoint (layout {report.layout}); '
            f'missing e.g. {report.missing[:4]}, unexpected e.g. {report.unexpected[:4]}.')


def recognises_pit_checkpoint(sd: dict) -> bool:
    """Whether ``sd`` (unwrapped) holds PiT weights in a layout :func:`convert_pit_checkpoint` knows."""
    try:
        detect_layout(sd)
        return True
    except CheckpointMismatchError:
        return False


def check_detector_fit(model: nn.Module, state_dict: dict, prefix: str = '') -> list[str]:
    """Raise unless a detector checkpoint fits ``model``; return the class-layer mismatches it tolerates.

    A checkpoint of the backbone alone (ImageNet weights that the backbone ``recognises``, no ``backbone.``
    prefix) is moved under ``backbone.`` in ``state_dict``, so that it works as ``load_from`` too.

    The backbone's own tensors are checked by the backbone when it converts them (a PiT in another layout has other
    names and shapes); everything else must match in shape, except the classification layers (fine-tuning on
    another class set). A checkpoint holding less than :data:`MIN_MATCH` of the model's tensors is refused unless it
    is a backbone-only checkpoint (``pit-det-convert``'s output, usable as ``load_from``).

    Raises:
        CheckpointMismatchError: naming the tensors that differ, or the keys on both sides when nothing matches.
    """
    own = model.state_dict()
    keys = [k for k in state_dict if k.startswith(prefix)]
    sd = {k[len(prefix):]: state_dict[k] for k in keys}
    backbone = getattr(model, 'backbone', None)
    converts_itself = hasattr(backbone, 'converts_checkpoints')
    if sd and converts_itself and not any(k in own for k in sd) and backbone.recognises(extract_state_dict(sd)):
        # the backbone's own (ImageNet) weights given to the detector, e.g. load_from=hf-hub:...: the backbone's
        # hook converts them once they are under its prefix
        for key in keys:
            state_dict[f'{prefix}backbone.{key[len(prefix):]}'] = state_dict.pop(key)
        sd = {f'backbone.{k}': v for k, v in sd.items()}
    checked = {k: v for k, v in sd.items() if not (converts_itself and k.startswith('backbone.'))}
    mismatched = _shape_mismatches(checked, own)
    tolerated = [m for m in mismatched if _CLASS_LAYERS.match(m)]
    fatal = [m for m in mismatched if not _CLASS_LAYERS.match(m)]
    if fatal:
        raise CheckpointMismatchError(
            f'the checkpoint does not fit this {type(model).__name__}: {len(fatal)} tensors differ in shape, e.g. '
            + '; '.join(fatal[:4]) + '. It was trained with another config (backbone size, embed_dims, '
            'num_queries, levels): use the config it was trained with.')
    matched = [k for k in own if k in sd]
    backbone_only = bool(matched) and all(k.startswith('backbone.') for k in sd)
    if len(matched) < MIN_MATCH * len(own) and not backbone_only:
        raise CheckpointMismatchError(
            f'the checkpoint holds only {len(matched)} of the {len(own)} tensors of this {type(model).__name__} '
            f'(first checkpoint keys: {sorted(sd)[:3] or "none"}; model keys: {sorted(own)[:3]}). It is not a '
            'checkpoint of this detector: pass one written by training this config (work_dirs/.../epoch_N.pth).')
    return tolerated


def load_pit_weights(model: nn.Module, source: str | Path) -> ConversionReport:
    """Load PiT weights of any layout from ``source`` into ``model`` through the one loading path.

    Args:
        model: a :class:`~pit_det.models.PiT`.
        source: a checkpoint path, an ``hf-hub:`` tag or a URL (read weights-only).

    Returns:
        The report of the load (layout, renamed, dropped, loaded, missing, unexpected).

    Raises:
        FileNotFoundError: the file does not exist (the message says how to get weights).
        CheckpointReadError: the file is unreadable or unsafe.
        CheckpointMismatchError: shapes differ (an S checkpoint into a B backbone) or too little matched.
    """
    from mmengine.runner import load_checkpoint

    source = str(source)
    if '://' not in source and not source.startswith(HF_PREFIX) and not Path(source).exists():
        raise FileNotFoundError(missing_weights_message(source))
    load_checkpoint(model, str(source), map_location='cpu', strict=False, logger='current')
    return model.load_report
