# PiT-S as a detection backbone, shared by the Deformable DETR and DINO configs (variables only: a config takes
# them into its model with {{_base_.pit_backbone}}, so one file says what PiT-S is under every head).
# timm's ImageNet weights, fetched and cached on first use (pit_det/checkpoint/sources.py); a local file works too:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'hf-hub:timm/pit_s_224.in1k'
pit_channels = [144, 288, 576]  # base_dims * heads: 48 * (3, 6, 12); the neck's in_channels
pit_backbone = dict(
    _delete_=True,
    type='PiT',
    arch='s',
    out_indices=(0, 1, 2),  # strides 8, 16, 32: the three levels both heads take; the neck adds the fourth
    frozen_stages=-1,
    drop_path_rate=0.1,
    init_cfg=dict(type='Pretrained', checkpoint=pretrained),
)
# no weight decay on the position embedding and class token; the longest matching key wins, so these repeat the
# backbone's lr_mult (0.1 under both heads)
pit_custom_keys = {
    'backbone.pos_embed': dict(lr_mult=0.1, decay_mult=0.0),
    'backbone.cls_token': dict(lr_mult=0.1, decay_mult=0.0),
}
