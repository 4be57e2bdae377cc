# PiT-B DINO-4scale at full resolution, 12 epochs: a delta over PiT-S DINO.
_base_ = './dino-4scale_pit-s_8xb2-12e_coco.py'

pretrained = 'hf-hub:timm/pit_b_224.in1k'
model = dict(
    backbone=dict(arch='b', init_cfg=dict(checkpoint=pretrained)), neck=dict(in_channels=[256, 512, 1024])
)  # base_dims * heads: 64*(4,8,16)
