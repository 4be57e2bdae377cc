import warnings

import pytest
import torch
from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttention, multi_scale_deformable_attn_pytorch

import pit_det.ops.ms_deform_attn as msda
from pit_det.ops import FusedMultiScaleDeformableAttention, ms_deform_attn_cpu, set_cpu_deform_attn

ENCODER_LEVELS = [[13, 17], [7, 9], [4, 5], [2, 3]]  # odd sizes


def make_inputs(batch, queries, levels, heads=8, dims=32, points=4, dtype=torch.float32, spread=1.6):
    shapes = torch.tensor(levels)
    keys = int((shapes[:, 0] * shapes[:, 1]).sum())
    value = torch.randn(batch, keys, heads, dims, dtype=dtype)
    # locations from -0.3 to 1.3: a good share of the samples fall outside the maps (zero padding)
    loc = torch.rand(batch, queries, heads, len(levels), points, 2, dtype=dtype) * spread - (spread - 1) / 2
    attn = torch.rand(batch, queries, heads, len(levels), points, dtype=dtype)
    attn = attn / attn.sum((-1, -2), keepdim=True)
    return value, shapes, loc, attn


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize(
    'batch,queries,levels',
    [
        (1, 13 * 17 + 63 + 20 + 6, ENCODER_LEVELS),  # encoder: one query per key
        (3, 300, ENCODER_LEVELS),  # decoder: 300 queries, batch > 1
        (2, 50, [[1, 1], [31, 3], [5, 29]]),  # degenerate and thin levels
    ],
)
def test_forward_equals_mmcv(batch, queries, levels):
    value, shapes, loc, attn = make_inputs(batch, queries, levels)
    assert ((loc < 0) | (loc > 1)).any()
    expected = multi_scale_deformable_attn_pytorch(value, shapes, loc, attn)
    assert rel_err(ms_deform_attn_cpu(value, shapes, loc, attn), expected) < 1e-5


def test_gradients_match_mmcv():
    value, shapes, loc, attn = make_inputs(2, 120, ENCODER_LEVELS)
    grad = torch.randn(2, 120, 256)
    grads = []
    for fn in (ms_deform_attn_cpu, multi_scale_deformable_attn_pytorch):
        inputs = [t.clone().requires_grad_() for t in (value, loc, attn)]
        out = fn(inputs[0], shapes, inputs[1], inputs[2])
        grads.append(torch.autograd.grad(out, inputs, grad))
    for ours, ref in zip(*grads, strict=True):
        assert rel_err(ours, ref) < 1e-5


def test_gradcheck_float64():
    value, shapes, loc, attn = make_inputs(2, 5, [[3, 4], [2, 3]], heads=2, dims=3, points=2, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (value, loc, attn)]
    assert torch.autograd.gradcheck(
        lambda v, loc, a: ms_deform_attn_cpu(v, shapes, loc, a), inputs, eps=1e-6, atol=1e-5
    )


def test_bf16_inputs_computed_in_float32():
    value, shapes, loc, attn = make_inputs(1, 20, ENCODER_LEVELS)
    out = ms_deform_attn_cpu(value.bfloat16(), shapes, loc.bfloat16(), attn.bfloat16())
    assert out.dtype == torch.bfloat16
    ref = multi_scale_deformable_attn_pytorch(
        value.bfloat16().float(), shapes, loc.bfloat16().float(), attn.bfloat16().float()
    )
    assert rel_err(out.float(), ref) < 1e-2


def test_module_switch_keeps_weights_and_numbers():
    torch.manual_seed(0)
    layer = MultiScaleDeformableAttention(
        embed_dims=64, num_heads=4, num_levels=2, num_points=2, batch_first=True
    ).eval()  # no dropout
    holder = torch.nn.Sequential(layer)
    shapes = torch.tensor([[6, 7], [3, 4]])
    starts = torch.tensor([0, 42])
    query = torch.randn(2, 54, 64)
    ref_points = torch.rand(2, 54, 2, 2)
    kwargs = dict(query=query, reference_points=ref_points, spatial_shapes=shapes, level_start_index=starts)
    expected = layer(**kwargs)
    assert set_cpu_deform_attn(holder, 'fused') == 1 and type(layer) is FusedMultiScaleDeformableAttention
    assert isinstance(layer, MultiScaleDeformableAttention)  # mmdet's init_weights still finds it
    assert rel_err(layer(**kwargs), expected) < 1e-5
    boxes = torch.rand(2, 54, 2, 4)  # two-stage / refine decoders pass boxes
    fused = layer(**dict(kwargs, reference_points=boxes))
    set_cpu_deform_attn(holder, 'mmcv')
    assert type(layer) is MultiScaleDeformableAttention
    assert rel_err(fused, layer(**dict(kwargs, reference_points=boxes))) < 1e-5


