"""Deformable DETR's sampling points and attention weights, read from the model's own forward."""

import json

import mmcv
import numpy as np
import pytest
import torch

from pit_det.analysis.sampling import Recorder, SamplingAnalysis, locations_and_weights
from pit_det.cli.analyze_sampling import main
from pit_det.data import make_synthetic_coco


@pytest.fixture(scope='module')
def demo(tmp_path_factory, demo_config):
    """The demo detector (random, initialised weights) saved as a checkpoint, and a validation image."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(demo_config)).model)
    model.init_weights()
    tmp = tmp_path_factory.mktemp('sampling')
    checkpoint = tmp / 'demo.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    image = make_synthetic_coco(tmp / 'data', num_train=0, num_val=1) / 'val' / '000000.png'
    return checkpoint, image


@pytest.fixture(scope='module')
def detector(demo, demo_config):
    from pit_det.models.detectors import build_detector

    return build_detector(demo_config, demo[0])


def by_hand(module, kwargs):
    """Sampling locations and weights from the module's Linear layers, its query and reference points."""
    query = kwargs['query'] + kwargs['query_pos']
    bs, nq = query.shape[:2]
    h, lv, p = module.num_heads, module.num_levels, module.num_points
    offsets = module.sampling_offsets(query).view(bs, nq, h, lv, p, 2)
    weights = torch.softmax(module.attention_weights(query).view(bs, nq, h, lv * p), -1).view(bs, nq, h, lv, p)
    ref = kwargs['reference_points']
    if ref.shape[-1] == 4:  # a reference box: offsets scale with its size
        locations = ref[:, :, None, :, None, :2] + offsets / p * ref[:, :, None, :, None, 2:] / 2
    else:  # a reference point: offsets are in cells of each level
        shapes = kwargs['spatial_shapes']
        cells = torch.stack([shapes[:, 1], shapes[:, 0]], -1)[None, None, None, :, None, :]
        locations = ref[:, :, None, :, None, :] + offsets / cells
    return locations, weights


def test_locations_and_weights_equal_those_computed_by_hand(detector, demo):
    from mmdet.apis import inference_detector

    image = mmcv.imread(str(demo[1]))
    for part in ('decoder', 'encoder'):
        module = (
            getattr(detector, part).layers[-1].cross_attn
            if part == 'decoder'
            else detector.encoder.layers[-1].self_attn
        )
        seen = {}
        handle = module.register_forward_pre_hook(lambda m, a, kw, seen=seen: seen.update(kw), with_kwargs=True)
        with Recorder([module]) as recorder, torch.no_grad():
            inference_detector(detector, image)
        handle.remove()
        locations, weights = locations_and_weights(module, recorder.records[0])
        with torch.no_grad():
            expected_locations, expected_weights = by_hand(module, seen)
        assert locations.shape[3] == 4 and locations.shape[-1] == 2  # every one of the 4 levels
        for level in range(4):
            torch.testing.assert_close(locations[..., level, :, :], expected_locations[..., level, :, :])
            torch.testing.assert_close(weights[..., level, :], expected_weights[..., level, :])
        sums = weights.sum(dim=(-2, -1))  # per query and head, over levels and points
        torch.testing.assert_close(sums, torch.ones_like(sums))


def test_detections_are_mmdets_and_each_is_its_own_query(detector, demo):
    from mmdet.apis import inference_detector

    image = mmcv.imread(str(demo[1]))
    with torch.no_grad():
        expected = inference_detector(detector, image).pred_instances
    analysis = SamplingAnalysis(detector).run(image, topk=5, score_thr=0.0)
    found = analysis['detections']
    assert len(found) == 5
    for i, d in enumerate(found):
        assert d.score == pytest.approx(float(expected.scores[i]), abs=1e-6)
        assert d.box == pytest.approx(expected.bboxes[i].tolist(), abs=1e-4)
        assert d.label == int(expected.labels[i])
        assert d.points.shape == (8, 4, 4, 2) and d.weights.shape == (8, 4, 4)  # heads, levels, points
        assert len(d.layers) == 2 and sum(d.layers[-1]['level_share']) == pytest.approx(1, abs=1e-3)
        # the reference point of a refined two-stage query is the centre of its reference box, inside the image
        assert 0 <= d.reference[0] <= image.shape[1] and 0 <= d.reference[1] <= image.shape[0]


