"""The arithmetic of the SegmentMeIfYouCan tool's pixel metric ``PixBinaryClass`` (spec section 7, protocol ``smiyc``).

What the tool (github SegmentMeIfYouCan/road-anomaly-benchmark, read at commit
1c7804e0) does, and this module does the same way:

* the submitted maps are float16 (``Evaluation.save_output``); scores are read
  back as float16 and every comparison sees float16 values;
* per frame, over the pixels with label < 255: bin edges are the union of
  ``[vmin - eps, vmax + eps]`` (``eps = max(0.01 (vmax - vmin), 0.01)``), 384
  quantiles of the anomaly pixels' scores and 384 of the inlier pixels' scores
  (fewer when a class has fewer pixels), deduplicated; ``np.histogram`` counts
  each class per bin (bins ``[e_i, e_i+1)``, the last one closed);
* frames are pooled by concatenating every frame's bin lower edges as
  thresholds (``score >= threshold`` is "flagged"), sorting them from high to
  low and cumulating the per-bin counts; where thresholds repeat only the last
  entry of each run is kept, except the very first entry, which is always kept;
* end points (0, 0) and (P, N) are added when missing; AUROC is the trapezoid
  area of (FPR, TPR), AP is ``sum(diff(recall) * precision[1:])``, FPR@95 the
  FPR at the first curve point with TPR >= 0.95 (1.0 if none), the best-F1
  threshold the first maximum of ``2 tp / (2 tp + fp + fn)`` along the curve.

The state kept per frame is at most 769 thresholds and two count vectors, so
1203 frames cost about 22 MB whatever the image size. The stateful metric is
:class:`sml.metrics.binned.SmiycPixelMetric`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sml.errors import InputError

__all__ = ["NUM_BINS", "KNOWN_DEFECTS", "frame_bins", "curve_from_bins", "to_submission"]

#: ``PixBinaryClass``: 768 percentile bins, half from each class
NUM_BINS = 768

#: defects of the tool that this implementation reproduces (copied into every result's ``notes``)
KNOWN_DEFECTS = [
    "smiyc: the first point of the pooled curve is kept even when several frames share the highest "
    "threshold, so it counts only the frames sorted first among them (the tool sorts with an unstable "
    "sort and gathers frames in arbitrary order; sml takes frames in the order they were added). "
    "Only that first point and only data sets whose frames tie at their top score are affected.",
    "smiyc: AUROC is the trapezoid area under the binned curve and AP the step sum over it, so both "
    "depend on the 768 percentile bins per frame, not on every distinct score.",
]


def to_submission(anomaly: Any) -> np.ndarray:
    """The map as the benchmark receives it: float16 (as the tool's ``save_output`` and sml's HDF5 writer store it)."""
    a = np.asarray(anomaly)
    if a.dtype == np.float16:
        return a
    with np.errstate(over="ignore"):
        return a.astype(np.float16)


def frame_bins(scores: np.ndarray, is_anomaly: np.ndarray, num_bins: int = NUM_BINS) -> dict[str, Any]:
    """One frame's binned counts: ``thresholds`` (high to low), ``tp_rel``, ``fp_rel``, ``num_pos``, ``num_neg``.

    ``scores`` are the frame's float16 scores at evaluated pixels (1-D),
    ``is_anomaly`` the matching booleans. ``tp_rel[i]`` / ``fp_rel[i]`` count
    the anomaly / inlier pixels in the bin whose lower edge is ``thresholds[i]``.
    """
    if scores.size == 0:
        return {"thresholds": np.empty(0), "tp_rel": np.empty(0, np.int64), "fp_rel": np.empty(0, np.int64),
                "num_pos": 0, "num_neg": 0}
    # sorted as float32 (exact for float16 values): NumPy 2.4's np.sort of large float16 arrays
    # returned out-of-order runs on this project's CI machines (AVX-512), float32 sorts correctly
    pos = np.sort(scores[is_anomaly].astype(np.float32))
    neg = np.sort(scores[~is_anomaly].astype(np.float32))
    vmin = min(pos[0] if pos.size else np.inf, neg[0] if neg.size else np.inf)
    vmax = max(pos[-1] if pos.size else -np.inf, neg[-1] if neg.size else -np.inf)
    # The tool runs under NumPy 1.x: vmax - vmin of two float16 scalars is rounded to float16,
    # and everything after it (scalar times a Python float) is float64. Written out here so the
    # edges do not depend on the NumPy version sml runs with (NumPy 2 would keep float16).
    vrange = float(np.float16(vmax) - np.float16(vmin))  # a float16 subtraction
    eps = max(vrange * 1e-2, 1e-2)
    parts = [np.array([float(vmin) - eps, float(vmax) + eps])]
    half = num_bins // 2
    if pos.size:
        parts.append(_quantiles(pos, min(half, pos.size)))
    if neg.size:
        parts.append(_quantiles(neg, min(half, neg.size)))
    edges = np.unique(np.concatenate(parts))
    tp_rel = _bin_counts(pos, edges)
    fp_rel = _bin_counts(neg, edges)
    return {"thresholds": edges[:-1][::-1].copy(), "tp_rel": tp_rel[::-1].copy(),
            "fp_rel": fp_rel[::-1].copy(), "num_pos": int(pos.size), "num_neg": int(neg.size)}


def _quantiles(sorted32: np.ndarray, k: int) -> np.ndarray:
    """``np.quantile(x, np.linspace(0, 1, k))`` as NumPy 1.23 evaluates it on float16 ``x`` (given sorted, as float32).

    Linear method: index ``(n - 1) q``; ``b - a`` is a float16 difference, the
    interpolation float64, from ``b`` downwards where the fraction is >= 0.5.
    """
    n = sorted32.size
    q = np.linspace(0, 1, k)
    virtual = (n - 1) * q
    prev = np.floor(virtual)
    above = virtual >= n - 1
    prev[above] = -1  # NumPy points both ends at the last element there
    nxt = prev + 1
    nxt[above] = -1
    gamma = virtual - prev
    a = sorted32[prev.astype(np.intp)].astype(np.float16)
    b = sorted32[nxt.astype(np.intp)].astype(np.float16)
    diff = b - a  # float16 arithmetic, as in NumPy's _lerp
    out = a.astype(np.float64) + diff * gamma
    hi = gamma >= 0.5
    out[hi] = b[hi].astype(np.float64) - diff[hi] * (1 - gamma[hi])
    return out


def _bin_counts(sorted32: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``np.histogram(x, bins=edges)[0]`` of sorted ``x``: bins ``[e_i, e_i+1)``, the last one closed."""
    x = sorted32.astype(np.float64)
    cum = np.concatenate([np.searchsorted(x, edges[:-1], "left"), np.searchsorted(x, edges[-1:], "right")])
    return np.diff(cum).astype(np.int64)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    # np.trapz's formula (NumPy 2 renamed it), evaluated the same way
    return float((np.diff(x) * (y[1:] + y[:-1]) / 2.0).sum())


