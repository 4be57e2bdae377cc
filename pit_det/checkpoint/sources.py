"""Where weights come from: local files, ``hf-hub:`` tags and URLs, read through mmengine's ``CheckpointLoader``.

Every checkpoint, whoever asks for it, is read through mmengine's ``CheckpointLoader``: the backbone's
``init_cfg=dict(type='Pretrained', checkpoint=...)``, mmdet's ``load_from``, ``--resume``, ``mim test``,
``pit-det-infer`` and ``pit-det-convert``. This module holds three sources, each read weights-only, which
:mod:`pit_det.extensions` registers there (:data:`LOADERS`):

* local paths, with a clear error for a missing, empty, truncated or foreign file;
* ``hf-hub:ORG/NAME`` (timm's spelling), downloaded and cached by huggingface_hub (``model.safetensors``, else
  ``pytorch_model.bin``) under ``HF_HUB_CACHE`` (default ``$HF_HOME/hub``); ``HF_HUB_OFFLINE=1`` uses the cache only;
* ``http://`` and ``https://`` URLs, downloaded by torch.hub into ``$TORCH_HOME/hub/checkpoints`` with the hash
  prefix of the file name checked (``name-<sha256 prefix>.pth``), a name without one in a folder keyed by the whole
  URL (:func:`url_cache_path`); nothing partial or refused stays in the cache.

Weights that are not cached are probed once (:func:`unavailable_reason`) before any download, so that no network
means one message at once, the same in every entry point. In a distributed run rank 0 downloads, the other ranks wait
at a barrier and read the cache. What a state dict then has to fit is :mod:`pit_det.checkpoint.matching`'s concern.
"""

from __future__ import annotations

import os
import os.path as osp
import pickle
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import torch


class CheckpointReadError(ValueError):
    """A checkpoint file cannot be read (empty, truncated, not a PyTorch file, or refused as unsafe)."""


class WeightsUnavailableError(FileNotFoundError):
    """Weights from a hub or URL are neither cached nor downloadable; the message says the ways out."""


REMOTE_PREFIXES = ('hf-hub:', 'http://', 'https://')


def is_remote(source: str | Path) -> bool:
    """Whether ``source`` is an ``hf-hub:`` tag or a URL (anything else is a local path)."""
    return str(source).startswith(REMOTE_PREFIXES)


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
        raise CheckpointReadError(
            f'checkpoint {path} is empty (0 bytes): the download or save did not finish; fetch or save it again'
        )
    with open(path, 'rb') as f:
        magic = f.read(2)
    if magic[:2] != b'PK' and magic[:1] != b'\x80':  # neither torch's zip format nor a (legacy) pickle
        raise CheckpointReadError(
            f'checkpoint {path} is not a readable PyTorch file (it starts with {magic!r}, not '
            'a zip archive or a pickle: a JSON, image or text file?): give the .pth file '
            'written by training or by pit-det-convert'
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if 'GLOBAL' in line), '')
        raise CheckpointReadError(
            f'checkpoint {path} was refused: Weights only load failed, it holds objects other than tensors and '
            f'plain containers ({detail or str(exc).splitlines()[0]}). It may run code when loaded; use a '
            'checkpoint from a source you trust, re-saved as a plain state dict.'
        ) from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, IndexError, ... for a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointReadError(
            f'checkpoint {path} is not a readable PyTorch file ({first}): it is truncated or '
            'of another format; fetch or save it again'
        ) from None


def load_from_local(filename: str, map_location=None) -> dict:
    """mmengine ``CheckpointLoader`` scheme for local paths (prefix ``''``): :func:`read_checkpoint`."""
    return read_checkpoint(filename, map_location)


def _log_resolved(source: str, path: str) -> None:
    """The file a tag or URL resolved to, in the run's log (mmengine logs the source alone)."""
    from mmengine.logging import print_log

    print_log(f'weights {source}: {path}', logger='current')


