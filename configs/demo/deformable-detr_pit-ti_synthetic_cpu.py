# A small PiT-Ti Deformable DETR trained from scratch on the built-in synthetic shapes set (pit_det.data), sized
# to learn in minutes on 2 CPU cores: 128-px images, 30 queries, 2 encoder + 2 decoder layers, box refinement and
# two-stage (the plain variant learns far slower from scratch), constant lr 1e-3.
#   pit-det-demo                         (generates the data, trains, evaluates, draws predictions)
#   mim train mmdet configs/demo/deformable-detr_pit-ti_synthetic_cpu.py
_base_ = '../pit_s_deformable_detr.py'

data_root = 'data/synthetic/'
missing_data_hint = 'the demo data is generated, not downloaded: run `pit-det-demo` (or `make demo`) first.'
classes = ('square', 'disc', 'triangle')
image_size = 128
num_queries = 30

model = dict(
    num_queries=num_queries,
    with_box_refine=True,
    as_two_stage=True,
    backbone=dict(arch='ti', drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256], out_channels=128, norm_cfg=dict(type='GN', num_groups=16)),
    encoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=dict(embed_dims=128),
                                              ffn_cfg=dict(embed_dims=128, feedforward_channels=256,
                                                           ffn_drop=0.0))),
    decoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=dict(embed_dims=128, dropout=0.0),
                                              cross_attn_cfg=dict(embed_dims=128),
                                              ffn_cfg=dict(embed_dims=128, feedforward_channels=256,
                                                           ffn_drop=0.0))),
    positional_encoding=dict(num_feats=64),
    bbox_head=dict(num_classes=len(classes), embed_dims=128),
    test_cfg=dict(max_per_img=50))  # at most num_queries * num_classes = 90

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
dataset = dict(type='CocoDataset', data_root=data_root, metainfo=dict(classes=classes), backend_args=None)
train_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    dataset=dict(dataset, ann_file='annotations/train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=False), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    dataset=dict(dataset, ann_file='annotations/val.json', data_prefix=dict(img='val/'), test_mode=True,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=1e-3), paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0)}))
max_epochs = 24
train_cfg = dict(max_epochs=max_epochs, val_interval=4)
param_scheduler = []
default_hooks = dict(logger=dict(interval=4), checkpoint=dict(interval=4, max_keep_ckpts=2, save_best='auto'))
auto_scale_lr = dict(enable=False, base_batch_size=16)  # this config's own batch: --auto-scale-lr keeps lr
