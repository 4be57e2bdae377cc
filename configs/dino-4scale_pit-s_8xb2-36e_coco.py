# PiT-S DINO-4scale, 36 epochs with the step at 30 (mmdet's dino-4scale_r50_8xb2-36e_coco.py schedule).
_base_ = './dino-4scale_pit-s_8xb2-12e_coco.py'
train_cfg = dict(max_epochs=36)
param_scheduler = [dict(type='MultiStepLR', end=36, by_epoch=True, milestones=[30], gamma=0.1)]
