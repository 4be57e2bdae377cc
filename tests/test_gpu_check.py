"""The GPU acceptance run: it stops at once without a GPU; each of its checks runs here on the CPU, small."""

import json
import subprocess
import time

import pytest
import torch

from pit_det.acceptance import kernel_parity, latency_table, mim_test, training_check
from pit_det.acceptance.checks import format_latency
from pit_det.cli import gpu_check
from pit_det.data import make_synthetic_coco

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal on a machine without GPU')


@needs_no_gpu
def test_without_a_gpu_the_script_stops_at_once(root, tmp_path):
    start = time.time()
    run = subprocess.run(
        ['bash', str(root / 'scripts' / 'gpu_check.sh'), str(tmp_path / 'out')], capture_output=True, text=True
    )
    assert run.returncode == 1 and 'the GPU check needs an NVIDIA GPU' in run.stderr
    assert time.time() - start < 30 and not (tmp_path / 'out').exists()


@needs_no_gpu
def test_without_a_gpu_the_command_says_what_it_needs(tmp_path, capsys):
    assert gpu_check.main(['--out-dir', str(tmp_path / 'out')]) == 1
    err = capsys.readouterr().err
    assert 'torch.cuda.is_available() is False' in err and 'scripts/setup.sh' in err
    assert not (tmp_path / 'out').exists()


def test_the_command_refuses_a_folder_with_files_and_bad_counts(tmp_path, capsys):
    (tmp_path / 'mine.txt').write_text('keep')
    assert gpu_check.main(['--out-dir', str(tmp_path)]) == 1
    assert 'is not an empty folder' in capsys.readouterr().err
    assert gpu_check.main(['--out-dir', str(tmp_path / 'new'), '--iters', '2']) == 1
    assert 'at least 5' in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ['mine.txt']


def test_kernel_parity_compares_forward_and_three_gradients():
    result = kernel_parity('cpu', size=(64, 96), batch=1)
    assert result['ok'] and set(result['precisions']) == {'float32'}
    errors = result['precisions']['float32']['rel_error']
    assert set(errors) == {'forward', 'grad_value', 'grad_sampling_locations', 'grad_attention_weights'}
    assert 0 < max(errors.values()) < 1e-4  # two implementations, not one compared with itself
    assert result['queries'] == 8 * 12 + 4 * 6 + 2 * 3 + 1 * 2


@pytest.mark.slow
def test_training_and_mim_test_checks(demo_config, tmp_path):
    data = make_synthetic_coco(tmp_path / 'data', num_train=12, num_val=4)
    result = training_check(demo_config, data, tmp_path / 'train', iters=6, batch=2)
    assert result['ok'], result
    assert result['iters'] == 6 and result['loss_last'] < result['loss_first']
    assert result['peak_mib_per_image'] is None  # mmengine logs GPU memory only on a GPU
    test = mim_test(tmp_path / 'train' / 'config.py', tmp_path / 'train' / 'iter_6.pth', tmp_path / 'test')
    assert test['ok'], (tmp_path / 'test' / 'test.log').read_text()[-2000:]
    assert 0 <= test['bbox_mAP'] <= 1


@pytest.mark.slow
def test_latency_table_and_summary(demo_config):
    table = latency_table(
        'cpu',
        configs={'demo': str(demo_config)},
        sizes=((64, 96),),
        batches=(1, 2),
        precisions=('fp32',),
        warmup=0,
        iters=2,
        progress=lambda line: None,
    )
    assert table['ok'] and [(r['batch'], r['size']) for r in table['rows']] == [(1, '64x96'), (2, '64x96')]
    assert table['rows'][0]['gmacs'] > 0 and table['rows'][1]['gmacs'] is None  # counted at batch 1 only
    assert 'matmul fp32' in table['limits']
    markdown = format_latency(table)
    assert markdown.splitlines()[0] == '| detector | 64x96 b1 fp32 | 64x96 b2 fp32 |'
    assert markdown.splitlines()[2].startswith(f'| demo | {table["rows"][0]["images_per_s"]:.1f} |')
    summary = dict(
        gpu='a GPU',
        date='today',
        torch='t',
        cuda='c',
        mmcv='m',
        wall_s=1.0,
        steps={'latency': dict(table, seconds=2.0), 'kernel': dict(skipped=True)},
    )
    text = gpu_check.summary_markdown(summary)
    assert '**latency**: ok' in text and '**kernel**: skipped' in text and markdown in text
    json.dumps(summary)


def test_a_step_whose_error_holds_backticks_stays_one_code_span():
    """An error quoting code (`x`) broke the summary's code span, and the rest of the line rendered as Markdown."""
    from markdown_it import MarkdownIt

    error = 'mmcv.ops failed: `ms_deform_attn` for ``cuda`` not found`'
    summary = dict(
        gpu='a GPU',
        date='today',
        torch='t',
        cuda='c',
        mmcv='m',
        wall_s=1.0,
        steps={'kernel': dict(ok=False, seconds=1.0, error=error)},
    )
    line = next(line for line in gpu_check.summary_markdown(summary).splitlines() if '**kernel**' in line)
    html = MarkdownIt().render(line)
    assert html.count('<code>') == 1
    code = html.split('<code>')[1].split('</code>')[0]
    assert json.loads(
        code.replace('&quot;', '"').replace('&amp;', '&').replace('&lt;', '<').replace('&gt;', '>')
    ) == dict(seconds=1.0, error=error)
