# PiT-S Deformable DETR at mmdet's full resolution (train short side 480-800, max 1333; test 800x1333): the front
# door with mmdet's own pipelines back.
_base_ = './pit_s_deformable_detr.py'

train_pipeline = {{_base_.full_res_train_pipeline}}
test_pipeline = {{_base_.full_res_test_pipeline}}
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
