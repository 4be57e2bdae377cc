# The paper's half-resolution Deformable DETR setting (Heo et al. 2021, Sec. 4.4; naver-ai/pit#6), shared by every
# backbone's config: the pipelines of _base_/halfres_pipelines.py. Optimisation as mmdet's Deformable DETR: AdamW
# 2e-4, wd 1e-4, backbone lr x0.1, grad clip 0.1, 50 epochs with a step at 40, auto_scale_lr base batch 32 (16 GPUs x
# 2 images). The backbone is mmdet's (ResNet-50 from torchvision); the PiT configs replace it.
_base_ = [
    'mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py',
    './checked_runtime.py',
    './halfres_pipelines.py',
]

model = dict(
    type='FastDeformableDETR', cpu_deform_attn='fused'
)  # 'mmcv' for mmcv's pure-PyTorch CPU op; CUDA uses mmcv's kernel either way

# mmdet's full-resolution pipelines, kept for the configs that return to them
full_res_train_pipeline = {{_base_.train_pipeline}}
full_res_test_pipeline = {{_base_.test_pipeline}}

train_pipeline = {{_base_.half_res_train_pipeline}}
test_pipeline = {{_base_.half_res_test_pipeline}}
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
