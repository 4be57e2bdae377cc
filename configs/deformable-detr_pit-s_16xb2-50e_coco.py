# PiT-S Deformable DETR at mmdet's full resolution (train short side 480-800, max 1333; test 800x1333).
# The paper's half-resolution setting is configs/pit_s_deformable_detr.py, the front door.
_base_ = 'mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py'

custom_imports = dict(imports=['pit_det'], allow_failed_imports=False)
runner_type = 'PiTRunner'  # checks data/coco and the pretrained weights before building anything

# ImageNet weights converted by `python tools/convert_checkpoint.py SRC data/pretrained/pit_s.pth --arch s`.
pretrained = 'data/pretrained/pit_s.pth'
pit_channels = [144, 288, 576]  # base_dims * heads: 48 * (3, 6, 12)

model = dict(
    type='FastDeformableDETR',
    cpu_deform_attn='fused',  # 'mmcv' for mmcv's pure-PyTorch CPU op; CUDA uses mmcv's kernel either way
    backbone=dict(
        _delete_=True,
        type='PiT',
        arch='s',
        out_indices=(0, 1, 2),
        frozen_stages=-1,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=pit_channels))

optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'backbone': dict(lr_mult=0.1),
            # the longest matching key wins, so these repeat the backbone's lr_mult
            'backbone.pos_embed': dict(lr_mult=0.1, decay_mult=0.0),
            'backbone.cls_token': dict(lr_mult=0.1, decay_mult=0.0),
            'sampling_offsets': dict(lr_mult=0.1),
            'reference_points': dict(lr_mult=0.1),
        }))
