"""Evaluation beyond ``mim test``: COCO results side by side, per class, error analysis (:mod:`.coco`), and
robustness to corruptions and occlusion (:mod:`.robustness`)."""
