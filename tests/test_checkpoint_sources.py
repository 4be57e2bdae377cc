"""Weights from URLs and the Hugging Face hub: a real HTTP server on localhost and a real hub cache folder."""

import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading

import pytest
import torch

from pit_det.models import CheckpointReadError, PiT


class Server:
    """Serves ``files`` (name -> bytes) on 127.0.0.1; names in ``truncate`` get half their body, then the
    connection closes. Counts GET requests per name."""

    def __init__(self):
        self.files, self.truncate, self.gets = {}, set(), {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, body_too):
                name = self.path.lstrip('/')
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                self.send_response(200)
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                if body_too:
                    server.gets[name] = server.gets.get(name, 0) + 1
                    self.wfile.write(data[: len(data) // 2] if name in server.truncate else data)
                    self.close_connection = True

            def do_GET(self):
                self._send(True)

            def do_HEAD(self):
                self._send(False)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name):
        return f'http://127.0.0.1:{self.httpd.server_address[1]}/{name}'

    def add(self, stem, data, good_hash=True):
        digest = hashlib.sha256(data).hexdigest()[:8] if good_hash else 'deadbeef'
        name = f'{stem}-{digest}.pth'
        self.files[name] = data
        return name


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


@pytest.fixture()
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    return tmp_path / 'torch' / 'hub' / 'checkpoints'


@pytest.fixture()
def official_pit(relayout):
    """``make(arch, path)``: a random PiT of ``arch`` saved at ``path`` in the official layout."""

    def make(arch, path):
        model = PiT(arch=arch)
        model.init_weights()
        torch.save({'model': relayout(model.state_dict(), 'official')}, path)
        return path

    return make


def cached(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_url_loads_like_the_file(official_pit, tmp_path, server, torch_home, mmengine_log):
    path = official_pit('s', tmp_path / 'pit_s.pth')
    name = server.add('pit_s', path.read_bytes())
    from_url = PiT(arch='s', init_cfg=dict(type='Pretrained', checkpoint=server.url(name)))
    from_url.init_weights()
    lines = list(mmengine_log)
    from_disk = PiT(arch='s', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    from_disk.init_weights()
    for key, value in from_disk.state_dict().items():
        torch.testing.assert_close(from_url.state_dict()[key], value, rtol=0, atol=0)
    assert from_url.load_report.layout == 'official' and from_url.load_report.loaded == len(from_disk.state_dict())
    assert cached(torch_home) == [name]
    # the log names the source and the cached file it resolved to, then the layout and the tensors loaded
    resolved = lines.index(f'weights {server.url(name)}: {torch_home / name}')
    assert lines[resolved + 1].startswith('PiT: layout official, 156/156 tensors loaded')
    assert from_disk.load_report.summary().startswith('layout official, ')
    PiT(arch='s', init_cfg=dict(type='Pretrained', checkpoint=server.url(name))).init_weights()
    assert server.gets[name] == 1  # the second load reads the cache


def test_a_wrong_hash_prefix_is_refused_and_nothing_is_kept(official_pit, tmp_path, server, torch_home):
    name = server.add('pit_ti', official_pit('ti', tmp_path / 'ti.pth').read_bytes(), good_hash=False)
    with pytest.raises(CheckpointReadError, match='was refused: invalid hash value'):
        PiT(arch='ti', init_cfg=dict(type='Pretrained', checkpoint=server.url(name))).init_weights()
    assert cached(torch_home) == []


def test_a_truncated_download_is_refused_and_nothing_is_kept(official_pit, tmp_path, server, torch_home):
    data = official_pit('ti', tmp_path / 'ti.pth').read_bytes()
    with_hash = server.add('pit_ti', data)
    server.files['pit_ti.pth'] = data  # no hash prefix in the name: nothing to check the bytes against
    server.truncate.update({with_hash, 'pit_ti.pth'})
    with pytest.raises(CheckpointReadError, match='was refused: invalid hash value'):
        PiT(arch='ti', init_cfg=dict(type='Pretrained', checkpoint=server.url(with_hash))).init_weights()
    assert cached(torch_home) == []
    with pytest.raises(CheckpointReadError, match='pit_ti.pth is not a readable PyTorch file'):
        PiT(arch='ti', init_cfg=dict(type='Pretrained', checkpoint=server.url('pit_ti.pth'))).init_weights()
    assert cached(torch_home) == []


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_a_pickle_carrying_a_callable_is_refused_unrun_and_not_kept(tmp_path, server, torch_home):
    marker = tmp_path / 'executed'
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'patch_embed.conv.weight': torch.zeros(1)}, 'meta': _Payload(marker)}, evil)
    name = server.add('pit_ti', evil.read_bytes())
    with pytest.raises(CheckpointReadError, match='Weights only load failed.*unsupported GLOBAL posix.system'):
        PiT(arch='ti', init_cfg=dict(type='Pretrained', checkpoint=server.url(name))).init_weights()
    assert not marker.exists() and cached(torch_home) == []


