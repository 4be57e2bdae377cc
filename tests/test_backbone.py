import pytest
import timm
import torch
from mmdet.registry import MODELS

from pit_det import ARCH_ZOO, PiT
from pit_det.models import convert_pit_checkpoint, load_pit_weights

ARCHS = list(ARCH_ZOO)
CHANNELS = {'ti': (64, 128, 256), 'xs': (96, 192, 384), 's': (144, 288, 576), 'b': (256, 512, 1024)}


def timm_name(arch: str) -> str:
    base, _, distilled = arch.partition('-')
    return f'pit_{base}_distilled_224' if distilled else f'pit_{base}_224'


@pytest.mark.parametrize('arch', ARCHS)
def test_shapes_odd_non_square(arch):
    model = PiT(arch=arch).eval()
    h, w = 61, 97
    with torch.no_grad():
        outs = model(torch.rand(2, 3, h, w))
    patch, stride = ARCH_ZOO[arch]['patch_size'], ARCH_ZOO[arch]['stride']
    h0, w0 = (h - patch) // stride + 1, (w - patch) // stride + 1
    expected = [(h0, w0), (-(-h0 // 2), -(-w0 // 2)), (-(-h0 // 4), -(-w0 // 4))]
    assert [tuple(o.shape[-2:]) for o in outs] == expected == model.feature_sizes(h, w)
    assert tuple(o.shape[1] for o in outs) == CHANNELS[arch.split('-')[0]] == model.out_channels
    assert all(o.shape[0] == 2 for o in outs)
    assert model.strides == tuple(stride * 2**i for i in range(3))


@pytest.mark.slow
def test_detection_resolution_sizes():
    model = PiT(arch='s').eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 800, 1333))
    assert [tuple(o.shape[-2:]) for o in outs] == [(99, 165), (50, 83), (25, 42)]
    assert model.feature_sizes(400, 666) == [(49, 82), (25, 41), (13, 21)]


@pytest.mark.parametrize('arch', ARCHS)
def test_equals_timm_and_official_layout(relayout, arch, tmp_path):
    ref = timm.create_model(timm_name(arch), pretrained=False).eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, intermediates_only=True)
    for layout, sd in (('timm', ref.state_dict()), ('official', relayout(ref.state_dict(), 'official'))):
        path = tmp_path / f'{layout}.pth'
        torch.save(sd, path)
        model = PiT(arch=arch).eval()
        load_pit_weights(model, path)
        with torch.no_grad():
            outs = model(x)
        for o, e in zip(outs, expected, strict=True):
            err = ((o - e).abs().max() / e.abs().max()).item()
            assert err < 1e-5, (layout, err)


def test_registered_and_out_indices():
    model = MODELS.build(dict(type='PiT', arch='ti', out_indices=(1, 2)))
    outs = model(torch.rand(1, 3, 64, 80))
    assert [o.shape[1] for o in outs] == [128, 256] and model.strides == (16, 32)
    assert len(PiT(arch='ti', out_indices=(0,)).transformers) == 1  # later stages are not built


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ValueError, match="unknown PiT arch 'm'.*ti, xs, s, b, ti-distilled"):
        PiT(arch='m')
    with pytest.raises(ValueError, match='missing keys'):
        PiT(arch=dict(patch_size=16, stride=8))
    with pytest.raises(ValueError, match='out_indices'):
        PiT(arch='ti', out_indices=(3,))


def test_input_smaller_than_a_patch():
    with pytest.raises(ValueError, match='at least one patch \\(14x14'):
        PiT(arch='b')(torch.rand(1, 3, 13, 200))


def test_frozen_stages_survive_train():
    model = PiT(arch='ti', frozen_stages=2, drop_rate=0.1)
    model.train()
    frozen = [
        'patch_embed.conv.weight',
        'pos_embed',
        'cls_token',
        'transformers.0.blocks.0.attn.qkv.weight',
        'transformers.1.pool.conv.weight',
        'transformers.1.blocks.5.mlp.fc2.bias',
    ]
    params = dict(model.named_parameters())
    assert all(not params[name].requires_grad for name in frozen)
    assert params['transformers.2.pool.fc.weight'].requires_grad
    assert not model.transformers[1].training and not model.pos_drop.training and model.transformers[2].training
    sum(o.sum() for o in model(torch.rand(1, 3, 48, 48))).backward()
    assert all(params[name].grad is None for name in frozen)


@pytest.mark.parametrize('arch', ['ti', 's-distilled'])
def test_every_parameter_gets_a_gradient(arch):
    model = PiT(arch=arch, drop_path_rate=0.1)
    model.init_weights()
    model.train()
    sum(o.mean() for o in model(torch.rand(2, 3, 53, 71))).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_with_cp_and_explicit_attention_match_default():
    model = PiT(arch='ti').eval()
    x = torch.rand(1, 3, 64, 96, requires_grad=True)
    ref = model(x)
    model.set_fused_attn(False)
    explicit = model(x)
    model.set_fused_attn(True)
    model.set_with_cp(True)
    checkpointed = model(x)
    for a, b, c in zip(ref, explicit, checkpointed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a, c, rtol=0, atol=0)
    g_ref = torch.autograd.grad(sum(o.sum() for o in ref), x)[0]
    g_cp = torch.autograd.grad(sum(o.sum() for o in checkpointed), x)[0]
    torch.testing.assert_close(g_ref, g_cp)


def test_pos_embed_resized_at_forward_time_and_bf16_autocast():
    model = PiT(arch='ti').eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        fp32 = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            bf16 = model(x)
        larger = model(torch.rand(1, 3, 320, 240))
    assert all(o.dtype == torch.bfloat16 for o in bf16)
    for a, b in zip(fp32, bf16, strict=True):
        assert ((a - b.float()).abs().mean() / a.abs().mean()).item() < 0.05
    assert tuple(larger[0].shape[-2:]) == (39, 29)


def test_out_norm_normalises_channels():
    model = PiT(arch='ti', out_norm=True).eval()
    out = model(torch.rand(1, 3, 64, 64))[0]
    torch.testing.assert_close(out.mean(dim=1), torch.zeros_like(out[:, 0]), atol=1e-4, rtol=0)


def test_init_cfg_pretrained_loads_and_resizes(relayout, tmp_path):
    src = PiT(arch='ti', pretrain_img_size=288)  # a foreign 35x35 grid
    src.init_weights()
    path = tmp_path / 'w.pth'
    torch.save({'state_dict': {'module.' + k: v for k, v in relayout(src.state_dict(), 'official').items()}}, path)
    model = PiT(arch='ti', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    torch.testing.assert_close(model.transformers[1].pool.conv.weight, src.transformers[1].pool.conv.weight)
    assert model.pos_embed.shape[-2:] == (27, 27)


def test_load_from_detector_checkpoint_with_foreign_layout(relayout):
    src = PiT(arch='ti')
    src.init_weights()
    detector_sd = {'backbone.' + k: v for k, v in relayout(src.state_dict(), 'official').items()}
    holder = torch.nn.Module()
    holder.backbone = PiT(arch='ti')
    result = holder.load_state_dict(detector_sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(holder.backbone.transformers[2].pool.fc.weight, src.transformers[2].pool.fc.weight)


def test_own_layout_converts_to_itself():
    src = PiT(arch='xs')
    assert convert_pit_checkpoint(src.state_dict()).keys() == src.state_dict().keys()
