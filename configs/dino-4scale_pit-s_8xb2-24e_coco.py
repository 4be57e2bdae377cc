# PiT-S DINO-4scale, 24 epochs with the step at 20 (mmdet's dino-4scale_r50_8xb2-24e_coco.py schedule).
_base_ = './dino-4scale_pit-s_8xb2-12e_coco.py'
train_cfg = dict(max_epochs=24)
param_scheduler = [dict(type='MultiStepLR', end=24, by_epoch=True, milestones=[20], gamma=0.1)]