HF_PREFIX = REMOTE_PREFIXES[0]
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
            path = try_to_load_from_cache(source[len(HF_PREFIX) :], name)
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
    return (
        f'weights {source} are not in {where} and cannot be downloaded ({reason}). Two ways out: fetch them on a '
        f'machine with network access (e.g. `pit-det-convert {source} --out pit.pth` there) and copy that cache folder '
        'here; or convert a local file with `pit-det-convert SRC --out data/pretrained/NAME.pth` and pass its path '
        '(--cfg-options model.backbone.init_cfg.checkpoint=PATH).'
    )


def _download_hf(source: str) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo = source[len(HF_PREFIX) :]
    problem = unavailable_reason(source)  # one fast probe: huggingface_hub would retry each file five times offline
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
    _log_resolved(filename, path)
    return checkpoint


def _download_url(url: str) -> str:
    """The cached file of ``url``, downloaded by torch.hub (hash prefix checked) unless cached."""
    import torch.hub

    path = url_cache_path(url)
    if osp.isfile(path):
        return path
    problem = unavailable_reason(url)
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
        raise CheckpointReadError(
            f'{url} was refused: {exc}; the file name says the sha256 of its content starts '
            f'with {match.group(1) if match else "?"}: the download was truncated or the file '
            'is another one. Nothing was kept.'
        ) from None
    except http.client.HTTPException as exc:
        raise CheckpointReadError(
            f'{url}: the download broke off ({type(exc).__name__}); nothing was kept, try again.'
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise WeightsUnavailableError(unavailable_message(url, str(getattr(exc, 'reason', exc)))) from None


def load_from_http(filename: str, map_location=None) -> dict:
    """mmengine ``CheckpointLoader`` scheme for URLs: torch.hub's cached download with the hash prefix checked."""
    path = _rank0_first(lambda: _fetch_url(filename))
    try:
        checkpoint = read_checkpoint(path, map_location)
    except CheckpointReadError:
        _forget(path)  # a refused file must not be found in the cache next time
        raise
    _log_resolved(filename, path)
    return checkpoint


# the CheckpointLoader schemes: prefix -> loader ('' and the URLs replace mmengine's own local and http loaders)
LOADERS = {'': load_from_local, HF_PREFIX: load_from_hf_hub, ('http://', 'https://'): load_from_http}


def unavailable_reason(source: str) -> str | None:
    """Why ``source`` cannot be loaded now (not cached, offline or unreachable), or None; no download.

    ``torchvision://NAME`` is checked as the URL torchvision gives for it.
    """
    if source.startswith('torchvision://'):
        from mmengine.runner.checkpoint import get_torchvision_models

        url = get_torchvision_models().get(source[len('torchvision://') :])
        if url is None:
            return f'backbone weights {source}: torchvision has no such model'
        problem = unavailable_reason(url)
        return problem.replace(f'weights {url}', f'weights {source} ({url})', 1) if problem else None
    if not is_remote(source):
        return None if osp.isfile(source) else missing_weights_message(source)
    if cached_file(source):
        return None
    if source.startswith(HF_PREFIX):
        from huggingface_hub import constants

        if constants.is_offline_mode():
            return unavailable_message(source, 'HF_HUB_OFFLINE is set')
        url = f'{constants.ENDPOINT}/api/models/{source[len(HF_PREFIX) :]}'
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
    return (
        f"PiT pretrained weights not found at {path!r}. The configs load timm's ImageNet weights by their tag "
        '(hf-hub:timm/pit_s_224.in1k); to use a file instead, convert it with `python tools/convert_checkpoint.py '
        'SRC --out data/pretrained/pit_s.pth` (or `pit-det-convert`; SRC may be a file, a tag or a URL) and point the '
        'config at it (--cfg-options model.backbone.init_cfg.checkpoint=PATH). To train from scratch on purpose, '
        'pass --cfg-options model.backbone.init_cfg=None.'
    )
