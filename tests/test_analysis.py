"""The attention analysis: analytic cases, PiT's token geometry, and a run of the command."""

import json
import math

import pytest
import torch

from pit_det.analysis.attention import attention_stats, token_centres
from pit_det.cli.analyze_attention import main
from pit_det.data import make_synthetic_coco
from pit_det.models import PiT, ViTPyramid


def grid(h, w, spacing=8.0):
    ys, xs = torch.meshgrid(torch.arange(h) * spacing, torch.arange(w) * spacing, indexing='ij')
    return torch.stack((xs.flatten(), ys.flatten()), -1).double()


def test_uniform_attention_gives_log_n_and_the_mean_pairwise_distance():
    centres = grid(3, 4)
    n = len(centres)
    attn = torch.rand(2, 3, n + 1, n + 1)  # one class token, then uniform over the spatial keys
    attn[..., 1:, 1:] = 1.0
    entropy, distance, frac, count = attention_stats(attn, 1, centres, diagonal=10.0)
    pairwise = sum(math.dist(a, b) for a in centres.tolist() for b in centres.tolist()) / n**2
    assert entropy == pytest.approx(math.log(n)) and distance == pytest.approx(pairwise)
    assert frac == pytest.approx(pairwise / 10.0) and count == 2 * 3 * n


def test_attention_on_the_query_itself_gives_zero_and_zero():
    n = 12
    attn = torch.eye(n + 1).expand(2, 4, n + 1, n + 1)
    entropy, distance, _, _ = attention_stats(attn, 1, grid(3, 4), diagonal=1.0)
    assert entropy == pytest.approx(0.0, abs=1e-12) and distance == pytest.approx(0.0, abs=1e-12)


def test_token_centres_follow_patch_embedding_and_pooling():
    stages = token_centres(PiT(arch='s'), 224, 224)
    assert [s[2] for s in stages] == [(27, 27), (14, 14), (7, 7)] and [s[1] for s in stages] == [8, 16, 32]
    first, second = stages[0][0].view(27, 27, 2), stages[1][0].view(14, 14, 2)
    assert first[0, 0].tolist() == [8.0, 8.0] and first[0, 1].tolist() == [16.0, 8.0]  # j * 8 + 16 / 2
    assert torch.equal(second, first[::2, ::2])  # a 3x3/s2/p1 pooling centres output j on input 2j
    vit = token_centres(ViTPyramid(), 400, 666)
    assert vit[0][2] == (25, 42) and vit[0][0][0].tolist() == [8.0, 8.0] and vit[0][0][1].tolist() == [24.0, 8.0]


def test_command_writes_json_csv_and_png(tmp_path, capsys):
    data = make_synthetic_coco(tmp_path / 'data', num_train=4, num_val=1)
    deit = tmp_path / 'deit.pth'
    import timm

    torch.save(timm.create_model('deit_small_patch16_224').state_dict(), deit)
    out = tmp_path / 'out'
    assert (
        main(['pit-ti', f'vit-s={deit}', '--images', str(data / 'train'), '--size', '64x64', '--out-dir', str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert 'pit-ti: 4/4 images' in printed and 'layout timm-vit, 148/148 tensors loaded' in printed
    models = json.loads((out / 'attention.json').read_text())['models']
    assert [m['name'] for m in models] == ['pit-ti', f'vit-s={deit}']
    pit, vit = models[0]['blocks'], models[1]['blocks']
    assert len(pit) == 12 and [b['stage'] for b in pit] == [0] * 2 + [1] * 6 + [2] * 4 and len(vit) == 12
    assert set(pit[0]) == {'index', 'stage', 'tokens', 'entropy', 'distance_px', 'distance_frac'}
    assert pit[0]['tokens'] == 49 and vit[0]['tokens'] == 16
    for block in pit + vit:
        assert 0 <= block['entropy'] <= math.log(block['tokens']) + 1e-9 and 0 <= block['distance_frac'] < 1
    assert len((out / 'attention.csv').read_text().splitlines()) == 1 + 24
    assert (out / 'attention.png').stat().st_size > 10_000


def test_command_errors(tmp_path, capsys):
    assert main(['pit-s', '--images', str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f'--images {tmp_path}: no .png, .jpg' in err and 'files in it' in err  # an empty folder
    make_synthetic_coco(tmp_path / 'd', num_train=1, num_val=1)
    assert main(['resnet50', '--images', str(tmp_path / 'd' / 'train')]) == 1
    assert "unknown backbone 'resnet50'" in capsys.readouterr().err


def test_every_argument_is_checked_before_the_first_model(tmp_path, capsys):
    data = make_synthetic_coco(tmp_path / 'data', num_train=2, num_val=1)
    images = str(data / 'train')
    # the third model is unknown: nothing is analysed (the first two would take minutes at a real size)
    assert main(['pit-ti', 'pit-b', 'pit-q', '--images', images, '--size', '64x64']) == 1
    out, err = capsys.readouterr()
    assert "unknown backbone 'pit-q'" in err and 'blocks in' not in out and 'images at' not in out
    assert main(['pit-ti', f'pit-s={tmp_path / "missing.pth"}', '--images', images]) == 1
    assert str(tmp_path / 'missing.pth') in capsys.readouterr().err
    taken = tmp_path / 'taken.txt'
    taken.write_text('a file of the user')
    assert main(['pit-ti', '--images', images, '--out-dir', str(taken)]) == 1
    out, err = capsys.readouterr()
    assert (
        f'--out-dir {taken} is a file' in err and 'images at' not in out and taken.read_text() == 'a file of the user'
    )
    checkpoint = tmp_path / 'out' / 'attention.json'  # a checkpoint where the tool would write its report
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b'weights')
    assert main([f'pit-ti={checkpoint}', '--images', images, '--out-dir', str(tmp_path / 'out')]) == 1
    err = capsys.readouterr().err
    assert f'its file {checkpoint} is the checkpoint' in err and checkpoint.read_bytes() == b'weights'


def test_a_folder_of_files_that_are_not_images(tmp_path, capsys):
    (tmp_path / 'a.png').write_text('not a picture')
    assert main(['pit-ti', '--images', str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert 'a.png is not an image' in err and 'Traceback' not in err
