"""Helpers shared across models and tools: the attention switch of PiT's and timm's transformers, one image's
data sample, the digest of a model's weights that an exported graph records."""
from __future__ import annotations

import contextlib

from torch import nn


@contextlib.contextmanager
def explicit_attention(model: nn.Module):
    """Switch fused attention (``fused_attn``, PiT's and timm's) to explicit matrices, then back.

    FLOP counters see the attention matrices, and attention extractors their probabilities, only on the explicit
    path.
    """
    switched = [m for m in model.modules() if getattr(m, 'fused_attn', None) is True]
    for module in switched:
        module.fused_attn = False
    try:
        yield
    finally:
        for module in switched:
            module.fused_attn = True


class FreezesStages:
    """A backbone whose ``_freeze_stages()`` runs again after every ``train()`` (mmdet's pattern), so that frozen
    parts stay in eval mode and without gradients."""

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self


def image_sample(height: int, width: int):
    """The data sample of one unpadded, unscaled ``height x width`` input, as a detector's ``predict`` takes it."""
    from mmdet.structures import DetDataSample
    shape = (height, width)
    return DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, batch_input_shape=shape, pad_shape=shape,
                                       scale_factor=(1.0, 1.0)))


def weights_digest(model: nn.Module) -> str:
    """sha256 of ``model``'s state dict (names, shapes, dtypes and values): what an exported file records of the
    weights it was exported from."""
    import hashlib

    import torch
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f'{name}:{tuple(tensor.shape)}:{tensor.dtype};'.encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b'')
    return digest.hexdigest()


# What an exported graph carries of its origin (ONNX metadata_props), checked when a detector runs the file.
EXPORT_METADATA = ('pit_det.config', 'pit_det.checkpoint', 'pit_det.weights_sha256', 'pit_det.num_classes',
                   'pit_det.classes', 'pit_det.input_size')


def onnxruntime_session(path, threads: int | None = None):
    """An onnxruntime session of ``path`` on the CPU (``threads``: intra-op threads, default onnxruntime's)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(f'running an exported graph needs onnxruntime ({exc}): pip install "pit-det[export]"') \
            from None
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
