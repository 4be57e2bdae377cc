# The baseline under the DINO recipe: mmdet's ResNet-50 DINO-4scale (its box AP 49.0 at 12 epochs), run by pit-det's
# FastDINO and CheckedRunner (the base alone).
_base_ = './_base_/dino-4scale.py'
