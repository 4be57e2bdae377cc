# PiT-S Deformable DETR in the paper's half-resolution setting (configs/_base_/deformable-detr_halfres.py).
#   mim train mmdet configs/pit_s_deformable_detr.py
#   mim test mmdet configs/pit_s_deformable_detr.py --checkpoint work_dirs/pit_s_deformable_detr/epoch_50.pth
_base_ = './_base_/deformable-detr_halfres.py'

# timm's ImageNet weights, fetched and cached on first use (pit_det/checkpoint/sources.py); a local file works too:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'hf-hub:timm/pit_s_224.in1k'
pit_channels = [144, 288, 576]  # base_dims * heads: 48 * (3, 6, 12)

model = dict(
    backbone=dict(
        _delete_=True,
        type='PiT',
        arch='s',
        out_indices=(0, 1, 2),
        frozen_stages=-1,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=pit_channels))

# no weight decay on the position embedding and class token; the longest matching key wins, so these repeat the
# backbone's lr_mult (backbone, sampling_offsets and reference_points come from mmdet's config)
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'backbone.pos_embed': dict(lr_mult=0.1, decay_mult=0.0),
            'backbone.cls_token': dict(lr_mult=0.1, decay_mult=0.0),
        }))
