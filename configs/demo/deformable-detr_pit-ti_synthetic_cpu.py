# A small PiT-Ti Deformable DETR trained from scratch on the built-in synthetic shapes set (pit_det.data), sized
# to learn in minutes on 2 CPU cores: 128-px images, 30 queries, 2 encoder + 2 decoder layers, box refinement and
# two-stage (the plain variant learns far slower from scratch), 16 epochs at lr 1e-3, a tenth of it for the last 3
# (the schedule against 24 epochs at a constant lr: docs/getting_started.md).
#   pit-det-demo                         (generates the data, trains, evaluates, draws predictions)
#   mim train mmdet configs/demo/deformable-detr_pit-ti_synthetic_cpu.py
_base_ = ['../pit_s_deformable_detr.py', '../_base_/synthetic_cpu.py']  # the head; the data

data_root = {{_base_.synthetic_root}}
num_queries = 30

model = dict(
    num_queries=num_queries,
    with_box_refine=True,
    as_two_stage=True,
    backbone=dict(arch='ti', drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256], out_channels=128, norm_cfg=dict(type='GN', num_groups=16)),
    encoder=dict(
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=128), ffn_cfg=dict(embed_dims=128, feedforward_channels=256, ffn_drop=0.0)
        ),
    ),
    decoder=dict(
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=128, dropout=0.0),
            cross_attn_cfg=dict(embed_dims=128),
            ffn_cfg=dict(embed_dims=128, feedforward_channels=256, ffn_drop=0.0),
        ),
    ),
    positional_encoding=dict(num_feats=64),
    bbox_head=dict(num_classes=3, embed_dims=128),
    test_cfg=dict(max_per_img=50),
)  # at most num_queries * num_classes = 90

train_pipeline = {{_base_.synthetic_train_pipeline}}
test_pipeline = {{_base_.synthetic_test_pipeline}}
train_dataloader = {{_base_.synthetic_train_dataloader}}
val_dataloader = {{_base_.synthetic_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.synthetic_evaluator}}
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=1e-3), paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0)}))
train_cfg = dict(max_epochs=16, val_interval=4)
param_scheduler = [dict(type='MultiStepLR', begin=0, end=16, by_epoch=True, milestones=[13], gamma=0.1)]
default_hooks = {{_base_.synthetic_hooks}}
auto_scale_lr = {{_base_.synthetic_auto_scale_lr}}
