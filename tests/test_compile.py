"""The whole detector compiled: the fused op inside a graph, the parts compiled, boxes equal to eager's."""
import pytest
import torch
from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttention

from pit_det.benchmark.builders import build_call, build_detector, detector_call
from pit_det.models.inference import compile_detector
from pit_det.ops import use_fused_cpu_deform_attn
from test_work import DEMO, encoder_inputs


def test_the_fused_op_compiles_without_a_graph_break():
    attn = MultiScaleDeformableAttention(embed_dims=32, num_heads=2, num_levels=2, num_points=2, batch_first=True).eval()
    use_fused_cpu_deform_attn(attn)
    shapes = [(6, 8), (3, 4)]
    inputs = encoder_inputs(shapes, 32)
    inputs['value'] = inputs['query']
    compiled = torch.compile(attn, fullgraph=True)  # fullgraph: a break anywhere is an error
    with torch.no_grad():
        assert torch.allclose(compiled(**inputs), attn(**inputs), atol=1e-5)


@pytest.mark.slow
def test_the_compiled_detector_gives_eagers_boxes_at_two_sizes():
    built = build_call(f'{DEMO}@compile', 'predict', (96, 128), 1, 'cpu')
    eager = build_call(DEMO, 'predict', (96, 128), 1, 'cpu').model  # every path of a spec: the same weights
    assert all(getattr(built.model, part)._compiled_call_impl is not None
               for part in ('backbone', 'neck', 'encoder', 'decoder'))
    for size in ((96, 128), (128, 96)):
        x = torch.rand(1, 3, *size)
        with torch.inference_mode():
            got = detector_call(built.model, 'predict', size, 1)(x)[0].pred_instances
            want = detector_call(eager, 'predict', size, 1)(x)[0].pred_instances
        assert torch.equal(got.labels[:20], want.labels[:20])
        assert (got.bboxes[:20] - want.bboxes[:20]).abs().max() < 0.05, size


def test_the_compile_inference_path_compiles_the_whole_detector():
    model, _ = build_detector(DEMO)
    assert compile_detector(model) == ['backbone', 'neck', 'encoder', 'decoder']
    assert all(getattr(model, part)._compiled_call_impl is not None for part in ('backbone', 'neck', 'encoder', 'decoder'))
