import runpy
import sys

import pytest
import torch

from pit_det import CheckpointMismatchError, PiT, convert_pit_checkpoint, load_pit_weights
from pit_det.cli.convert import convert_pit_file
from pit_det.models import ConversionReport
from pit_det.models.pit_layout import detect_layout


def reference(arch='ti'):
    model = PiT(arch=arch)
    model.init_weights()
    sd = dict(model.state_dict())
    c = model.pos_embed.shape[1]
    sd.update(
        {
            'norm.weight': torch.ones(4 * c),
            'norm.bias': torch.zeros(4 * c),
            'head.weight': torch.rand(1000, 4 * c),
            'head.bias': torch.rand(1000),
        }
    )
    return model, sd


@pytest.mark.parametrize('layout', ['timm', 'official', 'timm-legacy'])
def test_round_trip_through_files(relayout, layout, tmp_path):
    model, sd = reference('s')
    src = tmp_path / 'src.pth'
    torch.save({'model': relayout(sd, layout)} if layout == 'official' else relayout(sd, layout), src)
    dst = tmp_path / 'out' / 'pit_s.pth'
    report = convert_pit_file(src, dst, arch='s')
    assert report.layout == layout
    assert sorted(report.dropped) == ['head.bias', 'head.weight', 'norm.bias', 'norm.weight']
    written = torch.load(dst, weights_only=True)['state_dict']
    assert all(k.startswith('backbone.') for k in written)
    fresh = PiT(arch='s')
    report = load_pit_weights(fresh, dst)
    assert report.missing == [] and report.unexpected == [] and report.loaded == report.total == len(fresh.state_dict())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, rtol=0, atol=0)


def test_same_key_different_layer_is_told_apart(relayout):
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


def test_prefixes_and_report(relayout):
    _, sd = reference('ti')
    report = ConversionReport('')
    out = convert_pit_checkpoint(
        {
            'state_dict': {f'module.backbone.{k}': v for k, v in relayout(sd, 'official').items()}
            | {'module.neck.conv.weight': torch.zeros(1)}
        },
        report=report,
    )
    assert 'pools.0.conv.weight' in dict(report.renamed) and 'neck.conv.weight' not in out
    assert 'transformers.1.pool.fc.bias' in out and 'head.weight' not in out


def test_architecture_mismatch_names_shapes(tmp_path):
    _, sd = reference('s')
    path = tmp_path / 's.pth'
    torch.save(sd, path)
    with pytest.raises(
        CheckpointMismatchError,
        match=r'patch_embed.conv.weight: checkpoint \(144, 3, 16, 16\) '
        r'vs model \(256, 3, 14, 14\)',
    ):
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


def test_cli_prints_renames_and_never_overwrites(root, relayout, tmp_path, capsys):
    _, sd = reference('ti')
    src = tmp_path / 'official.pth'
    torch.save(relayout(sd, 'official'), src)
    before = src.read_bytes()
    script = root / 'tools' / 'convert_checkpoint.py'  # the script itself, in this process
    with pytest.raises(SystemExit) as stop, pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, 'argv', [str(script), str(src), '--out', str(tmp_path / 'dst.pth'), '--arch', 'ti'])
        runpy.run_path(str(script), run_name='__main__')
    printed = capsys.readouterr()
    assert stop.value.code in (0, None), printed.err
    assert 'pools.0.conv.weight -> transformers.1.pool.conv.weight' in printed.out
    assert 'dropped: head.weight' in printed.out
    from pit_det.cli.convert import main as convert

    assert convert([str(src), '--out', str(tmp_path / 'dst.pth')]) == 1
    assert '--force' in capsys.readouterr().err
    assert convert([str(src), '--out', str(src), '--force']) == 1
    assert f'--out {src} is the source checkpoint' in capsys.readouterr().err
    assert convert([str(src), '--out', str(tmp_path / 'b.pth'), '--arch', 'b']) == 1
    assert 'differ in shape' in capsys.readouterr().err and not (tmp_path / 'b.pth').exists()
    assert src.read_bytes() == before


# ------------------------------------------------------------------------------------ one loading path, its faults


def demo_detector():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    from pit_det.demo import DEMO_CONFIG

    model = MODELS.build(Config.fromfile(str(DEMO_CONFIG)).model)
    model.init_weights()
    return model


