# The paper's baseline: ResNet-50 Deformable DETR (mmdet's model, ImageNet weights from torchvision, downloaded on
# first use into torch.hub's cache) in the half-resolution setting every backbone here shares.
_base_ = './_base_/deformable-detr_halfres.py'
