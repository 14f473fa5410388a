"""Anomaly scores (spec 1) and the SML post-processing (spec 3, 4).

Functions map logits ``B x C x H x W`` to float32 ``B x H x W`` maps, higher =
more anomalous; scorer classes carry a method's settings so that callers treat
all methods alike (``build_scorer(name, stats, **settings)``).
"""
from __future__ import annotations

from sml.scores import postprocess
from sml.scores.functional import energy, entropy, max_and_argmax, max_logit, msp
from sml.scores.postprocess import boundary_suppression, dilated_smoothing
from sml.scores.scorers import (
    METHODS,
    MSP,
    SCORERS,
    SML,
    Energy,
    Entropy,
    LogitContext,
    MaxLogit,
    Scorer,
    build_scorer,
    build_scorers,
    canonical_method,
)

__all__ = [
    "msp", "max_logit", "entropy", "energy", "max_and_argmax",
    "Scorer", "LogitContext", "MSP", "MaxLogit", "Entropy", "Energy", "SML", "SCORERS", "build_scorer",
    "METHODS", "canonical_method", "build_scorers",
    "postprocess", "boundary_suppression", "dilated_smoothing",
]
