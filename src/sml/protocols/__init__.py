"""Benchmark protocols (spec section 7): whose numbers ``sml eval --protocol NAME`` reports.

``exact`` (default) and ``sml-reference`` are sml's own pooled metrics
(scikit-learn's values, FPR@95 interpolated); ``fishyscapes`` the same exact
values with FPR@95 at the first ROC point with TPR >= 0.95 as the headline;
``smiyc`` the SegmentMeIfYouCan tool's binned ``PixBinaryClass`` on float16
maps, with the component metrics at that binned curve's best-F1 threshold.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from sml.errors import InputError
from sml.metrics import AnomalyMetrics, PixelMetric, SmiycPixelMetric
from sml.metrics.smiyc_bins import KNOWN_DEFECTS, NUM_BINS, curve_from_bins, frame_bins, to_submission

__all__ = ["Protocol", "PROTOCOLS", "get_protocol", "pixel_metric", "headline", "SmiycPixelMetric",
           "frame_bins", "curve_from_bins", "to_submission", "NUM_BINS", "KNOWN_DEFECTS", "component_threshold"]


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One benchmark's conventions: its name, whose numbers, the FPR@95 headline, the map dtype it scores."""

    name: str
    whose: str
    fpr95_convention: str   # "interpolated" or "threshold": which FPR@95 is the headline ``fpr95``
    float16: bool           # scores rounded to float16 (as submitted) before any metric
    binned: bool            # the tool's per-frame percentile bins instead of every distinct score
    notes: tuple[str, ...] = ()

    def make_pixel_metric(self, ignore_index: int = 255) -> PixelMetric:
        """A fresh pixel-metric state for this protocol (the :class:`~sml.metrics.PixelMetric` interface)."""
        return (SmiycPixelMetric if self.binned else AnomalyMetrics)(ignore_index=ignore_index)


PROTOCOLS: dict[str, Protocol] = {
    "exact": Protocol("exact", "sml (= scikit-learn on the float32 maps)", "interpolated", False, False),
    "sml-reference": Protocol("sml-reference", "the reference SML evaluation (scikit-learn, ood_metrics)",
                              "interpolated", False, False),
    "fishyscapes": Protocol("fishyscapes", "the Fishyscapes benchmark's evaluation", "threshold", False, False,
                            ("fishyscapes: FPR@95 is the FPR at the first ROC point with TPR >= 0.95",)),
    "smiyc": Protocol("smiyc", "the SegmentMeIfYouCan tool (road-anomaly-benchmark, PixBinaryClass + SegEval)",
                      "threshold", True, True, tuple(KNOWN_DEFECTS)),
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; an ``InputError`` naming the choices otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise InputError(f"unknown --protocol {name!r}; choose one of {', '.join(PROTOCOLS)} "
                         "(see docs/protocols.md)") from None


def pixel_metric(name: str, ignore_index: int = 255) -> PixelMetric:
    """A fresh pixel-metric state for protocol ``name``."""
    return get_protocol(name).make_pixel_metric(ignore_index)


def headline(name: str, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` (a pixel metric's ``compute()``) restated in protocol ``name``'s terms.

    Adds ``protocol`` and ``notes``; for ``fishyscapes`` the headline ``fpr95`` is
    the threshold-convention value (the interpolated one stays as ``fpr95_interpolated``).
    """
    p = get_protocol(name)
    out = dict(result)
    if p.name == "fishyscapes" and out.get("fpr95_convention") == "interpolated":
        out["fpr95_interpolated"] = out["fpr95"]
        out["fpr95"] = out["fpr95_threshold"]
        out["fpr95_convention"] = "threshold"
    out["protocol"] = p.name
    out["notes"] = list(dict.fromkeys([*out.get("notes", []), *p.notes]))
    return out


def component_threshold(name: str, pixel: PixelMetric) -> float:
    """The pixel threshold protocol ``name`` hands to the component metrics (spec 6 step 5 / 7; NaN if undefined).

    Every protocol's is its pixel metric's best-F1 threshold (``smiyc``: of the binned curve, in float16).
    """
    get_protocol(name)  # an unknown name is refused
    return float(pixel.best_f1_threshold())



