"""VaL probing results: score the answers by needle position, and plot them.

The probes themselves are built by :mod:`evoforge.generators.probing` (An et al., 2024,
arXiv 2404.16811, §4.1); this package reads a probe file and a model's answers:
:mod:`.metrics` (one score per answer), :mod:`.score` (means per position bucket,
their average and the best-worst gap) and :mod:`.plot` (a PNG of them).
"""

from __future__ import annotations

from evoforge.probe.metrics import (
    METRICS,
    entity_match,
    function_name_match,
    score_prediction,
    sentence_recall,
)
from evoforge.probe.plot import plot_probe
from evoforge.probe.score import PREDICTION_KEYS, REFERENCE, score_probe

__all__ = [
    "METRICS",
    "PREDICTION_KEYS",
    "REFERENCE",
    "entity_match",
    "function_name_match",
    "plot_probe",
    "score_prediction",
    "score_probe",
    "sentence_recall",
]
