# The ViT baseline under the DINO recipe: ViT-S (DeiT-S through ViTPyramid, configs/_base_/vit-s_backbone.py)
# DINO-4scale at full resolution, 12 epochs.
_base_ = ['./_base_/dino-4scale.py', './_base_/vit-s_backbone.py']

model = dict(backbone={{_base_.vit_backbone}}, neck=dict(in_channels={{_base_.vit_channels}}))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.vit_custom_keys}}))  # beside mmdet's 'backbone'
