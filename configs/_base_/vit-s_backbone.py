# ViT-S (DeiT-S) as a detection backbone, shared by the Deformable DETR and DINO baselines (variables only: a config
# takes them with {{_base_.vit_backbone}}). ViT has one stride-16 map; pit_det's ViTPyramid taps blocks 4, 8 and 12
# and turns them into strides 8/16/32 with a ViTDet-style simple pyramid (our construction: the paper does not say
# how it fed the levels). Inputs are padded on the right and bottom to a multiple of 16 inside the backbone (timm's
# dynamic_img_pad).
# DeiT-S ImageNet weights (what the paper's ViT-S used), fetched and cached on first use
pretrained = 'hf-hub:timm/deit_small_patch16_224.fb_in1k'
vit_channels = [384, 384, 384]
vit_backbone = dict(
    _delete_=True,
    type='ViTPyramid',
    model_name='deit_small_patch16_224',
    out_indices=(3, 7, 11),
    frozen_stages=-1,
    drop_path_rate=0.1,
    init_cfg=dict(type='Pretrained', checkpoint=pretrained),
)
# no weight decay on the position embedding and class token; the longest matching key wins, so these repeat the
# backbone's lr_mult
vit_custom_keys = {
    'backbone.vit.pos_embed': dict(lr_mult=0.1, decay_mult=0.0),
    'backbone.vit.cls_token': dict(lr_mult=0.1, decay_mult=0.0),
}