def test_every_source_converts_once(relayout, tmp_path, monkeypatch):
    import pit_det.models.pit as pit_module

    calls = []
    real = pit_module.convert_pit_checkpoint
    monkeypatch.setattr(pit_module, 'convert_pit_checkpoint', lambda *a, **k: calls.append(1) or real(*a, **k))
    _, sd = reference('ti')
    path = tmp_path / 'official.pth'
    torch.save({'model': relayout(sd, 'official')}, path)
    model = PiT(arch='ti', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert len(calls) == 1 and model.load_report.layout == 'official' and model.is_init
    torch.testing.assert_close(model.transformers[1].pool.conv.weight, sd['transformers.1.pool.conv.weight'])
    load_pit_weights(PiT(arch='ti'), path)
    assert len(calls) == 2


@pytest.mark.parametrize(
    'content,message',
    [
        (b'', 'is empty'),
        (b'this is a text file, not a checkpoint', 'not a readable PyTorch file'),
        ('truncated', 'not a readable PyTorch file'),
        ('folder', 'is a folder'),
    ],
)
def test_unreadable_checkpoint_is_a_clear_error_everywhere(tmp_path, capsys, content, message):
    from mmengine.runner import load_checkpoint

    from pit_det.models import CheckpointReadError

    path = tmp_path / 'bad.pth'
    if content == 'truncated':
        torch.save(reference('ti')[1], path)
        path.write_bytes(path.read_bytes()[:5000])
    elif content == 'folder':
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointReadError, match=message):  # init_cfg
        PiT(arch='ti', init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()
    with pytest.raises(CheckpointReadError, match=message):  # load_from, --resume, mim test, infer
        load_checkpoint(demo_detector(), str(path))
    from pit_det.cli.convert import main as convert

    assert convert([str(path), '--out', str(tmp_path / 'out.pth')]) == 1  # the command: its error line, exit 1
    assert any(line.startswith('error: ') and message in line for line in capsys.readouterr().err.splitlines())


def test_load_from_another_arch_is_an_error(relayout, tmp_path):
    from mmengine.runner import load_checkpoint

    _, sd = reference('b')
    src, converted = tmp_path / 'pit_b_official.pth', tmp_path / 'pit_b.pth'
    torch.save(relayout(sd, 'official'), src)
    convert_pit_file(src, converted)
    with pytest.raises(
        CheckpointMismatchError,
        match=r'does not fit this PiT.*patch_embed.conv.weight: checkpoint '
        r'\(256, 3, 14, 14\) vs model \(64, 3, 16, 16\)',
    ):
        load_checkpoint(demo_detector(), str(converted))


def test_a_foreign_state_dict_is_not_a_detector_checkpoint(tmp_path):
    import torchvision
    from mmengine.runner import load_checkpoint

    path = tmp_path / 'resnet50.pth'
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match=r'holds only 0 of the \d+ tensors of this FastDeformableDETR'):
        load_checkpoint(demo_detector(), str(path))


def test_detector_checkpoints_that_fit_load(tmp_path, mmengine_log):
    from mmengine.runner import load_checkpoint

    trained = demo_detector()
    path = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': trained.state_dict(), 'meta': {}}, path)
    fresh = demo_detector()
    load_checkpoint(fresh, str(path))
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, rtol=0, atol=0)
    # another class set: only the classification layers differ; they keep their initialisation (fine-tuning)
    other = {
        k: (torch.zeros(5, *v.shape[1:]) if k.startswith('bbox_head.cls_branches') else v)
        for k, v in trained.state_dict().items()
    }
    torch.save({'state_dict': other}, path)
    torch.manual_seed(1)
    tuned = demo_detector()
    initial = {k: v.clone() for k, v in tuned.state_dict().items()}
    del mmengine_log[:]
    load_checkpoint(tuned, str(path))
    warning = next(line for line in mmengine_log if 'classification layers differ in size' in line)
    assert 'bbox_head.cls_branches.0.weight: checkpoint (5, 128) vs model (3, 128)' in warning
    for key, value in tuned.state_dict().items():
        expected = initial[key] if key.startswith('bbox_head.cls_branches') else trained.state_dict()[key]
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=key)
    # a backbone-only file from pit-det-convert is a valid load_from
    _, sd = reference('ti')
    torch.save(sd, tmp_path / 'ti.pth')
    convert_pit_file(tmp_path / 'ti.pth', tmp_path / 'ti_converted.pth')
    model = demo_detector()
    load_checkpoint(model, str(tmp_path / 'ti_converted.pth'))
    torch.testing.assert_close(model.backbone.pos_embed, sd['pos_embed'])


def test_converted_file_respects_the_umask(tmp_path):
    import os

    _, sd = reference('ti')
    torch.save(sd, tmp_path / 'src.pth')
    old = os.umask(0o022)
    try:
        convert_pit_file(tmp_path / 'src.pth', tmp_path / 'dst.pth')
    finally:
        os.umask(old)
    assert (tmp_path / 'dst.pth').stat().st_mode & 0o777 == 0o644
