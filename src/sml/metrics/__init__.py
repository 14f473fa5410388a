"""Anomaly-segmentation metrics: exact pooled pixel metrics (spec 5) and SegmentMeIfYouCan components (spec 6).

``AnomalyMetrics`` is the streaming pixel metric (AUROC, AP, FPR@95 in both
conventions, best-F1 threshold, curves); ``SmiycPixelMetric`` the
SegmentMeIfYouCan tool's binned one (spec 7); both are a ``PixelMetric``.
``ComponentMetrics`` gives the component-level sIoU / PPV / mean F1. None
needs scikit-learn.
"""
from __future__ import annotations

from sml.metrics.base import PixelMetric
from sml.metrics.binned import SmiycPixelMetric
from sml.metrics.components import (
    SIOU_THRESHOLDS,
    TRACKS,
    ComponentMetrics,
    component_metrics,
    frame_components,
)
from sml.metrics.keys import keys_to_scores, scores_to_keys
from sml.metrics.labels import FrameLabels
from sml.metrics.pixel import AnomalyMetrics, anomaly_metrics

__all__ = [
    "AnomalyMetrics",
    "FrameLabels",
    "PixelMetric",
    "SmiycPixelMetric",
    "anomaly_metrics",
    "ComponentMetrics",
    "component_metrics",
    "frame_components",
    "SIOU_THRESHOLDS",
    "TRACKS",
    "scores_to_keys",
    "keys_to_scores",
]
