"""Results of a sample of mmcv's compiled CPU ops on fixed inputs, to compare two builds of ``mmcv._ext``.

The sample covers the ops whose sources cannot share a translation unit in the unity build (``roi_align``,
``roi_align_rotated``, ``rotated_feature_align``, ``bezier_align``, ``psamask``) and common detection ops (``nms``,
``nms_rotated``, ``box_iou_rotated``). ``python tests/mmcv_ops.py OUT.json`` records them (as was done with a
per-file build for ``tests/data/mmcv_ops_per_file_build.json``).
"""

import json
import sys

import torch


def _boxes(gen, n, size=64.0):
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.rand(n, 2, generator=gen) * size / 3 + 2
    return torch.cat((xy, xy + wh), 1)


def _rotated(gen, n, size=64.0):
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.rand(n, 2, generator=gen) * size / 3 + 2
    return torch.cat((xy, wh, (torch.rand(n, 1, generator=gen) - 0.5) * 3), 1)


def compute() -> dict[str, list]:
    """Each op's output on seeded inputs, as nested lists."""
    from mmcv.ops import (
        BezierAlign,
        PSAMask,
        box_iou_rotated,
        nms,
        nms_rotated,
        roi_align,
        roi_align_rotated,
        rotated_feature_align,
    )

    gen = torch.Generator().manual_seed(0)
    feats = torch.rand(2, 4, 16, 20, generator=gen)
    boxes = _boxes(gen, 12, 24.0)  # overlapping: nms drops some
    scores = torch.rand(12, generator=gen)
    rboxes = _rotated(gen, 10, 24.0)
    rscores = torch.rand(10, generator=gen)
    rois = torch.cat((torch.randint(0, 2, (6, 1), generator=gen).float(), _boxes(gen, 6, 60.0)), 1)
    rrois = torch.cat((torch.randint(0, 2, (6, 1), generator=gen).float(), _rotated(gen, 6, 60.0)), 1)
    beziers = torch.cat((torch.randint(0, 2, (4, 1), generator=gen).float(), torch.rand(4, 16, generator=gen) * 60), 1)
    out = {}
    kept, order = nms(boxes, scores, iou_threshold=0.05)
    out['nms'] = [kept.tolist(), order.tolist()]
    out['box_iou_rotated'] = box_iou_rotated(rboxes, rboxes.flip(0)).tolist()
    out['box_iou_rotated_aligned_iof'] = box_iou_rotated(rboxes, rboxes.flip(0), mode='iof', aligned=True).tolist()
    kept, order = nms_rotated(rboxes, rscores, iou_threshold=0.2)
    out['nms_rotated'] = [kept.tolist(), order.tolist()]
    out['roi_align'] = roi_align(feats, rois, (3, 4), 0.25, 2, 'avg', True).tolist()
    out['roi_align_max'] = roi_align(feats, rois, (3, 4), 0.25, 2, 'max', False).tolist()
    out['roi_align_rotated'] = roi_align_rotated(feats, rrois, (3, 4), 0.25, 2, True, False).tolist()
    best = _rotated(gen, 2 * 16 * 20, 16.0).view(2, 16, 20, 5)
    out['rotated_feature_align'] = rotated_feature_align(feats, best, 1.0, 5).tolist()
    out['bezier_align'] = BezierAlign((4, 6), 0.25, 2, True)(feats, beziers).tolist()
    mask = torch.rand(1, 9 * 7, 6, 5, generator=gen)
    out['psamask_collect'] = PSAMask('collect', (9, 7))(mask).tolist()
    out['psamask_distribute'] = PSAMask('distribute', (9, 7))(mask).tolist()
    return out


def ext_functions() -> list[str]:
    """The functions ``mmcv._ext`` exports."""
    import mmcv._ext as ext

    return sorted(name for name in dir(ext) if not name.startswith('_'))


if __name__ == '__main__':
    json.dump(compute(), open(sys.argv[1], 'w'))
