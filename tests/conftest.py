import pytest
import torch

import pit_det  # noqa: F401  (registers PiT, allow-lists mmengine checkpoint classes)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def relayout(sd: dict, layout: str) -> dict:
    """The same PiT weights (timm >= 0.9 keys) in another layout: ``official`` (``pools.{i-1}``), ``timm-legacy``
    (``transformers.{i-1}.pool``) or ``timm`` (unchanged)."""
    out = {}
    for k, v in sd.items():
        if layout != 'timm' and k.startswith(('transformers.1.pool.', 'transformers.2.pool.')):
            i, rest = int(k.split('.')[1]), k.split('.pool.', 1)[1]
            k = f'pools.{i - 1}.{rest}' if layout == 'official' else f'transformers.{i - 1}.pool.{rest}'
        out[k] = v
    return out
