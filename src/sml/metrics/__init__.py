"""Anomaly-segmentation metrics: exact pooled pixel metrics (spec 5) and SegmentMeIfYouCan components (spec 6).

``AnomalyMetrics`` is the streaming pixel metric (AUROC, AP, FPR@95 in both
conventions, best-F1 threshold, curves); ``ComponentMetrics`` the
component-level sIoU / PPV / mean F1. Neither needs scikit-learn.
"""
from __future__ import annotations

from sml.metrics.components import (
    SIOU_THRESHOLDS,
    TRACKS,
    ComponentMetrics,
    component_metrics,
    frame_components,
)
from sml.metrics.pixel import AnomalyMetrics, FrameLabels, anomaly_metrics, keys_to_scores, scores_to_keys

__all__ = [
    "AnomalyMetrics",
    "FrameLabels",
    "anomaly_metrics",
    "ComponentMetrics",
    "component_metrics",
    "frame_components",
    "SIOU_THRESHOLDS",
    "TRACKS",
    "scores_to_keys",
    "keys_to_scores",
]
