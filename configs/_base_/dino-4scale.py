# mmdet's DINO-4scale (R50, 12 epochs: AdamW 1e-4, wd 1e-4, backbone lr x0.1, grad clip 0.1, step at 11, 900
# queries, contrastive denoising with 100 queries, auto_scale_lr base batch 16 = 8 GPUs x 2 images) with pit-det's
# detector (FastDINO: the fused CPU deformable attention, the inference paths, checked checkpoints) and runner. The
# backbone is mmdet's (ResNet-50 from torchvision); the PiT and ViT configs replace it.
_base_ = ['mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py', './checked_runtime.py']

model = dict(
    type='FastDINO', cpu_deform_attn='fused'
)  # 'mmcv' for mmcv's pure-PyTorch CPU op; CUDA uses mmcv's kernel either way
