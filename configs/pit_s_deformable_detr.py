# PiT-S Deformable DETR in the paper's half-resolution setting (configs/_base_/deformable-detr_halfres.py).
#   mim train mmdet configs/pit_s_deformable_detr.py
#   mim test mmdet configs/pit_s_deformable_detr.py --checkpoint work_dirs/pit_s_deformable_detr/epoch_50.pth
# The backbone (PiT-S, timm's ImageNet weights) is configs/_base_/pit-s_backbone.py, shared with the DINO configs.
_base_ = ['./_base_/deformable-detr_halfres.py', './_base_/pit-s_backbone.py']

model = dict(backbone={{_base_.pit_backbone}}, neck=dict(in_channels={{_base_.pit_channels}}))
# backbone, sampling_offsets and reference_points come from mmdet's config
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.pit_custom_keys}}))
