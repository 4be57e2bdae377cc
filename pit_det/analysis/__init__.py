"""Analyses of trained or random backbones: attention entropy and distance per block (:mod:`.attention`)."""

from .attention import BlockStats, analyze, attention_stats, build_backbone, token_centres

__all__ = ['BlockStats', 'analyze', 'attention_stats', 'build_backbone', 'token_centres']
