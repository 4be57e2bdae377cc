# PiT-TI Deformable DETR, the paper's half-resolution setting: a delta over the PiT-S front door.
_base_ = './pit_s_deformable_detr.py'

pretrained = 'hf-hub:timm/pit_ti_224.in1k'
model = dict(
    backbone=dict(arch='ti', init_cfg=dict(checkpoint=pretrained)), neck=dict(in_channels=[64, 128, 256])
)  # base_dims * heads: 32*(2,4,8)