def curve_from_bins(thresholds: np.ndarray, tp_rel: np.ndarray, fp_rel: np.ndarray,
                    num_pos: int, num_neg: int) -> dict[str, Any]:
    """The pooled binned curve and the tool's numbers from every frame's bins concatenated.

    Returns ``auroc``, ``ap``, ``fpr95``, ``threshold_at_95tpr``, ``best_f1``,
    ``best_f1_threshold`` and the curve arrays (``thresholds``, ``tpr``, ``fpr``,
    ``precision``, ``recall``), as ``PixBinaryClass`` computes them.
    """
    if thresholds.size == 0:
        raise InputError("smiyc: no evaluated pixel in any frame")
    # descending; a stable sort, so ties keep the frames' order (the tool's order there is arbitrary)
    order = np.argsort(thresholds, kind="stable")[::-1]
    thr = thresholds[order]
    tp = np.cumsum(tp_rel[order].astype(np.float64))
    fp = np.cumsum(fp_rel[order].astype(np.float64))
    keep = np.concatenate([[0], np.nonzero(thr[:-1] != thr[1:])[0], [thr.size - 1]])
    thr, tp, fp = thr[keep], tp[keep], fp[keep]
    P, N = float(num_pos), float(num_neg)
    fn, tn = P - tp, N - fp
    if tp[0] != 0 or fp[0] != 0:
        tp, fp = np.concatenate([[0.0], tp]), np.concatenate([[0.0], fp])
        fn, tn = np.concatenate([[P], fn]), np.concatenate([[N], tn])
        thr = np.concatenate([[float(np.max(thr)) + 1], thr])
    if tp[-1] != P or fp[-1] != N:
        tp, fp = np.concatenate([tp, [P]]), np.concatenate([fp, [N]])
        fn, tn = np.concatenate([fn, [0.0]]), np.concatenate([tn, [0.0]])
        thr = np.concatenate([thr, [float(np.max(thr)) - 1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / (tp + fn)
        fpr = fp / (fp + tn)
        flagged = tp + fp
        precision = np.ones(tp.size, np.float64)
        precision[flagged > 0] = tp[flagged > 0] / flagged[flagged > 0]
        recall = tp / (tp + fn)
        f1 = (2 * tp) / (2 * tp + fp + fn)
    i95 = int(np.searchsorted(tpr, 0.95))
    if i95 < tpr.size:
        fpr95, thr95 = float(fpr[i95]), float(thr[i95])
    else:
        fpr95, thr95 = 1.0, 0.0
    if np.isnan(f1).all():
        best_f1, best_thr = math.nan, math.nan
    else:
        ix = int(np.nanargmax(f1))
        best_f1, best_thr = float(f1[ix]), float(thr[ix])
    return {"auroc": _trapezoid(tpr, fpr), "ap": float(np.sum(np.diff(recall) * precision[1:])),
            "fpr95": fpr95, "threshold_at_95tpr": thr95, "best_f1": best_f1, "best_f1_threshold": best_thr,
            "thresholds": thr, "tpr": tpr, "fpr": fpr, "precision": precision, "recall": recall}
