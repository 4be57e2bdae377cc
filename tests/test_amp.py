"""Mixed precision: --amp trains in bf16 autocast on the CPU; CUDA keeps mmengine's fp16 AmpOptimWrapper."""

import copy
import subprocess
import sys

import pytest
import torch
from mmdet.registry import MODELS, RUNNERS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

from pit_det.data import make_synthetic_coco
from pit_det.demo import load_demo_config
from pit_det.runner import BF16AutocastOptimWrapper


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp('amp') / 'synthetic', num_train=4, num_val=2)


def one_iteration(cfg, data_root):
    """One real train_step (mmengine's path: data preprocessor, loss, backward, step) under the bf16 wrapper."""
    from mmdet.registry import DATASETS

    register_all_modules()
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    model.train()
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    dataset_cfg.update(
        data_root=str(data_root) + '/',
        ann_file='annotations/train.json',
        data_prefix=dict(img='train/'),
        metainfo=dict(classes=('square', 'disc', 'triangle')),
    )
    dataset = DATASETS.build(dataset_cfg)
    batch = pseudo_collate([dataset[i] for i in range(2)])
    wrapper = BF16AutocastOptimWrapper(optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    seen = []
    handle = model.backbone.register_forward_hook(lambda m, i, o: seen.append(o[0].dtype))
    losses = model.train_step(batch, wrapper)
    handle.remove()
    assert seen == [torch.bfloat16]  # the forward ran under bf16 autocast
    assert all(torch.isfinite(v) for v in losses.values()) and losses['loss'] > 0
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert len(changed) > 0.9 * len(before)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


def test_bf16_iteration_of_the_demo_model(data):
    one_iteration(load_demo_config(data, '/tmp/unused'), data)


def test_bf16_iteration_of_the_pit_s_config_at_a_small_size(root, data):
    cfg = Config.fromfile(str(root / 'configs' / 'pit_s_deformable_detr.py'))
    cfg.model.backbone.init_cfg = None
    cfg.model.bbox_head.num_classes = 3
    cfg.train_dataloader.dataset.pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=(160, 160), keep_ratio=True),
        dict(type='PackDetInputs'),
    ]
    one_iteration(cfg, data)


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU conversion of --amp')
def test_amp_option_becomes_bf16_autocast_on_the_cpu(data, tmp_path):
    register_all_modules()
    cfg = load_demo_config(data, tmp_path / 'work')
    cfg.optim_wrapper.type, cfg.optim_wrapper.loss_scale = 'AmpOptimWrapper', 'dynamic'  # what --amp sets
    runner = RUNNERS.build(cfg)
    assert isinstance(runner.build_optim_wrapper(cfg.optim_wrapper), BF16AutocastOptimWrapper)


@pytest.mark.slow
def test_tools_train_amp_on_the_cpu(root, data, tmp_path):
    cfg = load_demo_config(data, tmp_path / 'work', max_epochs=1)
    cfg.train_dataloader.batch_size = cfg.val_dataloader.batch_size = 2
    config = tmp_path / 'config.py'
    cfg.dump(str(config))
    run = subprocess.run(
        [sys.executable, str(root / 'tools' / 'train.py'), str(config), '--amp', '--work-dir', str(tmp_path / 'work')],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'bf16 autocast on the CPU' in run.stdout + run.stderr and (tmp_path / 'work' / 'epoch_1.pth').is_file()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU and mmcv built with CUDA ops')
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_cuda_deformable_attention_under_autocast(dtype):
    from pit_det.ops import FusedMultiScaleDeformableAttention

    layer = (
        FusedMultiScaleDeformableAttention(embed_dims=64, num_heads=4, num_levels=2, num_points=2, batch_first=True)
        .cuda()
        .eval()
    )
    kwargs = dict(
        query=torch.randn(2, 54, 64).cuda(),
        reference_points=torch.rand(2, 54, 2, 2).cuda(),
        spatial_shapes=torch.tensor([[6, 7], [3, 4]]).cuda(),
        level_start_index=torch.tensor([0, 42]).cuda(),
    )
    reference = layer(**kwargs)
    with torch.autocast('cuda', dtype=dtype):
        mixed = layer(**kwargs)
    assert torch.isfinite(mixed).all()
    assert ((mixed.float() - reference).abs().max() / reference.abs().max()).item() < 0.05


def demo_model_and_batch():
    """The demo detector (random weights, eval mode) and a 160x192 batch of one."""
    register_all_modules()
    from pit_det.demo import DEMO_CONFIG

    cfg = Config.fromfile(str(DEMO_CONFIG))
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    from test_configs import tiny_batch

    return (model, *tiny_batch())


def test_bf16_inference_is_close_to_fp32_and_returns_float32():
    model, inputs, samples = demo_model_and_batch()
    with torch.no_grad():
        fp32 = model.predict(inputs, samples)[0].pred_instances
        with torch.autocast('cpu', dtype=torch.bfloat16):
            bf16 = model.predict(inputs, samples)[0].pred_instances
    assert bf16.bboxes.dtype == bf16.scores.dtype == torch.float32
    top = fp32.scores.argmax()
    match = ((bf16.bboxes - fp32.bboxes[top]).abs().sum(-1)).argmin()
    assert (bf16.bboxes[match] - fp32.bboxes[top]).abs().max() < 2.0  # px, on a 160x192 input
    assert abs(bf16.scores.max() - fp32.scores.max()) < 0.02


def test_bf16_path_runs_backbone_and_encoder_in_bf16_and_the_boxes_in_float32():
    model, inputs, samples = demo_model_and_batch()
    seen = {}

    def record(name):
        def hook(module, args, output):
            seen.setdefault(name, output.dtype)

        return hook

    model.backbone.patch_embed.conv.register_forward_hook(record('backbone'))
    model.encoder.layers[0].ffn.layers[1].register_forward_hook(record('encoder'))
    model.decoder.layers[0].ffn.layers[1].register_forward_hook(record('decoder'))
    model.bbox_head.reg_branches[-1].register_forward_hook(record('boxes'))
    with torch.no_grad():
        fp32 = model.predict(inputs, samples)[0].pred_instances
        seen.clear()
        model.set_inference(dict(path='bf16'))
        bf16 = model.predict(inputs, samples)[0].pred_instances
    assert seen == dict(backbone=torch.bfloat16, encoder=torch.bfloat16, decoder=torch.float32, boxes=torch.float32)
    # nothing left switched on: no autocast, no wrapped methods on the detector
    assert not torch.is_autocast_enabled('cpu') and not {'extract_feat', 'forward_encoder'} & set(vars(model))
    assert bf16.bboxes.dtype == bf16.scores.dtype == torch.float32
    top = fp32.scores.argmax()
    match = ((bf16.bboxes - fp32.bboxes[top]).abs().sum(-1)).argmin()
    assert (bf16.bboxes[match] - fp32.bboxes[top]).abs().max() < 2.0  # px, on a 160x192 input
