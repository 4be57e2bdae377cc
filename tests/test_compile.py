"""The whole detector compiled: the fused op inside a graph, the parts compiled, boxes equal to eager's."""

import pytest
import torch
from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttention
from test_work import DEMO, encoder_inputs

from pit_det.benchmark.builders import build_benchmark_detector, build_call
from pit_det.models.inference import compile_detector
from pit_det.ops import set_cpu_deform_attn


def test_the_fused_op_compiles_without_a_graph_break():
    attn = MultiScaleDeformableAttention(
        embed_dims=32, num_heads=2, num_levels=2, num_points=2, batch_first=True
    ).eval()
    set_cpu_deform_attn(attn, 'fused')
    shapes = [(6, 8), (3, 4)]
    inputs = encoder_inputs(shapes, 32)
    inputs['value'] = inputs['query']
    compiled = torch.compile(attn, fullgraph=True)  # fullgraph: a break anywhere is an error
    with torch.no_grad():
        assert torch.allclose(compiled(**inputs), attn(**inputs), atol=1e-5)


@pytest.mark.slow
def test_the_compiled_detector_gives_eagers_boxes_at_two_sizes(demo_run):
    """What ``mim test``/``pit-det-infer`` run with ``model.inference.path=compile``: each part compiled on the first
    predict, parameter names kept, eager's detections at two sizes."""
    from mmdet.apis import init_detector
    from test_configs import tiny_batch

    config, checkpoints = demo_run
    eager = init_detector(str(config), str(checkpoints[0]), device='cpu')
    compiled = init_detector(
        str(config), str(checkpoints[0]), device='cpu', cfg_options={'model.inference.path': 'compile'}
    )
    keys = set(compiled.state_dict())
    for size in ((96, 128), (128, 96)):
        inputs, samples = tiny_batch(*size)
        data = eager.data_preprocessor({'inputs': [inputs[0] * 255], 'data_samples': samples}, False)
        with torch.no_grad():
            got, want = [
                model.predict(data['inputs'], data['data_samples'])[0].pred_instances for model in (compiled, eager)
            ]
        assert got.bboxes.dtype == torch.float32 and set(compiled.state_dict()) == keys  # compile keeps the names
        assert torch.equal(got.labels[:20], want.labels[:20]), size
        assert (got.bboxes[:20] - want.bboxes[:20]).abs().max() < 0.05, size
    assert all(
        getattr(compiled, part)._compiled_call_impl is not None for part in ('backbone', 'neck', 'encoder', 'decoder')
    )


def test_the_compile_inference_path_compiles_the_whole_detector():
    model, _ = build_benchmark_detector(DEMO)
    assert compile_detector(model) == ['backbone', 'neck', 'encoder', 'decoder']
    assert all(
        getattr(model, part)._compiled_call_impl is not None for part in ('backbone', 'neck', 'encoder', 'decoder')
    )
    built = build_call(f'{DEMO}@compile', 'predict', (96, 128), 1, 'cpu')  # the benchmark's @compile: the same parts
    assert all(
        getattr(built.model, part)._compiled_call_impl is not None
        for part in ('backbone', 'neck', 'encoder', 'decoder')
    )
