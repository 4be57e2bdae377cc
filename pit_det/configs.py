"""Where pit-det's configs are, and a config found by name or by path.

A checkout keeps them in ``configs/``; a wheel carries them under ``pit_det/.mim/configs`` (with ``tools/`` and
``model-index.yml``, as OpenMMLab packages do), which is also where ``mim train pit_det NAME`` and ``mim search
pit_det`` look. Every command that takes a config accepts ``pit_s_deformable_detr`` as well as a path.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CHECKOUT_CONFIGS = PACKAGE.parent / 'configs'
INSTALLED_CONFIGS = PACKAGE / '.mim' / 'configs'


class ConfigNotFoundError(FileNotFoundError):
    """Neither a file nor the name of a config of ours."""


def config_root() -> Path:
    """``configs/`` of the checkout this package runs from, else the copy the wheel installed."""
    return CHECKOUT_CONFIGS if CHECKOUT_CONFIGS.is_dir() else INSTALLED_CONFIGS


def config_names() -> list[str]:
    """The names of our configs (``_base_`` left out), as ``find_config`` accepts them."""
    root = config_root()
    if not root.is_dir():
        return []
    return sorted(p.stem for p in root.rglob('*.py') if '_base_' not in p.relative_to(root).parts)


def find_config(name: str | Path) -> Path:
    """``name`` if it is a file; else the config of ours called ``name`` (with or without ``.py``, with or without
    its sub-folder: ``pit_s_deformable_detr``, ``demo/deformable-detr_pit-ti_synthetic_cpu.py``). A name with another
    suffix (``pit_s_deformable_detr.pth``) names no config."""
    path = Path(name)
    if path.is_file():
        return path
    if path.suffix not in ('', '.py'):  # a checkpoint's name given for the config must not run the config
        raise ConfigNotFoundError(
            f'config {name}: no such file, and a config is a Python file (.py): give a config '
            f'path or name, e.g. {path.stem}'
        )
    root = config_root()
    relative = path.with_suffix('.py')
    if relative.parts[:1] == ('configs',):  # configs/x.py typed outside the checkout
        relative = Path(*relative.parts[1:])
    found = []
    if root.is_dir() and not path.is_absolute():
        for candidate in sorted(root.rglob(relative.name)):
            parts = candidate.relative_to(root).parts
            if '_base_' not in parts and parts[-len(relative.parts) :] == relative.parts:
                found.append(candidate)
    if len(found) == 1:
        return found[0]
    if found:
        raise ConfigNotFoundError(
            f'config {name}: {len(found)} configs of that name ({", ".join(map(str, found))}): give its path'
        )
    names = config_names()
    close = [n for n in names if path.stem.replace('-', '_') in n.replace('-', '_')]
    hint = (
        f'; did you mean {", ".join(close[:3])}?'
        if close
        else f"; pit-det's configs (in {root}): {', '.join(names)}"
        if names
        else f'; no configs of pit-det were found in {root}: reinstall pit-det'
    )
    raise ConfigNotFoundError(f'config {name}: no such file, and no config of pit-det of that name{hint}')
