"""Anomaly scores (spec 1) and the SML post-processing (spec 3, 4).

Functions map logits ``B x C x H x W`` to float32 ``B x H x W`` maps, higher =
more anomalous; scorer classes carry a method's settings so that callers treat
all methods alike (``build_scorer(name, stats, **settings)``). The other post-hoc
scores of spec 8 (GEN on logits; RbA and EAM on mask-classification outputs,
:mod:`sml.scores.mask_classification`) sit beside them.
"""
from __future__ import annotations

from sml.scores import postprocess
from sml.scores.functional import energy, entropy, gen, max_and_argmax, max_logit, msp
from sml.scores.mask_classification import MaskClassificationOutput, eam, mask_class_scores, rba
from sml.scores.postprocess import boundary_suppression, dilated_smoothing
from sml.scores.scorers import (
    METHODS,
    MSP,
    SCORERS,
    SML,
    EAM,
    GEN,
    Energy,
    Entropy,
    LogitContext,
    MaskClassificationContext,
    MaxLogit,
    RbA,
    Scorer,
    build_scorer,
    build_scorers,
    canonical_method,
    check_methods_apply,
    context_for,
)

__all__ = [
    "msp", "max_logit", "entropy", "energy", "gen", "max_and_argmax",
    "mask_class_scores", "rba", "eam", "MaskClassificationOutput",
    "Scorer", "LogitContext", "MaskClassificationContext", "context_for", "MSP", "MaxLogit", "Entropy", "Energy", "SML",
    "GEN", "RbA", "EAM", "SCORERS", "build_scorer",
    "METHODS", "canonical_method", "check_methods_apply", "build_scorers",
    "postprocess", "boundary_suppression", "dilated_smoothing",
]