def test_command_writes_pictures_json_and_says_when_nothing_is_drawn(demo, demo_config, tmp_path, capsys):
    checkpoint, image = demo
    out = tmp_path / 'out'
    assert (
        main(
            [
                str(demo_config),
                str(checkpoint),
                str(image),
                '--out-dir',
                str(out),
                '--topk',
                '3',
                '--score-thr',
                '0',
                '--points',
                '64,64',
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert '3 detections with score >= 0.0 drawn, 1 encoder pixels' in printed and 'decoder layer' in printed
    data = json.loads((out / 'sampling.json').read_text())
    detections = data['images']['000000.png']['detections']
    assert len(detections) == 3 and len(detections[0]['sampling']) == 8  # heads
    assert len(detections[0]['sampling'][0]) == 4 and len(detections[0]['sampling'][0][0]) == 4  # levels, points
    assert {'xy', 'weight'} == set(detections[0]['sampling'][0][0][0])
    assert [s['layer'] for s in data['summary']] == [0, 1] and len(data['summary'][0]['level_share']) == 4
    assert len(data['images']['000000.png']['pixels']) == 1
    assert (out / 'sampling_000000.png').stat().st_size > 10_000
    # nothing scores 1.0: an empty panel, and the command says so
    assert (
        main([str(demo_config), str(checkpoint), str(image), '--out-dir', str(tmp_path / 'none'), '--score-thr', '1'])
        == 0
    )
    assert 'no detection with score >= 1.0: an empty panel' in capsys.readouterr().out
    assert (tmp_path / 'none' / 'sampling_000000.png').is_file()
    assert json.loads((tmp_path / 'none' / 'sampling.json').read_text())['summary'] == []


def test_bad_requests_are_clear_errors(demo, demo_config, tmp_path, capsys):
    checkpoint, image = demo
    retina = tmp_path / 'retina.py'
    retina.write_text("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n")
    assert main([str(retina), 'none', str(image), '--out-dir', str(tmp_path / 'o')]) == 1
    assert 'a RetinaNet, not a Deformable DETR' in capsys.readouterr().err
    for argv, fact in (
        ([str(demo_config), str(checkpoint), str(image), '--topk', '0'], '--topk is at least 1'),
        ([str(demo_config), str(tmp_path / 'no.pth'), str(image)], 'no.pth not found'),
        ([str(demo_config), str(checkpoint), str(checkpoint)], 'not an image file'),
    ):
        assert main(argv + ['--out-dir', str(tmp_path / 'o')]) == 1
        err = capsys.readouterr().err
        assert fact in err and 'Traceback' not in err
    assert not (tmp_path / 'o').exists()


@pytest.mark.slow
def test_two_detectors_side_by_side(demo, demo_config, root, tmp_path, capsys):
    """The comparison on the demo, and on random-weight PiT-S and R50 detectors at the paper's test size."""
    checkpoint, image = demo
    runs = {}
    for name, config, weights in (
        ('demo', demo_config, str(checkpoint)),
        ('pit-s', root / 'configs' / 'pit_s_deformable_detr.py', 'none'),
        ('r50', root / 'configs' / 'deformable-detr_r50_16xb2-50e_coco-halfres.py', 'none'),
    ):
        assert (
            main(
                [str(config), weights, str(image), '--out-dir', str(tmp_path / name), '--topk', '2', '--score-thr', '0']
            )
            == 0
        ), capsys.readouterr().err
        runs[name] = tmp_path / name / 'sampling.json'
    capsys.readouterr()
    assert main(['--compare', *(f'{n}={p}' for n, p in runs.items()), '--out-dir', str(tmp_path / 'cmp')]) == 0
    printed = capsys.readouterr().out
    assert all(f'  {n}: levels ' in printed for n in runs)
    assert (tmp_path / 'cmp' / 'comparison.png').stat().st_size > 10_000
    shares = [json.loads(p.read_text())['summary'][-1]['level_share'] for p in runs.values()]
    assert all(np.isclose(sum(s), 1, atol=1e-3) for s in shares)


def test_a_pixel_outside_the_image_is_refused_before_the_model_is_built(demo, demo_config, tmp_path, capsys):
    """It used to draw another pixel's sampling under its name: the corner for 500,500 on a 128-px image, a wrapped
    index for -100,5; nan and inf ended in tracebacks."""
    checkpoint, image = demo
    base = [str(demo_config), str(checkpoint), str(image), '--out-dir', str(tmp_path / 'o')]
    for points, fact in (
        (['--points', '500,500'], '--points 500,500: not a pixel of'),
        (['--points=-100,5'], '--points -100,5: not a pixel of'),
        (['--points', '10,10', '128,5'], '--points 128,5: not a pixel of'),
    ):
        assert main(base + points) == 1
        err = capsys.readouterr().err
        assert fact in err and '(128x128 px, width x height): give x in [0, 128) and y in [0, 128)' in err, err
        assert 'Traceback' not in err
    for value in ('nan,nan', 'inf,5'):
        with pytest.raises(SystemExit) as stop:
            main(base + ['--points', value])
        assert stop.value.code == 2
        assert 'a pixel is two finite numbers x,y' in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # argparse reads -100,5 as a flag
        main(base + ['--points', '-100,5'])
    assert stop.value.code == 2 and 'unless written --points=-100,5' in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()


def test_the_analysis_refuses_a_pixel_outside_the_image(detector, demo):
    import mmcv

    from pit_det.analysis.sampling import SamplingError

    image = mmcv.imread(str(demo[1]))
    with pytest.raises(SamplingError, match='--points 128,0: not a pixel of the image'):
        SamplingAnalysis(detector).run(image, pixels=[(128.0, 0.0)])
