# A small PiT-Ti DINO trained from scratch on the synthetic shapes set, the DINO twin of the Deformable DETR demo
# (deformable-detr_pit-ti_synthetic_cpu.py): the same data, backbone, widths (128 dims), layers (2 + 2), queries (30)
# and schedule (batch 16, 24 epochs, constant lr); DINO's recipe otherwise: its lr is mmdet's DINO lr x5 as the
# other demo's is mmdet's Deformable DETR lr x5 (5e-4 against 1e-3), denoising queries scaled with the queries.
#   mim train mmdet configs/demo/dino-4scale_pit-ti_synthetic_cpu.py      (after pit-det-demo wrote the data)
#   pit-det-convergence --out-dir work_dirs/convergence                     (both demos, AP per epoch, the plot)
_base_ = ['../dino-4scale_pit-s_8xb2-12e_coco.py', '../_base_/synthetic_cpu.py']  # the head; the data

data_root = {{_base_.synthetic_root}}
num_queries = 30

model = dict(
    num_queries=num_queries,
    backbone=dict(arch='ti', drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256], out_channels=128, norm_cfg=dict(type='GN', num_groups=16)),
    encoder=dict(
        num_layers=2,
        layer_cfg=dict(self_attn_cfg=dict(embed_dims=128), ffn_cfg=dict(embed_dims=128, feedforward_channels=256)),
    ),
    decoder=dict(
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=128),
            cross_attn_cfg=dict(embed_dims=128),
            ffn_cfg=dict(embed_dims=128, feedforward_channels=256),
        ),
    ),
    positional_encoding=dict(num_feats=64),
    bbox_head=dict(num_classes=3, embed_dims=128),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=num_queries)),  # DINO: 100 for 900 queries; at least one group here
    test_cfg=dict(max_per_img=50),
)  # at most num_queries * num_classes = 90

train_pipeline = {{_base_.synthetic_train_pipeline}}
test_pipeline = {{_base_.synthetic_test_pipeline}}
train_dataloader = {{_base_.synthetic_train_dataloader}}
val_dataloader = {{_base_.synthetic_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.synthetic_evaluator}}
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=5e-4), paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0)}))
train_cfg = {{_base_.synthetic_train_cfg}}
param_scheduler = []
default_hooks = {{_base_.synthetic_hooks}}
auto_scale_lr = {{_base_.synthetic_auto_scale_lr}}
