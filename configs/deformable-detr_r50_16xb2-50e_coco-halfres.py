# The paper's baseline: ResNet-50 Deformable DETR in the same half-resolution setting as the PiT configs.
# ImageNet weights come from torchvision (downloaded on first use).
_base_ = './pit_s_deformable_detr.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(in_channels=[512, 1024, 2048]))
