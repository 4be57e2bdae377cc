# PiT-XS DINO-4scale at full resolution, 12 epochs: a delta over PiT-S DINO.
_base_ = './dino-4scale_pit-s_8xb2-12e_coco.py'

pretrained = 'hf-hub:timm/pit_xs_224.in1k'
model = dict(
    backbone=dict(arch='xs', init_cfg=dict(checkpoint=pretrained)), neck=dict(in_channels=[96, 192, 384])
)  # base_dims * heads: 48*(2,4,8)
