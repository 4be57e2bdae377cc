"""A checkpoint file converted to another layout and written atomically: the library of ``pit-det-convert``.

The conversion itself belongs to the model whose layout it knows (PiT's: :func:`pit_det.models.convert_pit_checkpoint`);
here are the reading (any source a ``CheckpointLoader`` scheme serves, weights only), the refusal to write over the
source, and the written file's format, which works as a backbone's ``init_cfg`` and as mmdet's ``load_from``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..outputs import atomic_write, check_file_output
from .matching import ConversionReport
from .sources import cached_file, is_remote


def convert_file(
    src: str | Path,
    dst: str | Path,
    convert: Callable[..., dict],
    check: Callable[[Path], object] | None = None,
    force: bool = False,
) -> ConversionReport:
    """Read ``src`` (a file, an ``hf-hub:`` tag or a URL; weights only), convert it with
    ``convert(checkpoint, report=report)`` into a backbone state dict, write ``dst`` as
    ``{'state_dict': {'backbone.<key>': tensor}, 'meta': {...}}`` once ``check(written)`` (if given) has returned.

    Raises:
        FileNotFoundError: ``src`` is a local path that does not exist.
        OutputError: ``dst`` is ``src`` (or its cached download) or an existing file, without ``force``.
    """
    from mmengine.runner import CheckpointLoader

    src, dst = str(src), Path(dst)
    remote = is_remote(src)
    if not remote and not Path(src).exists():
        raise FileNotFoundError(f'{src} does not exist')
    source = ('cached download of SRC', cached_file(src)) if remote else ('source checkpoint (SRC)', src)
    check_file_output(dst, [source], option='--out', force=force)
    report = ConversionReport('')
    state_dict = convert(CheckpointLoader.load_checkpoint(src, map_location='cpu'), report=report)

    def write(tmp: Path) -> None:
        torch.save(
            {
                'state_dict': {f'backbone.{k}': v for k, v in state_dict.items()},
                'meta': dict(source=src, source_layout=report.layout, converter='pit-det'),
            },
            tmp,
        )
        if check is not None:
            check(tmp)

    atomic_write(dst, write)
    return report
