# PiT-Ti DINO-4scale at full resolution, 12 epochs: a delta over PiT-S DINO.
_base_ = './dino-4scale_pit-s_8xb2-12e_coco.py'

pretrained = 'hf-hub:timm/pit_ti_224.in1k'
model = dict(
    backbone=dict(arch='ti', init_cfg=dict(checkpoint=pretrained)), neck=dict(in_channels=[64, 128, 256])
)  # base_dims * heads: 32*(2,4,8)
