# PiT-S two-stage Deformable DETR with box refinement (half resolution).
_base_ = './deformable-detr-refine_pit-s_16xb2-50e_coco-halfres.py'
model = dict(as_two_stage=True)
