"""The ViT-S baseline backbone: timm's ViT held as it is, three taps, a simple pyramid, checked weights."""

import pytest
import timm
import torch
from mmengine.runner import load_checkpoint

from pit_det.models import CheckpointMismatchError, PiT, ViTPyramid


@pytest.fixture(scope='module')
def deit(tmp_path_factory):
    """A DeiT-S in timm's layout (random weights, as in the hub's checkpoint) and its file."""
    ref = timm.create_model(
        'deit_small_patch16_224', pretrained=False, dynamic_img_size=True, dynamic_img_pad=True
    ).eval()
    path = tmp_path_factory.mktemp('deit') / 'deit_small.pth'
    torch.save(ref.state_dict(), path)
    return ref, path


@pytest.mark.parametrize('size', [(224, 224), (400, 666)])
def test_taps_equal_timm(deit, size):
    ref, path = deit
    model = ViTPyramid(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert model.load_report.loaded == model.load_report.total == 148  # every ViT tensor up to block 12
    assert sorted(model.load_report.dropped) == ['head.bias', 'head.weight', 'norm.bias', 'norm.weight']
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        ours = model.eval().taps(x)
        theirs = ref.forward_intermediates(x, indices=[3, 7, 11], intermediates_only=True)
        pyramid = model(x)
    for a, b in zip(ours, theirs, strict=True):
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-5
    h, w = -(-size[0] // 16), -(-size[1] // 16)  # padded to a multiple of 16
    assert [tuple(p.shape[-2:]) for p in pyramid] == [(2 * h, 2 * w), (h, w), (-(-h // 2), -(-w // 2))]
    assert model.out_channels == (384, 384, 384) and model.strides == (8, 16, 32)


def test_another_models_checkpoint_is_refused(tmp_path):
    pit = PiT(arch='s')
    torch.save(pit.state_dict(), tmp_path / 'pit_s.pth')
    with pytest.raises(CheckpointMismatchError, match='no ViT keys'):
        load_checkpoint(ViTPyramid(), str(tmp_path / 'pit_s.pth'))
    base = timm.create_model('vit_base_patch16_224', pretrained=False)
    torch.save(base.state_dict(), tmp_path / 'vit_b.pth')
    with pytest.raises(
        CheckpointMismatchError,
        match=r'does not fit this ViT \(arch deit_small_patch16_224\).*\(768, 3, 16, 16\) vs model '
        r'\(384, 3, 16, 16\)',
    ):
        load_checkpoint(ViTPyramid(), str(tmp_path / 'vit_b.pth'))


def test_frozen_stages_and_every_trainable_parameter_gets_a_gradient():
    model = ViTPyramid(frozen_stages=1, with_cp=True, drop_path_rate=0.0)  # no block skipped at random
    model.init_weights()
    model.train()
    sum(o.mean() for o in model(torch.rand(1, 3, 64, 80))).backward()
    params = dict(model.named_parameters())
    assert not params['vit.pos_embed'].requires_grad and not params['vit.blocks.3.mlp.fc2.weight'].requires_grad
    assert params['vit.blocks.4.attn.qkv.weight'].requires_grad
    missing = [n for n, p in params.items() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert missing == []
    assert len(model.vit.blocks) == 12 and isinstance(model.vit.head, torch.nn.Identity)
    with pytest.raises(ValueError, match='three increasing'):
        ViTPyramid(out_indices=(7, 3, 11))