HF_SCRIPT = r"""
import sys, torch, timm
from mmengine.runner import load_checkpoint
from safetensors.torch import load_file
import pit_det
from pit_det.models import PiT
sys.path.insert(0, sys.argv[2])
from test_checkpoint import demo_detector
reference = load_file(sys.argv[1])
model = PiT(arch='ti', init_cfg=dict(type='Pretrained', checkpoint='hf-hub:timm/pit_ti_224.in1k'))
model.init_weights()
assert model.load_report.layout == 'timm', model.load_report
assert model.load_report.summary().startswith('layout timm, '), model.load_report.summary()
for key, value in model.state_dict().items():
    assert torch.equal(value, reference[key]), key
timm_model = timm.create_model('pit_ti_224', pretrained=False).eval()
timm_model.load_state_dict(reference)
x = torch.rand(1, 3, 224, 224)
with torch.no_grad():
    for ours, theirs in zip(model.eval()(x), timm_model.forward_intermediates(x, intermediates_only=True)):
        assert torch.allclose(ours, theirs, atol=1e-5)
detector = demo_detector()
load_checkpoint(detector, 'hf-hub:timm/pit_ti_224.in1k')  # mmdet's load_from
assert torch.equal(detector.backbone.pos_embed, reference['pos_embed'])
print('hf-hub ok')
"""


