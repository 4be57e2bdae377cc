# The CPU demos' data, shared by the Deformable DETR and DINO demos: the generated shapes set (pit_det.data) at
# 128 px in data/synthetic. Variables only (a demo takes them with {{_base_.synthetic_train_dataloader}} and the
# like), so that it can sit beside a head's config among the bases.
synthetic_root = 'data/synthetic/'
missing_data_hint = 'the demo data is generated, not downloaded: run `pit-det-demo` (or `make demo`) first.'
classes = ('square', 'disc', 'triangle')
image_size = 128

synthetic_train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
synthetic_test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
synthetic_dataset = dict(
    type='CocoDataset', data_root=synthetic_root, metainfo=dict(classes=classes), backend_args=None
)
synthetic_train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        synthetic_dataset,
        ann_file='annotations/train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=synthetic_train_pipeline,
    ),
)
synthetic_val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        synthetic_dataset,
        ann_file='annotations/val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=synthetic_test_pipeline,
    ),
)
synthetic_evaluator = dict(ann_file=synthetic_root + 'annotations/val.json')

# the demos' schedule: 16 images a step, constant lr (each demo sets its head's), validation every 4 epochs
synthetic_max_epochs = 24
synthetic_train_cfg = dict(max_epochs=synthetic_max_epochs, val_interval=4)
synthetic_hooks = dict(logger=dict(interval=4), checkpoint=dict(interval=4, max_keep_ckpts=2, save_best='auto'))
synthetic_auto_scale_lr = dict(enable=False, base_batch_size=16)  # the demos' own batch: --auto-scale-lr keeps lr
