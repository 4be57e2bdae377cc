# PiT-S DINO-4scale at mmdet's full resolution (train short side 480-800, max 1333; test 800x1333), 12 epochs.
#   mim train mmdet configs/dino-4scale_pit-s_8xb2-12e_coco.py
#   mim test mmdet configs/dino-4scale_pit-s_8xb2-12e_coco.py \
#       --checkpoint work_dirs/dino-4scale_pit-s_8xb2-12e_coco/epoch_12.pth
# PiT's three maps (strides 8, 16, 32) are the three levels DINO-4scale takes; the neck adds the fourth.
_base_ = ['./_base_/dino-4scale.py', './_base_/pit-s_backbone.py']

model = dict(backbone={{_base_.pit_backbone}}, neck=dict(in_channels={{_base_.pit_channels}}))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.pit_custom_keys}}))  # beside mmdet's 'backbone'