@pytest.mark.slow
def test_hf_hub_tag_loads_from_the_hub_cache_offline(root, tmp_path):
    import timm
    from safetensors.torch import save_file

    revision = 'a' * 40
    repo = tmp_path / 'hf' / 'hub' / 'models--timm--pit_ti_224.in1k'
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(revision)
    snapshot = repo / 'snapshots' / revision
    snapshot.mkdir(parents=True)
    weights = timm.create_model('pit_ti_224', pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in weights.items()}, snapshot / 'model.safetensors')
    env = dict(os.environ, HF_HOME=str(tmp_path / 'hf'), HF_HUB_OFFLINE='1')
    run = subprocess.run(
        [sys.executable, '-c', HF_SCRIPT, str(snapshot / 'model.safetensors'), str(root / 'tests')],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0 and 'hf-hub ok' in run.stdout, run.stderr[-3000:]
    # the log names the tag and the cached file it resolved to
    assert f'weights hf-hub:timm/pit_ti_224.in1k: {snapshot / "model.safetensors"}' in run.stdout + run.stderr
    convert = subprocess.run(
        [
            sys.executable,
            str(root / 'tools' / 'convert_checkpoint.py'),
            'hf-hub:timm/pit_ti_224.in1k',
            '--out',
            str(tmp_path / 'pit_ti.pth'),
            '--arch',
            'ti',
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert convert.returncode == 0 and 'layout: timm' in convert.stdout, convert.stderr[-2000:]
    # offline and not cached: one message with the cache folder and the two ways out, no traceback
    missing = subprocess.run(
        [
            sys.executable,
            str(root / 'tools' / 'convert_checkpoint.py'),
            'hf-hub:timm/pit_b_224.in1k',
            '--out',
            str(tmp_path / 'pit_b.pth'),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert missing.returncode == 1 and 'Traceback' not in missing.stderr
    assert f'not in the Hugging Face cache {tmp_path / "hf" / "hub"}' in missing.stderr
    assert 'Two ways out' in missing.stderr


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_train_with_one_download(official_pit, root, tmp_path, server, torch_home):
    from mmengine.runner import load_checkpoint
    from test_checkpoint import demo_detector

    from pit_det.data import make_synthetic_coco
    from pit_det.demo import load_demo_config

    name = server.add('pit_ti', official_pit('ti', tmp_path / 'ti.pth').read_bytes())
    data = make_synthetic_coco(tmp_path / 'data', num_train=8, num_val=4)
    cfg = load_demo_config(data, tmp_path / 'work', max_epochs=1)
    cfg.train_dataloader.batch_size = cfg.val_dataloader.batch_size = 2
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=server.url(name))
    config = tmp_path / 'config.py'
    cfg.dump(str(config))
    run = subprocess.run(
        [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--nproc_per_node',
            '2',
            '--master_port',
            str(_free_port()),
            str(root / 'tools' / 'train.py'),
            str(config),
            '--launcher',
            'pytorch',
            '--work-dir',
            str(tmp_path / 'work'),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS='1'),
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    log = run.stdout + run.stderr
    assert 'Distributed launcher: pytorch' in log and 'Distributed training: True' in log and 'coco/bbox_mAP' in log
    assert server.gets == {name: 1} and cached(torch_home) == [name]  # rank 0 downloaded, rank 1 read the cache
    checkpoint = tmp_path / 'work' / 'epoch_1.pth'
    assert json.loads(json.dumps(torch.load(checkpoint, weights_only=True)['meta']['epoch'])) == 1
    load_checkpoint(demo_detector(), str(checkpoint))


def test_two_urls_with_one_file_name_never_share_a_cached_file(official_pit, tmp_path, server, torch_home):
    from pit_det.cli.convert import main as convert

    ti, s = official_pit('ti', tmp_path / 'ti.pth'), official_pit('s', tmp_path / 's.pth')
    server.files['d1/model.pth'], server.files['d2/model.pth'] = ti.read_bytes(), s.read_bytes()
    assert convert([server.url('d1/model.pth'), '--out', str(tmp_path / 'a.pth'), '--arch', 'ti']) == 0
    # another model behind the same file name: downloaded for itself, not read from the first one's cache
    assert convert([server.url('d2/model.pth'), '--out', str(tmp_path / 'b.pth'), '--arch', 's']) == 0
    assert server.gets == {'d1/model.pth': 1, 'd2/model.pth': 1}
    a = torch.load(tmp_path / 'a.pth', weights_only=True)['state_dict']
    b = torch.load(tmp_path / 'b.pth', weights_only=True)['state_dict']
    assert a['backbone.pos_embed'].shape[1] == 64 and b['backbone.pos_embed'].shape[1] == 144  # ti and s
    cached_files = sorted(p.relative_to(torch_home).parts[-1] for p in torch_home.rglob('*.pth'))
    assert cached_files == ['model.pth', 'model.pth'] and len(list(torch_home.iterdir())) == 2
    assert convert([server.url('d1/model.pth'), '--out', str(tmp_path / 'c.pth'), '--arch', 'ti']) == 0
    assert server.gets['d1/model.pth'] == 1  # the cache still serves each URL its own file


@pytest.mark.slow
def test_an_unreachable_hub_fails_at_once_with_one_message(root, tmp_path):
    """No network and HF_HUB_OFFLINE unset: one probe, not huggingface_hub's five retries per file."""
    import time

    with socket.socket() as s:  # a port nothing listens on: the connection is refused at once, as without network
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != 'HF_HUB_OFFLINE'}
    env.update(HF_HOME=str(tmp_path / 'hf'), HF_ENDPOINT=f'http://127.0.0.1:{port}')
    outputs = []
    for argv in (
        [str(root / 'tools' / 'convert_checkpoint.py'), 'hf-hub:timm/pit_s_224.in1k', '--out', str(tmp_path / 'a')],
        [str(root / 'tools' / 'analyze_attention.py'), 'pit-s=hf-hub:timm/pit_s_224.in1k', '--images', str(tmp_path)],
    ):
        start = time.perf_counter()
        run = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=120)
        elapsed = time.perf_counter() - start
        assert run.returncode == 1 and 'Traceback' not in run.stderr, run.stderr[-2000:]
        assert run.stderr.count('error: ') == 1 and 'Retrying' not in run.stderr and 'retry' not in run.stderr
        assert 'weights hf-hub:timm/pit_s_224.in1k are not in the Hugging Face cache' in run.stderr
        outputs.append(run.stderr.split('error: ', 1)[1])
        assert elapsed < 30, f'{argv[0]} took {elapsed:.0f} s to fail'  # five retries per file took 52 s
    assert outputs[0] == outputs[1]  # one message in every entry point
