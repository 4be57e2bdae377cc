import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pit_det import CheckpointMismatchError, PiT, convert_pit_checkpoint, load_pit_weights
from pit_det.checkpoint import ConversionReport, detect_layout
from pit_det.cli.convert import convert_file

ROOT = Path(__file__).resolve().parents[1]


def reference(arch='ti'):
    model = PiT(arch=arch)
    model.init_weights()
    sd = dict(model.state_dict())
    c = model.pos_embed.shape[1]
    sd.update({'norm.weight': torch.ones(4 * c), 'norm.bias': torch.zeros(4 * c),
               'head.weight': torch.rand(1000, 4 * c), 'head.bias': torch.rand(1000)})
    return model, sd


def relayout(sd, layout):
    """Write the same weights in another layout: official pools.{i-1}, or timm < 0.9 transformers.{i-1}.pool."""
    out = {}
    for k, v in sd.items():
        if layout != 'timm' and k.startswith(('transformers.1.pool.', 'transformers.2.pool.')):
            i, rest = int(k.split('.')[1]), k.split('.pool.', 1)[1]
            k = f'pools.{i - 1}.{rest}' if layout == 'official' else f'transformers.{i - 1}.pool.{rest}'
        out[k] = v
    return out


@pytest.mark.parametrize('layout', ['timm', 'official', 'timm-legacy'])
def test_round_trip_through_files(layout, tmp_path):
    model, sd = reference('s')
    src = tmp_path / 'src.pth'
    torch.save({'model': relayout(sd, layout)} if layout == 'official' else relayout(sd, layout), src)
    dst = tmp_path / 'out' / 'pit_s.pth'
    report = convert_file(src, dst, arch='s')
    assert report.layout == layout
    assert sorted(report.dropped) == ['head.bias', 'head.weight', 'norm.bias', 'norm.weight']
    written = torch.load(dst, weights_only=True)['state_dict']
    assert all(k.startswith('backbone.') for k in written)
    fresh = PiT(arch='s')
    summary = load_pit_weights(fresh, dst)
    assert 'missing' not in summary and 'unexpected' not in summary
    for k, v in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, rtol=0, atol=0)


def test_same_key_different_layer_is_told_apart():
    _, sd = reference('ti')
    legacy = relayout(sd, 'timm-legacy')
    # both layouts hold transformers.1.pool.conv.weight, of different layers and shapes
    assert legacy['transformers.1.pool.conv.weight'].shape != sd['transformers.1.pool.conv.weight'].shape
    assert detect_layout(legacy) == 'timm-legacy' and detect_layout(sd) == 'timm'
    only_middle = {k: v for k, v in legacy.items() if not k.startswith('transformers.0.pool')}
    assert detect_layout(only_middle) == 'timm-legacy'
    converted = convert_pit_checkpoint(legacy)
    torch.testing.assert_close(converted['transformers.1.pool.conv.weight'], sd['transformers.1.pool.conv.weight'])
    torch.testing.assert_close(converted['transformers.2.pool.conv.weight'], sd['transformers.2.pool.conv.weight'])


def test_prefixes_and_report():
    _, sd = reference('ti')
    report = ConversionReport('')
    out = convert_pit_checkpoint({'state_dict': {f'module.backbone.{k}': v for k, v in relayout(sd, 'official').items()}
                                  | {'module.neck.conv.weight': torch.zeros(1)}}, report=report)
    assert 'pools.0.conv.weight' in dict(report.renamed) and 'neck.conv.weight' not in out
    assert 'transformers.1.pool.fc.bias' in out and 'head.weight' not in out


def test_architecture_mismatch_names_shapes(tmp_path):
    _, sd = reference('s')
    path = tmp_path / 's.pth'
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatchError, match=r'patch_embed.conv.weight: checkpoint \(144, 3, 16, 16\) '
                                                      r'vs model \(256, 3, 14, 14\)'):
        load_pit_weights(PiT(arch='b'), path)
    with pytest.raises(CheckpointMismatchError, match='cls_token'):
        load_pit_weights(PiT(arch='s-distilled'), path)


def test_nothing_matches_raises(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.weight': torch.zeros(10, 64)}, path)
    with pytest.raises(CheckpointMismatchError, match='no PiT keys'):
        load_pit_weights(PiT(arch='ti'), path)
    _, sd = reference('ti')
    partial = tmp_path / 'partial.pth'
    torch.save({k: v for k, v in sd.items() if k.startswith('patch_embed')}, partial)
    with pytest.raises(CheckpointMismatchError, match=r'only 2 of \d+ PiT tensors'):
        load_pit_weights(PiT(arch='ti'), partial)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match='convert_checkpoint.py.*init_cfg=None'):
        load_pit_weights(PiT(arch='ti'), tmp_path / 'nope.pth')


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ('pwned',))
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'patch_embed.conv.weight': torch.zeros(1)}, 'x': Evil()}, path)
    with pytest.raises(Exception, match='Weights only load failed'):
        load_pit_weights(PiT(arch='ti'), path)


def test_cli_prints_renames_and_never_overwrites(tmp_path):
    _, sd = reference('ti')
    src = tmp_path / 'official.pth'
    torch.save(relayout(sd, 'official'), src)
    before = src.read_bytes()
    cmd = [sys.executable, str(ROOT / 'tools' / 'convert_checkpoint.py')]
    run = subprocess.run(cmd + [str(src), str(tmp_path / 'dst.pth'), '--arch', 'ti'], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert 'pools.0.conv.weight -> transformers.1.pool.conv.weight' in run.stdout
    assert 'dropped: head.weight' in run.stdout
    again = subprocess.run(cmd + [str(src), str(tmp_path / 'dst.pth')], capture_output=True, text=True)
    assert again.returncode == 1 and '--force' in again.stderr
    same = subprocess.run(cmd + [str(src), str(src), '--force'], capture_output=True, text=True)
    assert same.returncode == 1 and 'never overwritten' in same.stderr
    wrong = subprocess.run(cmd + [str(src), str(tmp_path / 'b.pth'), '--arch', 'b'], capture_output=True, text=True)
    assert wrong.returncode == 1 and 'differ in shape' in wrong.stderr and not (tmp_path / 'b.pth').exists()
    assert src.read_bytes() == before
