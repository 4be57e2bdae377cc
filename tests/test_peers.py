"""Peers from Hugging Face transformers in the latency tool: built offline, the same architecture as pit-det's front
door where they claim it, refused clearly where they cannot run."""

import importlib.util
import sys

import pytest
import torch

from pit_det.benchmark import BenchmarkError, build_benchmark_detector, run_benchmark
from pit_det.benchmark.builders import build_call
from pit_det.benchmark.peers import PEERS
from pit_det.cli.benchmark import main

# make test installs the peers extra; without it only the refusals run
needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec('transformers') is None, reason="pip install 'pit-det[peers]'"
)

_socket_events: list[str] | None = None


def _record_sockets(event: str, args) -> None:
    # an audit hook cannot be removed: it records only while a test holds the list
    if _socket_events is not None and (event.startswith('socket.') or event.startswith('urllib.')):
        _socket_events.append(event)


sys.addaudithook(_record_sockets)


@pytest.fixture
def socket_events():
    global _socket_events
    _socket_events = []
    try:
        yield _socket_events
    finally:
        _socket_events = None


def test_the_audit_hook_sees_a_connection_attempt(socket_events):
    """The hook the next test relies on records what a download would do first."""
    import socket

    with pytest.raises(OSError):
        socket.create_connection(('127.0.0.1', 9), timeout=1)  # the discard port: nothing listens here
    assert 'socket.connect' in socket_events


@needs_transformers
@pytest.mark.slow
def test_every_peer_builds_and_predicts_without_a_connection(socket_events):
    specs = ['hf:deformable-detr@pit_s', *(f'hf:{name}' for name in PEERS)]
    for spec in specs:
        built = build_call(spec, 'predict', (280, 280), 1, 'cpu')
        with torch.inference_mode():
            (pred,) = built.call(torch.rand(1, 3, 280, 280))
        assert pred['boxes'].shape[1] == 4 and len(pred['boxes']) == len(pred['scores']) > 0, spec
        assert (pred['boxes'][:, 2:] >= pred['boxes'][:, :2]).all(), spec
    assert socket_events == []


@needs_transformers
def test_the_pit_peer_is_the_front_doors_architecture():
    """Queries, levels, layers and PiT-S backbone as pit_s_deformable_detr: parameters within 0.5% (transformers
    keeps a query position embedding mmdet folds into its query embedding) and the same backbone's weights count."""
    peer = build_call('hf:deformable-detr@pit_s', 'forward', (224, 224), 1, 'cpu').model
    ours, _ = build_benchmark_detector('pit_s_deformable_detr')
    config = peer.config
    assert (config.num_queries, config.num_feature_levels, config.encoder_layers, config.decoder_layers) == (
        300,
        4,
        6,
        6,
    )
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(peer.model.backbone.model) == pytest.approx(count(ours.backbone), rel=0.01)
    assert count(peer) == pytest.approx(count(ours), rel=0.005)


@pytest.mark.parametrize(
    'kwargs,message',
    [
        (dict(models=['hf:yolo']), "unknown peer 'yolo'; use one of hf:deformable-detr"),
        (dict(models=['hf:d-fine@pit_s']), 'a backbone after @ is for hf:deformable-detr'),
        (dict(models=['hf:deformable-detr@resnet18']), 'a backbone after @ is for hf:deformable-detr, one of pit_s'),
        (dict(models=['hf:d-fine'], mode='backbone'), 'a peer is timed whole, in --mode forward or predict'),
        (dict(models=['hf:d-fine'], mode='train'), 'a peer is timed whole'),
        (dict(models=['hf:d-fine'], by_part=True), '--by-part names the parts of an mmdet detector'),
        (dict(models=['hf:rf-detr'], sizes=[(224, 224)]), 'this size has 256; give a larger --size .*560x560'),
        (dict(models=['hf:rt-detr-v2'], sizes=[(64, 96)]), 'this size has 126'),
    ],
)
def test_bad_peer_requests(kwargs, message):
    args = dict(sizes=[(320, 320)], mode='predict', warmup=0, iters=1, progress=lambda m: None) | kwargs
    with pytest.raises(BenchmarkError, match=message):
        run_benchmark(**args)


def test_without_transformers_the_extra_is_named(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, 'transformers', None)  # what `import transformers` meets where it is absent
    assert main(['hf:d-fine', '--mode', 'predict', '--size', '320x320', '--out-dir', str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "which is not installed; pip install 'pit-det[peers]'" in err and 'Traceback' not in err
    assert not any(tmp_path.iterdir())


@needs_transformers
@pytest.mark.slow
def test_one_interleaved_table_with_a_ratio_column(tmp_path, capsys):
    argv = ['pit_s_deformable_detr', 'hf:rf-detr', '--mode', 'predict']
    argv += ['--size', '300x300', '--warmup', '0', '--iters', '2', '--out-dir', str(tmp_path), '--plot']
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert 'round 2/2: pit_s_deformable_detr ' in out and ', hf:rf-detr ' in out
    header = next(line for line in out.splitlines() if line.startswith('| model'))
    assert '| x ref |' in header
    rows = {line.split('|')[1].strip(): line for line in out.splitlines() if line.startswith('| ')}
    assert rows['pit_s_deformable_detr'].split('|')[7].strip() == '1.00'
    ratio = float(rows['hf:rf-detr'].split('|')[7])
    median = lambda name: float(rows[name].split('|')[6])  # noqa: E731
    assert ratio == pytest.approx(median('hf:rf-detr') / median('pit_s_deformable_detr'), abs=0.01)
    assert 'hf:rf-detr 300x300: RF-DETR, windowed DINOv2-S (default config); padded to 336x336' in out
    assert float(rows['hf:rf-detr'].split('|')[13]) > 1  # its GMACs were counted
    assert (tmp_path / 'peers.png').stat().st_size > 10_000  # latency against the published APs
