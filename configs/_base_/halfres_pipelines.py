# The paper's half resolution (Heo et al. 2021, Sec. 4.4; naver-ai/pit#6) as pipelines, shared by the Deformable
# DETR and DINO configs (both heads' mmdet pipelines are the same at full resolution): train short side
# 400 - 16 * i for i = 0..10 (400, 384, ..., 240), max 666; the crop branch halved likewise; test at 400, max 666.
# Variables only: a config takes them with {{_base_.half_res_train_pipeline}}.
half_res_scales = [(400 - 16 * i, 666) for i in range(11)]  # (400, 666), (384, 666), ..., (240, 666)
half_res_train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=half_res_scales, keep_ratio=True)],
            [
                # mmdet: (400|500|600, 4200), crop (384, 600); halved
                dict(type='RandomChoiceResize', scales=[(200, 2100), (250, 2100), (300, 2100)], keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(192, 300), allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=half_res_scales, keep_ratio=True),
            ],
        ],
    ),
    dict(type='PackDetInputs'),
]
half_res_test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(666, 400), keep_ratio=True),  # (w, h): short side 400, long side at most 666
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
