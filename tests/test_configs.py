import copy

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.structures import InstanceData

from pit_det.ops import FusedMultiScaleDeformableAttention


def tiny_batch(h=160, w=192, num_classes=3):  # two-stage needs >= 300 memory tokens
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), batch_input_shape=(h, w), scale_factor=(1.0, 1.0), pad_shape=(h, w)
        )
    )
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[10.0, 12.0, 60.0, 70.0], [50.0, 8.0, 120.0, 40.0]]),
        labels=torch.tensor([0, num_classes - 1]),
    )
    return torch.rand(1, 3, h, w), [sample]


def test_front_door_exists_and_follows_the_paper(root):
    cfg = Config.fromfile(str(root / 'configs' / 'pit_s_deformable_detr.py'))
    assert cfg.model.backbone.type == 'PiT' and cfg.model.backbone.arch == 's'
    assert cfg.model.backbone.out_indices == (0, 1, 2) and 'depth' not in cfg.model.backbone
    assert cfg.model.neck.in_channels == [144, 288, 576] and cfg.model.neck.num_outs == 4
    scales = cfg.train_pipeline[3].transforms[0][0].scales
    assert [tuple(s) for s in scales] == [(400 - 16 * i, 666) for i in range(11)]
    crop_branch = cfg.train_pipeline[3].transforms[1]
    assert tuple(crop_branch[1].crop_size) == (192, 300)
    assert tuple(cfg.test_dataloader.dataset.pipeline[1].scale) == (666, 400)
    assert cfg.optim_wrapper.optimizer.lr == 2e-4 and cfg.optim_wrapper.optimizer.weight_decay == 1e-4
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert keys['backbone'].lr_mult == 0.1 and keys['backbone.pos_embed'].decay_mult == 0.0
    assert cfg.optim_wrapper.clip_grad.max_norm == 0.1
    assert cfg.train_cfg.max_epochs == 50 and cfg.param_scheduler[0].milestones == [40]
    assert cfg.auto_scale_lr.base_batch_size == 32
    assert cfg.custom_imports == dict(imports=['pit_det'], allow_failed_imports=False)


def test_config_builds_and_runs_loss_and_predict(config_path):
    register_all_modules()
    cfg = Config.fromfile(str(config_path))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert any(isinstance(m, FusedMultiScaleDeformableAttention) for m in model.modules())
    size = (160, 192) if cfg.model.num_queries <= 300 else (224, 256)  # two-stage: a position per query at least
    inputs, samples = tiny_batch(*size, num_classes=cfg.model.bbox_head.num_classes)
    model.train()
    losses = model.loss(inputs, samples)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total) and total > 0
    total.backward()
    assert sum(p.grad.abs().sum() for p in model.backbone.parameters() if p.grad is not None) > 0
    model.eval()
    with torch.no_grad():
        result = model.predict(inputs, samples)[0]
    assert result.pred_instances.bboxes.shape[1] == 4
    assert len(result.pred_instances.scores) == cfg.model.test_cfg.max_per_img


def test_fused_and_mmcv_attention_give_the_same_detections(root):
    register_all_modules()
    cfg = Config.fromfile(str(root / 'configs' / 'demo' / 'deformable-detr_pit-ti_synthetic_cpu.py'))
    torch.manual_seed(0)
    fused = MODELS.build(copy.deepcopy(cfg.model))  # mmdet edits the bbox_head config in place
    fused.init_weights()
    plain = MODELS.build(dict(copy.deepcopy(cfg.model), cpu_deform_attn='mmcv'))
    plain.load_state_dict(fused.state_dict())
    assert not any(isinstance(m, FusedMultiScaleDeformableAttention) for m in plain.modules())
    inputs, samples = tiny_batch()
    with torch.no_grad():
        a = fused.eval()._forward(inputs, samples)
        b = plain.eval()._forward(inputs, samples)
    for x, y in zip(torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="model.cpu_deform_attn='fast': use one of fused, mmcv"):
        MODELS.build(dict(copy.deepcopy(cfg.model), cpu_deform_attn='fast'))


def test_half_resolution_is_one_base_shared_by_pit_and_r50(root):
    pit = Config.fromfile(str(root / 'configs' / 'pit_s_deformable_detr.py'))
    r50 = Config.fromfile(str(root / 'configs' / 'deformable-detr_r50_16xb2-50e_coco-halfres.py'))
    for key in (
        'train_pipeline',
        'test_pipeline',
        'train_dataloader',
        'test_dataloader',
        'train_cfg',
        'param_scheduler',
        'runner_type',
        'custom_imports',
    ):
        assert pit[key] == r50[key], key
    assert r50.model.type == pit.model.type == 'FastDeformableDETR'
    assert r50.model.backbone.type == 'ResNet' and r50.model.backbone.init_cfg.checkpoint == 'torchvision://resnet50'
    assert set(r50.optim_wrapper.paramwise_cfg.custom_keys) == {'backbone', 'sampling_offsets', 'reference_points'}
    full = Config.fromfile(str(root / 'configs' / 'deformable-detr_pit-s_16xb2-50e_coco.py'))
    mmdet = Config.fromfile(str(root / 'configs' / '_base_' / 'deformable-detr_halfres.py'))
    assert full.train_pipeline == mmdet.full_res_train_pipeline and full.model == pit.model
    assert tuple(full.test_dataloader.dataset.pipeline[1].scale) == (1333, 800)
