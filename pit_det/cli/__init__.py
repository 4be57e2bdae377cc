"""Command-line entry points; each is also a thin script in ``tools/``."""
from __future__ import annotations

import argparse


def parser_from_doc(doc: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """A parser whose description is the first line of ``doc`` and whose epilog is the rest (or ``epilog``), kept
    as written."""
    return argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=epilog if epilog is not None else doc.split('\n\n', 1)[1])
