"""The one guard of the optional packages of deployment (the ``export`` extra): onnx, onnxruntime, openvino, nncf."""

from __future__ import annotations

import importlib


class MissingExtraError(ImportError):
    """An optional package of deployment is not installed; the message names it and the extra that brings it."""


def require(*names: str, purpose: str):
    """The modules ``names`` (one module, or a tuple of them), or an error that says ``purpose`` (``'INT8
    needs'``) and the missing package.

    Raises:
        MissingExtraError: naming the missing package and ``pip install "pit-det[export]"``.
    """
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:
            raise MissingExtraError(f'{purpose} {name} ({exc}): pip install "pit-det[export]"') from None
    return modules[0] if len(modules) == 1 else tuple(modules)
