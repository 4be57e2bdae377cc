# PiT-B Deformable DETR, the paper's half-resolution setting: a delta over the PiT-S front door.
_base_ = './pit_s_deformable_detr.py'

pretrained = 'hf-hub:timm/pit_b_224.in1k'
model = dict(
    backbone=dict(arch='b', init_cfg=dict(checkpoint=pretrained)), neck=dict(in_channels=[256, 512, 1024])
)  # base_dims * heads: 64*(4,8,16)
