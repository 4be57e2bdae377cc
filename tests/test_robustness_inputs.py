"""pit-det-test-robustness checks every argument before it evaluates anything."""

import pytest

from pit_det.cli import test_robustness


@pytest.mark.parametrize('ratio', ['1.0', '-0.1'])
def test_robustness_refuses_a_bad_occlusion_before_any_evaluation(tmp_path, capsys, ratio):
    config, checkpoint = tmp_path / 'c.py', tmp_path / 'm.pth'
    config.write_text('x = 1\n')
    checkpoint.write_bytes(b'w')
    # the config is no detector at all: anything built or evaluated before the check would fail otherwise
    assert test_robustness.main([str(config), str(checkpoint), '--corruptions', '--occlusion', '0.3', ratio]) == 1
    captured = capsys.readouterr()
    assert f'--occlusion {float(ratio)}: give fractions of the image area between 0 and 1' in captured.err
    assert 'mAP' not in captured.out and 'Traceback' not in captured.err


def test_robustness_argument_errors(tmp_path, capsys):
    config, checkpoint = tmp_path / 'c.py', tmp_path / 'm.pth'
    config.write_text('x = 1\n')
    checkpoint.write_bytes(b'w')
    out = tmp_path / 'out.txt'
    out.write_text('mine')
    assert (
        test_robustness.main([str(config), str(checkpoint), '--corruptions', '--occlusion', '--out-dir', str(out)]) == 1
    )
    assert f'--out-dir {out} is a file' in capsys.readouterr().err and out.read_text() == 'mine'
    for content, fact in (
        ('[1, 2]', 'a JSON list'),
        ('{"clean": 0.5}', 'no corruptions, occlusion, mPC, rPC'),
        ('{"clean": "x", "corruptions": {}, "occlusion": {}, "mPC": null, "rPC": null}', 'clean: a number'),
        # three that passed the check and then failed in the table with a traceback
        (
            '{"clean": 0.5, "corruptions": {}, "occlusion": {}, "mPC": "high", "rPC": null}',
            'mPC and rPC: numbers or null',
        ),
        (
            '{"clean": 0.5, "corruptions": {"noise": {"worst": 0.1}}, "occlusion": {}, "mPC": 0.1, "rPC": 0.2}',
            'severities whole numbers',
        ),
        ('{"clean": 0.5, "corruptions": {}, "occlusion": {"half": 0.2}, "mPC": null, "rPC": null}', 'ratios numbers'),
    ):
        report = tmp_path / 'r.json'
        report.write_text(content)
        assert test_robustness.main(['--compare', str(report)]) == 1
        err = capsys.readouterr().err
        assert f'--compare {report}' in err and fact in err and 'Traceback' not in err