def test_missing_compiler_falls_back_with_one_warning(monkeypatch, tmp_path):
    broken = tmp_path / 'broken.cpp'
    broken.write_text('this is not C++')
    monkeypatch.setattr(msda, '_SOURCE', broken)
    monkeypatch.setattr(msda, '_ext', None)
    monkeypatch.setattr(msda, '_ext_error', None)
    monkeypatch.setenv('PIT_DET_CACHE', str(tmp_path / 'cache'))
    value, shapes, loc, attn = make_inputs(1, 10, ENCODER_LEVELS)
    with pytest.warns(RuntimeWarning, match="could not be compiled.*mmcv's pure-PyTorch"):
        out = ms_deform_attn_cpu(value, shapes, loc, attn)
    torch.testing.assert_close(out, multi_scale_deformable_attn_pytorch(value, shapes, loc, attn), rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        ms_deform_attn_cpu(value, shapes, loc, attn)  # said once, not on every call


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU and mmcv built with CUDA ops')
def test_cuda_tensors_keep_mmcv_kernel_and_agree_with_cpu():
    layer = FusedMultiScaleDeformableAttention(
        embed_dims=64, num_heads=4, num_levels=2, num_points=2, batch_first=True
    ).eval()
    shapes = torch.tensor([[6, 7], [3, 4]])
    kwargs = dict(
        query=torch.randn(2, 54, 64),
        reference_points=torch.rand(2, 54, 2, 2),
        spatial_shapes=shapes,
        level_start_index=torch.tensor([0, 42]),
    )
    cpu = layer(**kwargs)
    gpu = layer.cuda()(**{k: v.cuda() for k, v in kwargs.items()})
    assert rel_err(gpu.cpu(), cpu) < 1e-4


def test_side_by_side_benchmark_smoke(tmp_path):
    from pit_det.cli.benchmark_deform_attn import main

    out = tmp_path / 'bench.json'
    assert (
        main(['--size', '64x96', '--warmup', '0', '--iters', '2', '--skip', 'predict', 'train', '--out', str(out)]) == 0
    )
    import json

    op = json.loads(out.read_text())['op'][0]
    assert op['size'] == '64x96' and 'encoder' in op['locations'] and op['queries'] == 8 * 12 + 4 * 6 + 2 * 3 + 1 * 2
    assert set(op['median_ms']) == {'fused', 'mmcv'} and min(op['median_ms'].values()) > 0
    assert op['speedup'] == pytest.approx(op['median_ms']['mmcv'] / op['median_ms']['fused'])
    assert set(op['peak_mib']) == {'fused', 'mmcv'} and min(op['peak_mib'].values()) >= 0


@pytest.mark.slow
def test_copies_of_the_source_in_other_folders_share_one_build(tmp_path):
    """A clone and an installed copy take turns without recompiling (36 s on 2 cores each time)."""
    import subprocess
    import sys

    script = (
        'import sys, pathlib\n'
        'import pit_det.ops.ms_deform_attn as m\n'
        'm._SOURCE = pathlib.Path(sys.argv[1])\n'
        'assert m.load_extension() is not None, m._ext_error\n'
        'print(m.extension_dir(), next(m.extension_dir().glob("*.so")).stat().st_mtime_ns)\n'
    )
    outputs = []
    for copy in ('clone', 'site-packages', 'clone'):
        source = tmp_path / copy / 'csrc' / msda._SOURCE.name
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(msda._SOURCE.read_bytes())
        run = subprocess.run([sys.executable, '-c', script, str(source)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
        outputs.append(run.stdout.split()[-2:])
    assert outputs[0] == outputs[1] == outputs[2]  # one build folder, and its library never rebuilt


def test_each_spelling_of_the_torch_installation_has_its_own_build_folder(tmp_path):
    """torch's build file records the installation's include paths as the process reaches them: one environment
    through a symbolic link (a second checkout's .venv linked to the first's) must not share the folder, where each
    would rebuild the kernel after the other (50 s each time on 2 cores)."""
    import subprocess
    import sys

    linked = tmp_path / 'venv'
    linked.symlink_to(sys.prefix)
    script = 'import pit_det.ops.ms_deform_attn as m, torch; print(torch.__file__); print(m.extension_dir())'
    run = subprocess.run([str(linked / 'bin' / 'python'), '-c', script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    torch_file, folder = run.stdout.split()[-2:]
    assert torch_file.startswith(str(linked))  # torch reached through the link, as its build command will say
    assert folder != str(msda.extension_dir())


@pytest.fixture
def each_isa():
    """Every ISA's loops this CPU runs, one after the other; torch's choice again afterwards."""
    ext = msda.load_extension()
    chosen = ext.isa()
    isas = list(dict.fromkeys(ext.select_isa(isa) for isa in ('AVX512', 'AVX2', 'DEFAULT')))
    try:
        yield ext, isas
    finally:
        ext.select_isa(chosen)


def test_the_kernel_runs_torchs_isa_and_never_a_wider_one():
    ext = msda.load_extension()
    assert msda.kernel_isa() == torch.backends.cpu.get_cpu_capability()  # what torch runs here, chosen at load
    try:
        assert ext.select_isa('DEFAULT') == 'DEFAULT' and ext.select_isa('NEON') == 'DEFAULT'
        flags = msda.cpu_model_and_flags()[1]
        assert ext.select_isa('AVX512') == (
            'AVX512' if 'avx512bw' in flags else 'AVX2' if 'avx2' in flags else 'DEFAULT'
        )
    finally:
        ext.select_isa(torch.backends.cpu.get_cpu_capability())


@pytest.mark.parametrize('dims', [32, 64, 24])  # the two vectorised head sizes and the general loop
def test_every_isa_equals_mmcv_forward_and_backward(each_isa, dims):
    ext, isas = each_isa
    value, shapes, loc, attn = make_inputs(2, 60, ENCODER_LEVELS, dims=dims)
    grad = torch.randn(2, 60, 8 * dims)
    inputs = [t.clone().requires_grad_() for t in (value, loc, attn)]
    expected = multi_scale_deformable_attn_pytorch(inputs[0], shapes, inputs[1], inputs[2])
    expected_grads = torch.autograd.grad(expected, inputs, grad)
    for isa in isas:
        ext.select_isa(isa)
        out = ms_deform_attn_cpu(inputs[0], shapes, inputs[1], inputs[2])
        assert rel_err(out, expected) < 1e-5, isa
        for ours, ref in zip(torch.autograd.grad(out, inputs, grad), expected_grads, strict=True):
            assert rel_err(ours, ref) < 1e-5, isa


def test_every_isa_passes_gradcheck(each_isa):
    ext, isas = each_isa
    value, shapes, loc, attn = make_inputs(1, 4, [[3, 4], [2, 3]], heads=2, dims=32, points=2, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (value, loc, attn)]
    for isa in isas:
        ext.select_isa(isa)
        assert torch.autograd.gradcheck(
            lambda v, loc, a: ms_deform_attn_cpu(v, shapes, loc, a), inputs, eps=1e-6, atol=1e-5
        ), isa


def test_locations_far_outside_every_map_sample_zeros_on_every_isa(each_isa):
    """Locations far beyond the maps (a diverging model's) are zero padding, as in mmcv's op, with no integer
    overflow in any ISA's loops (an infinite one too, where mmcv's grid_sample gives NaN)."""
    ext, isas = each_isa
    value, shapes, loc, attn = make_inputs(1, 40, ENCODER_LEVELS)
    far = torch.tensor([1e30, -1e30, 3e9, -3e9, 2.5e9, -2.5e9])
    loc.view(-1)[: 40 * 8 * 16] = far.repeat(40 * 8 * 16 // 6 + 1)[: 40 * 8 * 16]
    expected = multi_scale_deformable_attn_pytorch(value, shapes, loc, attn)
    for isa in isas:
        ext.select_isa(isa)
        out = ms_deform_attn_cpu(value, shapes, loc, attn)
        assert torch.isfinite(out).all() and rel_err(out, expected) < 1e-5, isa
        infinite = loc.clone()
        infinite.view(-1)[:2] = torch.tensor([float('inf'), float('-inf')])
        assert torch.isfinite(ms_deform_attn_cpu(value, shapes, infinite, attn)).all(), isa
