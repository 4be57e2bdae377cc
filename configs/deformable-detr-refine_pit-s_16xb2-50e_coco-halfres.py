# PiT-S Deformable DETR with iterative bounding box refinement (half resolution).
_base_ = './pit_s_deformable_detr.py'
model = dict(with_box_refine=True)
