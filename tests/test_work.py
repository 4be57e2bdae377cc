"""What the benchmark says of work and limits: MAC counts against hand counts, the probes, the columns."""

from pathlib import Path

import pytest
import torch
from timm.layers import Attention
from torch import nn

from pit_det.benchmark import BenchmarkError, run_benchmark
from pit_det.benchmark.builders import build_benchmark_detector, build_call, detector_call
from pit_det.benchmark.work import copy_bandwidth_gb_s, count_work, matmul_probes, precision_of
from pit_det.cli.benchmark import main
from pit_det.ops import FusedMultiScaleDeformableAttention, level_starts, set_cpu_deform_attn

DEMO = 'configs/demo/deformable-detr_pit-ti_synthetic_cpu.py'


def encoder_inputs(shapes: list[tuple[int, int]], dims: int) -> dict:
    spatial = torch.tensor(shapes)
    tokens = int(spatial.prod(1).sum())
    return dict(
        query=torch.rand(1, tokens, dims),
        query_pos=torch.rand(1, tokens, dims),
        key_padding_mask=None,
        spatial_shapes=spatial,
        level_start_index=level_starts(spatial),
        reference_points=torch.rand(1, tokens, len(shapes), 2),
    )


@pytest.mark.parametrize('fused', [True, False])
def test_one_encoder_layer_is_its_hand_count(fused):
    from mmdet.models.layers import DeformableDetrTransformerEncoderLayer

    d, heads, levels, points, ffn = 256, 8, 4, 4, 1024
    layer = DeformableDetrTransformerEncoderLayer(
        self_attn_cfg=dict(embed_dims=d, num_heads=heads, num_levels=levels, num_points=points, batch_first=True),
        ffn_cfg=dict(embed_dims=d, feedforward_channels=ffn),
    ).eval()
    set_cpu_deform_attn(layer, 'fused' if fused else 'mmcv')
    shapes = [(12, 20), (6, 10), (3, 5), (2, 3)]
    inputs = encoder_inputs(shapes, d)
    n = inputs['query'].shape[1]
    hand = (
        n * d * d  # value projection
        + n * d * heads * levels * points * 2  # sampling offsets
        + n * d * heads * levels * points  # attention weights
        + 5 * n * heads * levels * points * (d // heads)  # 4 bilinear taps + the weight, per point and channel
        + n * d * d  # output projection
        + n * d * ffn
        + n * ffn * d  # feed-forward network
        + 2 * 5 * n * d
    )  # two LayerNorms, as mmengine counts them (5 per element with an affine)
    work = count_work(lambda q: layer(q, **{k: v for k, v in inputs.items() if k != 'query'}), layer, inputs['query'])
    if fused:
        assert work.gmacs * 1e9 == pytest.approx(hand, rel=1e-9)
    else:  # mmcv's pure-PyTorch op: mmengine counts grid_sample's 4 taps; the weighted sum is element-wise, not counted
        assert work.gmacs * 1e9 == pytest.approx(hand - n * heads * levels * points * (d // heads), rel=1e-9)


def hook_count(model: nn.Module, call, x: torch.Tensor) -> float:
    """MACs by forward hooks on the layers alone, a count independent of the tracer: every Linear and Conv2d, each
    timm attention's two matrix products, nn.MultiheadAttention's projections and products, the deformable sampling
    by its formula (norms and element-wise operations left out)."""
    total = [0]

    def linear(m, args, kwargs, out):
        total[0] += out.numel() * m.in_features

    def conv(m, args, kwargs, out):
        total[0] += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    def attention(m, args, kwargs, out):  # q @ k^T and weights @ v over all N tokens of (B, N, C)
        b, tokens, dims = args[0].shape
        total[0] += 2 * b * tokens * tokens * dims

    def mha(m, args, kwargs, out):  # its projections run functionally: no Linear hook sees them
        q, k = (kwargs[name] if name in kwargs else args[i] for i, name in enumerate(('query', 'key')))
        batch_dim = 0 if m.batch_first else 1
        b, lq, lk = q.shape[batch_dim], q.shape[1 - batch_dim], k.shape[1 - batch_dim]
        total[0] += b * (2 * lq + 2 * lk) * m.embed_dim * m.embed_dim  # q, k, v and output projections
        total[0] += 2 * b * lq * lk * m.embed_dim

    def deform(m, args, kwargs, out):  # batch-first output (bs, queries, embed_dims)
        total[0] += 5 * out.shape[0] * out.shape[1] * m.num_levels * m.num_points * m.embed_dims

    handles = []
    for module in model.modules():
        kinds = (
            (nn.Linear, linear),
            (nn.Conv2d, conv),
            (nn.MultiheadAttention, mha),
            (FusedMultiScaleDeformableAttention, deform),
            (Attention, attention),
        )
        hook = next((h for kind, h in kinds if isinstance(module, kind)), None)  # mmcv's Linear is an nn.Linear
        if hook is not None:
            handles.append(module.register_forward_hook(hook, with_kwargs=True))
    with torch.no_grad():
        call(x)
    for handle in handles:
        handle.remove()
    return total[0]


def test_the_pit_s_detector_is_its_independent_hook_count():
    model, _ = build_benchmark_detector('configs/pit_s_deformable_detr.py')
    model.eval()
    size = (128, 192)
    call = detector_call(model, 'forward', size, 1)
    x = torch.rand(1, 3, *size)
    work = count_work(call, model, x)
    hand = hook_count(model, call, x)
    assert work.gmacs * 1e9 == pytest.approx(hand, rel=0.01)  # the tracer also counts the norms
    assert set(work.parts) == {'backbone', 'neck', 'encoder', 'decoder', 'bbox_head', 'other'}
    assert sum(work.parts.values()) == pytest.approx(work.gmacs)


DETECTOR_CONFIGS = sorted(str(p) for p in [*Path('configs').glob('*.py'), *Path('configs/demo').glob('*.py')])


@pytest.mark.slow
def test_every_config_detector_gets_a_count():
    """No ``-`` in the GMACs column: every config's detector is counted, its deformable attention included (a size
    with the 900 positions DINO picks its queries among)."""
    assert len(DETECTOR_CONFIGS) >= 19
    for config in DETECTOR_CONFIGS:
        work = build_call(config, 'predict', (224, 320), 1, 'cpu', count_macs=True).work
        assert work.gmacs > 0 and work.parts['encoder'] > 0 and work.parts['decoder'] > 0, config
        assert work.operators['ms_deform_attn'] > 0, config  # the sampling's handle ran


def test_sdpa_is_counted():
    class Sdpa(nn.Module):
        def forward(self, x):
            return nn.functional.scaled_dot_product_attention(x, x[:, :, :7], x[:, :, :7, :5])

    x = torch.rand(2, 3, 11, 16)  # (batch, heads, L, E); 7 keys, values of 5
    assert count_work(Sdpa(), Sdpa(), x).gmacs * 1e9 == 2 * 3 * 11 * 7 * (16 + 5)


def test_probes_measure_positive_rates_and_rows_name_their_precision():
    probes = matmul_probes('cpu')
    assert 'matmul fp32' in probes
    call, gmacs = probes['matmul fp32']
    assert call().shape == (4096, 4096) and gmacs == pytest.approx(4096**3 / 1e9)
    assert copy_bandwidth_gb_s('cpu', mib=16, repeats=2) > 0
    assert precision_of('eager', 'cpu') == precision_of('compile', 'cpu') == 'fp32'
    assert precision_of('bf16', 'cpu') == 'bf16' and precision_of('openvino-int8', 'cpu') is None


def test_every_row_prints_gmacs_rate_and_share_of_peak(tmp_path, capsys):
    assert main([DEMO, '--mode', 'predict', '--quick', '--by-part', '--out-dir', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    limits = next(line for line in out.splitlines() if line.startswith('limits'))
    rate = float(limits.split('matmul 4096^3 fp32 ')[1].split()[0])
    assert rate > 0 and 'copy 512 MiB' in limits
    header = next(line for line in out.splitlines() if line.startswith('| model'))
    row = next(line for line in out.splitlines() if line.startswith(f'| {DEMO}'))
    cells = dict(zip([c.strip() for c in header.split('|')], [c.strip() for c in row.split('|')], strict=True))
    gmacs, per_s, ms = float(cells['GMACs']), float(cells['GMAC/s']), float(cells['median ms'])
    assert gmacs > 0 and per_s == pytest.approx(gmacs * 1000 / ms, rel=0.02)
    assert cells['% of peak'].endswith('% fp32')
    assert float(cells['% of peak'].split('%')[0]) == pytest.approx(100 * per_s / rate, abs=1)
    assert '| deformable-detr_pit-ti_synthetic_cpu | encoder' in out  # the by-part table


def test_by_part_needs_an_eager_detector():
    with pytest.raises(BenchmarkError, match='--by-part times the parts of a detector'):
        run_benchmark([f'{DEMO}@compile'], [(64, 96)], mode='predict', by_part=True, progress=lambda m: None)
    with pytest.raises(BenchmarkError, match='--by-part'):
        run_benchmark(['pit-ti'], [(64, 96)], by_part=True, progress=lambda m: None)
