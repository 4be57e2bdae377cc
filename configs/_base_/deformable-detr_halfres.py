# The paper's half-resolution Deformable DETR setting (Heo et al. 2021, Sec. 4.4; naver-ai/pit#6), shared by every
# backbone's config: train short side 400 - 16 * i for i = 0..10 (400, 384, ..., 240), max 666; the crop branch
# halved likewise; test at 400, max 666. Optimisation as mmdet's Deformable DETR: AdamW 2e-4, wd 1e-4, backbone
# lr x0.1, grad clip 0.1, 50 epochs with a step at 40, auto_scale_lr base batch 32 (16 GPUs x 2 images).
# The backbone is mmdet's (ResNet-50 from torchvision); the PiT configs replace it.
_base_ = 'mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py'

custom_imports = dict(imports=['pit_det'], allow_failed_imports=False)
runner_type = 'CheckedRunner'  # checks data, classes, evaluator files and weights before building anything

model = dict(
    type='FastDeformableDETR',
    cpu_deform_attn='fused')  # 'mmcv' for mmcv's pure-PyTorch CPU op; CUDA uses mmcv's kernel either way

half_res_scales = [(400 - 16 * i, 666) for i in range(11)]  # (400, 666), (384, 666), ..., (240, 666)

# mmdet's full-resolution pipelines, kept for the configs that return to them
full_res_train_pipeline = {{_base_.train_pipeline}}
full_res_test_pipeline = {{_base_.test_pipeline}}

train_pipeline = [
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
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(192, 300),
                     allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=half_res_scales, keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(666, 400), keep_ratio=True),  # (w, h): short side 400, long side at most 666
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
