# PiT-XS Deformable DETR, the paper's half-resolution setting: a delta over the PiT-S front door.
_base_ = './pit_s_deformable_detr.py'

pretrained = 'hf-hub:timm/pit_xs_224.in1k'
model = dict(
    backbone=dict(arch='xs', init_cfg=dict(checkpoint=pretrained)), neck=dict(in_channels=[96, 192, 384])
)  # base_dims * heads: 48*(2,4,8)
