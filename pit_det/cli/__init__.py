"""Command-line entry points; each is also a thin script in ``tools/``."""
