import csv
import importlib.metadata
import importlib.util
import json
import statistics

import pytest
import torch

from pit_det.benchmark import BenchmarkError, build_benchmark_detector, count_work, detector_call, run_benchmark
from pit_det.benchmark.builders import build_call
from pit_det.cli.benchmark import main

FIELDS = {
    'model',
    'mode',
    'size',
    'batch',
    'inference',
    'device',
    'median_ms',
    'mean_ms',
    'p90_ms',
    'images_per_s',
    'peak_mem_mib',
    'params_m',
    'gmacs',
    'iters',
}


@pytest.mark.slow
def test_quick_mode_writes_json_csv_and_plot(tmp_path, capsys):
    assert (
        main(
            [
                'pit-ti',
                'timm:pit_ti_224',
                'resnet50',
                '--quick',
                '--out-dir',
                str(tmp_path),
                '--plot',
                '--reference',
                'timm:pit_ti_224',
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert 'pit-ti / timm:pit_ti_224 = ' in out and 'round 2/2' in out
    data = json.loads((tmp_path / 'benchmark.json').read_text())
    assert {'torch', 'mmcv', 'mmdet', 'threads', 'cpu', 'date'} <= set(data['environment'])
    results = data['results']
    assert [r['model'] for r in results] == ['pit-ti', 'timm:pit_ti_224', 'resnet50']
    for r in results:
        assert FIELDS <= set(r) and r['size'] == '64x96' and len(r['samples_ms']) == 2
        assert_consistent(r)
    pit, timm_pit = results[0], results[1]
    # PiT-Ti has 4.85 M parameters with its classifier (head 256 x 1000 + 1000, norm 2 x 256)
    assert pit['params_m'] == pytest.approx(4.85 - (256 * 1000 + 1000 + 512) / 1e6, abs=0.01)
    assert pit['gmacs'] == pytest.approx(timm_pit['gmacs'], rel=0.02)  # same network, same count
    rows = list(csv.DictReader((tmp_path / 'benchmark.csv').open()))
    assert len(rows) == 3 and FIELDS <= set(rows[0])
    assert (tmp_path / 'benchmark.png').stat().st_size > 1000


def assert_consistent(r: dict) -> None:
    """The summary fields are what the samples say."""
    samples = r['samples_ms']
    assert all(t > 0 for t in samples)
    assert r['median_ms'] == pytest.approx(statistics.median(samples), abs=1e-3)
    assert r['mean_ms'] == pytest.approx(statistics.fmean(samples), abs=1e-3)
    assert min(samples) <= r['median_ms'] <= r['p90_ms'] <= max(samples)
    assert r['images_per_s'] == pytest.approx(r['batch'] * 1000 / r['median_ms'], rel=1e-3)


def test_macs_count_attention():
    results = run_benchmark(['pit-ti'], [(224, 224)], warmup=0, iters=1, progress=lambda m: None)
    # PiT-Ti is 0.70 GMACs at 224 (paper, timm); without the attention matrices it would be clearly less
    assert results[0].gmacs == pytest.approx(0.70, abs=0.03)


def test_detector_predict_mode(tmp_path):
    config = 'configs/demo/deformable-detr_pit-ti_synthetic_cpu.py'
    results = run_benchmark([config], [(64, 96)], warmup=0, iters=3, mode='predict', progress=lambda m: None)
    assert results[0].iters == 3 and len(results[0].samples_ms) == 3
    # predict is counted as the forward it runs (its post-processing is a few element-wise operations)
    model, _ = build_benchmark_detector(config)
    forward = count_work(detector_call(model.eval(), 'forward', (64, 96), 1), model, torch.rand(1, 3, 64, 96))
    assert results[0].gmacs == pytest.approx(forward.gmacs, abs=1e-3) and results[0].gmacs > 0
    assert results[0].pct_of_peak > 0 and results[0].peak_precision == 'fp32'
    # counted independently, by mmengine's parameter counter on the detector built from the config
    from mmengine.analysis import parameter_count

    assert results[0].params_m == pytest.approx(
        parameter_count(build_benchmark_detector(config)[0])[''] / 1e6, abs=1e-3
    )
    assert_consistent(vars(results[0]))


def test_train_mode_times_a_training_step_of_both_heads_with_config_options():
    specs = ['configs/demo/dino-4scale_pit-ti_synthetic_cpu.py', 'configs/demo/deformable-detr_pit-ti_synthetic_cpu.py']
    results = run_benchmark(
        specs,
        [(64, 96)],
        warmup=0,
        iters=1,
        mode='train',
        count_macs=False,
        cfg_options={'model.backbone.with_cp': True},
        progress=lambda m: None,
    )
    assert [r.model for r in results] == specs and all(r.mode == 'train' and r.median_ms > 0 for r in results)
    built = build_call(specs[0], 'train', (64, 96), 2, 'cpu', cfg_options={'model.backbone.with_cp': True})
    assert built.model.training and built.model.backbone.transformers[0].with_cp
    loss = built.call(torch.rand(2, 3, 64, 96))
    assert torch.isfinite(loss) and all(p.grad is not None for p in built.model.backbone.parameters())


@pytest.mark.parametrize(
    'kwargs,message',
    [
        (dict(models=['pit-m']), "unknown PiT arch 'm'"),
        (dict(models=['vgg16']), 'unknown model'),
        (dict(models=['pit-ti'], sizes=[(8, 200)]), 'smaller than a patch'),
        (dict(models=['pit-ti'], mode='predict'), 'needs a detector config'),
        (dict(models=['pit-ti@fp16']), 'fp16 autocast is for CUDA; on the CPU use @bf16'),
        (dict(models=['pit-ti', 'pit-ti']), 'a model is named twice'),
        (dict(models=['configs/nope.py'], mode='predict'), 'config not found'),
        (
            dict(models=['configs/demo/dino-4scale_pit-ti_synthetic_cpu.py@bf16'], mode='train'),
            '--mode train times eager training',
        ),
        (
            dict(
                models=['configs/demo/dino-4scale_pit-ti_synthetic_cpu.py'],
                mode='predict',
                cfg_options={'model.backbone.depth': 3},
            ),
            "cannot be built with --cfg-options .*'depth'",
        ),
    ],
)
def test_bad_requests(kwargs, message):
    args = dict(sizes=[(64, 64)], warmup=0, iters=1, progress=lambda m: None) | kwargs
    with pytest.raises(BenchmarkError, match=message):
        run_benchmark(**args)


@pytest.mark.parametrize(
    'argv,message',
    [
        (['pit-ti', '--threads', '-1'], '--threads -1: give a number of threads >= 1'),
        (['pit-ti', '--reference', 'resnet50'], "--reference 'resnet50' is not one of the models to measure (pit-ti)"),
    ],
)
def test_bad_command_lines_say_what_to_do(argv, message, capsys):
    assert main(argv) == 1  # a refused input
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    'argv,message',
    [
        (['pit-ti', '--size', '400by666'], "size '400by666': use HxW"),
        (['pit-ti', '--precision', 'bf16'], 'unrecognized arguments: --precision bf16'),  # MODEL@bf16 names a path
    ],
)
def test_bad_usage_is_argparses_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on machines without a GPU')
def test_cuda_without_gpu(capsys):
    assert main(['pit-ti', '--device', 'cuda', '--quick']) == 1
    assert 'no CUDA GPU is visible' in capsys.readouterr().err


def test_vit_s_backbone_spec():
    import timm

    result = run_benchmark(['vit-s'], [(64, 96)], warmup=0, iters=1, progress=lambda m: None)[0]
    # DeiT-S without its classifier and final norm, plus the pyramid's stride-8 transposed convolution (2x2, 384 ch)
    deit = sum(p.numel() for p in timm.create_model('deit_small_patch16_224').parameters())
    expected = deit - (384 * 1000 + 1000) - 2 * 384 + (384 * 384 * 2 * 2 + 384)
    assert result.params_m == pytest.approx(expected / 1e6, abs=1e-3)
    assert result.gmacs is not None and result.gmacs > 0


@pytest.mark.slow
def test_paths_of_one_model_in_one_interleaved_table():
    config = 'configs/demo/deformable-detr_pit-ti_synthetic_cpu.py'
    specs = [config, f'{config}@bf16', f'{config}@onnxruntime']
    results = run_benchmark(specs, [(64, 96)], warmup=0, iters=2, mode='predict', progress=lambda m: None)
    assert [r.model for r in results] == specs and all(len(r.samples_ms) == 2 for r in results)
    assert len({r.params_m for r in results}) == 1  # the same model behind every path
    assert [r.inference for r in results] == ['eager', 'bf16', 'onnxruntime']
    # the OpenVINO rows' models (timed and measured as the rows above, with an export or a quantisation per process)
    for path in ('openvino', 'openvino-int8'):
        boxes, scores, labels = build_call(f'{config}@{path}', 'predict', (64, 96), 1, 'cpu').call(
            torch.rand(1, 3, 64, 96)
        )
        assert boxes.shape == (1, 50, 4) and scores.shape == labels.shape == (1, 50), path
    with pytest.raises(BenchmarkError, match=r'unknown inference path @int8'):
        run_benchmark([f'{config}@int8'], [(64, 96)], warmup=0, iters=1, mode='predict', progress=lambda m: None)
    for path in ('onnxruntime', 'openvino', 'openvino-int8'):
        with pytest.raises(BenchmarkError, match='whole detector in predict mode'):
            run_benchmark([f'pit-ti@{path}'], [(64, 96)], warmup=0, iters=1, progress=lambda m: None)


def test_environment_names_the_isa():
    import subprocess

    from pit_det.benchmark.report import cpu_isa

    isa, native = cpu_isa()
    assert isa in ('AMX', 'AVX-512 BF16', 'AVX-512', 'AVX2', 'SSE')
    # what lscpu (which asks the CPU through cpuid) says
    flags = next(
        line
        for line in subprocess.run(['lscpu'], capture_output=True, text=True).stdout.splitlines()
        if line.startswith('Flags:')
    ).split()
    assert native == any(f in flags for f in ('avx512_bf16', 'amx_bf16'))
    assert isa.startswith(('AVX-512', 'AMX')) == ('avx512f' in flags)
    from pit_det.benchmark.report import environment

    env = environment('cpu')
    assert env['fused_kernel_isa'] == torch.backends.cpu.get_cpu_capability()
    installed = importlib.util.find_spec('transformers') is not None
    assert env.get('transformers') == (importlib.metadata.version('transformers') if installed else None)


def test_a_model_named_like_a_formula_is_text_in_the_csv(root, tmp_path, monkeypatch):
    """A config file named '=HYPERLINK(...)' is a formula a spreadsheet would run: its CSV cell is text."""
    name = '=HYPERLINK("x")+cmd.py'
    (tmp_path / name).write_text(
        f"_base_ = '{root / 'configs' / 'demo' / 'deformable-detr_pit-ti_synthetic_cpu.py'}'\n"
    )
    out = tmp_path / 'out'
    monkeypatch.chdir(tmp_path)  # the spec as a user types it, relative
    assert main([name, '--mode', 'predict', '--quick', '--no-macs', '--out-dir', str(out)]) == 0
    (row,) = csv.DictReader((out / 'benchmark.csv').open())
    assert row['model'] == "'" + name and float(row['median_ms']) > 0
    assert json.loads((out / 'benchmark.json').read_text())['results'][0]['model'] == name  # the JSON keeps the name
