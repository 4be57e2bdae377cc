"""Latency benchmarks: backbones and detectors side by side (:mod:`.core`), the deformable-attention op
(:mod:`.deform_attn`); timing helpers, model builders and reports shared by both."""

from .builders import INFERENCE, MODES, Built, build_backbone, build_benchmark_detector, build_call, detector_call
from .core import Request, run_benchmark
from .report import (
    REPORT_FILES,
    BenchmarkError,
    Result,
    Results,
    environment,
    format_limits,
    format_parts,
    format_table,
    ratios,
    write_outputs,
)
from .timing import PartTimer, interleaved, medians, rss_growth_mib
from .work import Work, count_work

__all__ = [
    'INFERENCE',
    'REPORT_FILES',
    'BenchmarkError',
    'Built',
    'MODES',
    'PartTimer',
    'Request',
    'Result',
    'Results',
    'Work',
    'build_backbone',
    'build_call',
    'build_benchmark_detector',
    'count_work',
    'detector_call',
    'environment',
    'format_limits',
    'format_parts',
    'format_table',
    'interleaved',
    'medians',
    'ratios',
    'rss_growth_mib',
    'run_benchmark',
    'write_outputs',
]
