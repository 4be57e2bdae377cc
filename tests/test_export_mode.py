"""The detector owns its traceable form: its reference points and proposals are mmdet's numbers exactly at every
level size (one pixel included), and its export mode is a setting of its deformable attentions, undone after."""

import copy

import pytest
import torch
from mmdet.models.detectors import DeformableDETR
from mmdet.models.layers import DeformableDetrTransformerEncoder
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config

from pit_det.models.detectors import PitDetEncoder
from pit_det.ops import FusedMultiScaleDeformableAttention
from pit_det.ops.ms_deform_attn import MultiScaleDeformableAttention

# levels of one pixel high, wide or both, as a small input gives them, and ordinary ones
SHAPES = [[[7, 9], [4, 5], [2, 3], [1, 2]], [[1, 4], [1, 2], [1, 1], [1, 1]], [[13, 1], [7, 1], [4, 1], [2, 1]]]


@pytest.fixture(scope='module')
def demo_detector(demo_config):
    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(demo_config)).model)
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('shapes', SHAPES)
def test_encoder_reference_points_are_mmdets_exactly(shapes):
    spatial_shapes = torch.tensor(shapes)
    valid_ratios = torch.rand(2, len(shapes), 2) * 0.5 + 0.5
    ours = PitDetEncoder.get_encoder_reference_points(spatial_shapes, valid_ratios, 'cpu')
    theirs = DeformableDetrTransformerEncoder.get_encoder_reference_points(spatial_shapes, valid_ratios, 'cpu')
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize('shapes', SHAPES)
@pytest.mark.parametrize('masked', [False, True])
def test_two_stage_proposals_are_mmdets_exactly(demo_detector, shapes, masked):
    spatial_shapes = torch.tensor(shapes)
    keys = int(spatial_shapes.prod(1).sum())
    memory = torch.randn(2, keys, demo_detector.embed_dims)
    mask = None
    if masked:  # the second image padded: the last column and row of each level (where there is more than one)
        masks = []
        for h, w in shapes:
            level = torch.zeros(2, h, w, dtype=torch.bool)
            level[1, :, w - 1 :] = w > 1
            level[1, h - 1 :, :] |= h > 1
            masks.append(level.flatten(1))
        mask = torch.cat(masks, 1)
    with torch.no_grad():
        ours = demo_detector.gen_encoder_output_proposals(memory, mask, spatial_shapes)
        theirs = DeformableDETR.gen_encoder_output_proposals(demo_detector, memory, mask, spatial_shapes)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_the_encoder_is_mmdets_with_the_same_weights_for_a_seed(demo_config):
    """The detector's encoder class does not change what a seed builds: the weights equal mmdet's own detector's."""
    register_all_modules()
    cfg = Config.fromfile(str(demo_config)).model
    plain = copy.deepcopy(cfg)
    for key in ('cpu_deform_attn', 'inference'):
        plain.pop(key, None)
    plain.type = 'DeformableDETR'
    models = []
    for model_cfg in (cfg, plain):  # built and initialised as a training run does (level_embed is set by init_weights)
        torch.manual_seed(1)
        models.append(MODELS.build(model_cfg))
        models[-1].init_weights()
    ours, theirs = models
    assert type(ours.encoder) is PitDetEncoder and type(theirs.encoder) is DeformableDetrTransformerEncoder
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize('cpu_deform_attn', ['fused', 'mmcv'])
def test_export_mode_is_a_setting_of_the_attentions_and_is_undone(demo_config, cpu_deform_attn):
    register_all_modules()
    cfg = Config.fromfile(str(demo_config)).model
    cfg.cpu_deform_attn = cpu_deform_attn
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()  # level_embed is uninitialised memory until then
    model.eval()
    attentions = [m for m in model.modules() if isinstance(m, MultiScaleDeformableAttention)]
    built = type(attentions[0])
    assert built is (
        FusedMultiScaleDeformableAttention if cpu_deform_attn == 'fused' else MultiScaleDeformableAttention
    )
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = model.extract_feat(image)
        eager = model.forward_transformer(expected, [_sample(64, 96)])['hidden_states']
        model.export_mode(True)
        assert all(type(m) is FusedMultiScaleDeformableAttention and m.graph for m in attentions)
        graph = model.forward_transformer(expected, [_sample(64, 96)])['hidden_states']
        model.export_mode(False)
    assert all(type(m) is built and not getattr(m, 'graph', False) for m in attentions)
    torch.testing.assert_close(graph, eager, rtol=1e-4, atol=1e-5)


def _sample(height, width):
    from pit_det.models.utils import image_sample

    return image_sample(height, width)
