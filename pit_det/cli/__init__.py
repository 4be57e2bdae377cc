"""Command-line entry points; each is also a thin script in ``tools/``."""
from __future__ import annotations

import argparse


def parser_from_doc(doc: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """A parser whose description is the first line of ``doc`` and whose epilog is the rest (or ``epilog``), kept
    as written."""
    return argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=epilog if epilog is not None else doc.split('\n\n', 1)[1])


def config_file(value: str) -> str:
    """An argparse ``type``: a config path, or the name of one of pit-det's configs (``pit_s_deformable_detr``)
    found in the checkout or the installed package, from any folder."""
    from ..configs import ConfigNotFoundError, find_config
    try:
        return str(find_config(value))
    except ConfigNotFoundError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
