"""Latency benchmarks: backbones and detectors side by side (:mod:`.core`), the deformable-attention op
(:mod:`.deform_attn`); timing helpers, model builders and reports shared by both."""
from .builders import INFERENCE, MODES, Built, build_backbone, build_call, build_detector, detector_call
from .core import Request, run_benchmark
from .report import REPORT_FILES, BenchmarkError, Result, environment, format_table, parse_size, ratios, write_outputs
from .timing import interleaved, medians, rss_growth_mib

__all__ = ['INFERENCE', 'REPORT_FILES', 'BenchmarkError', 'Built', 'MODES', 'Request', 'Result', 'build_backbone', 'build_call',
           'build_detector', 'detector_call', 'environment', 'format_table', 'interleaved', 'medians',
           'parse_size', 'ratios', 'rss_growth_mib', 'run_benchmark', 'write_outputs']
