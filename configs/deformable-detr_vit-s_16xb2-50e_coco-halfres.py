# ViT-S (DeiT-S) Deformable DETR, the paper's ViT baseline, in the half-resolution setting every backbone here shares.
# The backbone (ViTPyramid over DeiT-S) is configs/_base_/vit-s_backbone.py, shared with the DINO baseline.
_base_ = ['./_base_/deformable-detr_halfres.py', './_base_/vit-s_backbone.py']

model = dict(backbone={{_base_.vit_backbone}}, neck=dict(in_channels={{_base_.vit_channels}}))
# backbone, sampling_offsets and reference_points come from mmdet's config
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.vit_custom_keys}}))
