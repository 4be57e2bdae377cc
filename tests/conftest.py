import pytest
import torch

import pit_det  # noqa: F401  (registers PiT, allow-lists mmengine checkpoint classes)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
