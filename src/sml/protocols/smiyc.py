"""The SegmentMeIfYouCan tool's pixel metric (protocol ``smiyc``): where it used to live.

The tool's arithmetic is :mod:`sml.metrics.smiyc_bins` and the stateful
metric :class:`sml.metrics.binned.SmiycPixelMetric` (metrics sit below
protocols); these names stay importable from here.
"""
from __future__ import annotations

from sml.metrics.binned import SmiycPixelMetric
from sml.metrics.smiyc_bins import KNOWN_DEFECTS, NUM_BINS, curve_from_bins, frame_bins, to_submission

__all__ = ["NUM_BINS", "KNOWN_DEFECTS", "SmiycPixelMetric", "frame_bins", "curve_from_bins", "to_submission"]
