# PiT-S DINO-4scale in the paper's half-resolution setting (train short side 240-400, max 666; test 400, max 666),
# beside the Deformable DETR rows: the PiT-S DINO with the pipelines of _base_/halfres_pipelines.py.
_base_ = ['./dino-4scale_pit-s_8xb2-12e_coco.py', './_base_/halfres_pipelines.py']

train_pipeline = {{_base_.half_res_train_pipeline}}
test_pipeline = {{_base_.half_res_test_pipeline}}
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
