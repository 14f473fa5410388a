"""The exact pixel metrics as functions of a :class:`~sml.metrics.table.Table` (spec section 5).

AUROC (the Mann-Whitney area in integers), AP (scikit-learn's step sum),
FPR@95 in both conventions, the best-F1 threshold and the ROC / PR curves
reduced for plotting. Nothing here holds state: :class:`~sml.metrics.AnomalyMetrics`
builds the table once and hands it to these.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sml.errors import InputError
from sml.metrics.keys import keys_to_scores
from sml.metrics.table import Table

__all__ = ["TPR_TARGET", "pooled_metrics", "average_precision", "best_f1_point", "curves"]

TPR_TARGET = 0.95


def nan_result() -> dict[str, Any]:
    """Every number NaN (a class is missing)."""
    nan = math.nan
    return {"auroc": nan, "ap": nan, "fpr95": nan, "fpr95_threshold": nan, "threshold_at_95tpr": nan,
            "best_f1": nan, "best_f1_threshold": nan}


def pooled_metrics(t: Table) -> dict[str, Any]:
    """AUROC, AP, both FPR@95 and the best-F1 threshold from a table (NaN with a reason if undefined)."""
    reason = t.reason
    base: dict[str, Any] = {"fpr95_convention": "interpolated",
                            "pixels": {"anomaly": int(t.n_pos), "inlier": int(t.n_neg)}}
    if reason is not None:
        out = nan_result()
        if t.n_pos > 0 and t.n_neg == 0:
            # best F1 is still defined (the lowest threshold catches everything with precision 1)
            out["best_f1"], out["best_f1_threshold"] = best_f1_point(t)
        return {**out, **base, "reason": reason}
    P, N = t.n_pos, t.n_neg
    tp, fp, fa = t.tp, t.fp, t.fp_above
    # Twice the Mann-Whitney area, in integers. With tp_prev[j] = tp[j - 1] (0 for j = 0):
    # 2 * sum gap * tp_prev + sum ties * (tp_prev + tp), where gap[j] = fa[j] - fp[j - 1] inliers
    # lie strictly between anomaly scores j - 1 and j, and ties = fp - fa tie with score j (half
    # credit). Written on shifted views, with two temporaries: each sum is at most N * P.
    gap = np.subtract(fa[1:], fp[:-1])
    ties = np.subtract(fp, fa)
    if 2 * P * N < 2 ** 62:  # exact in int64
        area2 = int(2 * np.dot(gap, tp[:-1]) + np.dot(ties[1:], tp[:-1]) + np.dot(ties, tp))
    else:  # beyond int64: Python ints
        area2 = (2 * sum(int(g) * int(p) for g, p in zip(gap.tolist(), tp[:-1].tolist()))
                 + sum(int(a) * int(b) for a, b in zip(ties[1:].tolist(), tp[:-1].tolist()))
                 + sum(int(a) * int(b) for a, b in zip(ties.tolist(), tp.tolist())))
    del gap, ties
    area2 += 2 * (N - int(fp[-1])) * P
    auroc = area2 / (2 * P * N)  # int / int is correctly rounded in Python
    flagged = np.add(tp, fp)      # pixels at or above each threshold, shared by AP and best F1
    ap = average_precision(t, flagged)
    tpr = np.divide(tp, float(P))  # the same float64 operation as scikit-learn's tps / tps[-1]
    i95 = int(np.searchsorted(tpr, TPR_TARGET, side="left"))  # highest threshold with TPR >= 0.95
    fpr95_thr = float(fp[i95]) / N
    fpr95 = fpr95_interpolated(tpr, fp, fa, N)
    del tpr
    best_f1, best_thr = best_f1_point(t, flagged)
    return {"auroc": float(auroc), "ap": ap, "fpr95": fpr95, "fpr95_threshold": fpr95_thr,
            "threshold_at_95tpr": float(keys_to_scores(t.keys[i95:i95 + 1])[0]),
            "best_f1": best_f1, "best_f1_threshold": best_thr, **base, "reason": None}


def average_precision(t: Table, flagged: np.ndarray | None = None) -> float:
    """``sum_k (R_k - R_{k-1}) P_k`` over the distinct anomaly scores (scikit-learn's AP); NaN if undefined.

    ``flagged`` (``tp + fp``) may be passed in when already computed.
    """
    if t.reason is not None:
        return math.nan
    flagged = np.add(t.tp, t.fp) if flagged is None else flagged
    precision = np.divide(t.tp, flagged)           # tp / (tp + fp), float64 (exact integer sums)
    step = np.divide(t.count, float(t.n_pos))      # R_k - R_{k-1}
    return max(0.0, float(np.sum(np.multiply(step, precision, out=step))))


def fpr95_interpolated(tpr: np.ndarray, fp: np.ndarray, fa: np.ndarray, N: int) -> float:
    """``np.interp(0.95, tpr, fpr)`` over scikit-learn's ``roc_curve`` (the reference's ``fpr_at_95_tpr``).

    ``np.interp`` uses the last ROC point with TPR <= 0.95 and the next one. With
    TPR exactly 0.95 that is the last point of the vertical run at that TPR (all
    inliers above the next anomaly score); otherwise the segment from the point
    just above the first anomaly score with TPR > 0.95 to that score's point. The
    reference's ``all(tpr < .95)`` / ``all(tpr >= .95)`` branches cannot occur:
    the curve runs from (0, 0) to (1, 1) whenever both classes are present.
    """
    exact = np.flatnonzero(tpr == TPR_TARGET)
    if exact.size:
        return float(fa[exact[0] + 1]) / N  # tpr[-1] == 1, so exact[0] + 1 exists
    j = int(np.searchsorted(tpr, TPR_TARGET, side="right"))
    x0 = float(tpr[j - 1]) if j > 0 else 0.0
    y0, y1 = float(fa[j]) / N, float(fp[j]) / N
    return float(np.interp(TPR_TARGET, [x0, float(tpr[j])], [y0, y1]))


def best_f1_point(t: Table, flagged: np.ndarray | None = None) -> tuple[float, float]:
    """Max pooled pixel F1 over the PR curve's thresholds (``score >= thr``) and that threshold.

    Only thresholds at anomaly scores can be maxima (below one, inliers only add
    false positives). Ties go to the lowest threshold, as ``argmax`` over
    scikit-learn's increasing thresholds does. ``flagged`` (``tp + fp``) may be
    passed in when already computed (it is not modified).
    """
    if t.n_pos == 0:
        return math.nan, math.nan
    denom = np.add(np.add(t.tp, t.fp) if flagged is None else flagged, t.n_pos)
    # F1 = 2 tp / (tp + fp + P); the factor 2 is exact in binary floating point, so the
    # ranking (and every tie) of tp / (...) is that of F1, and only the maximum is doubled
    ratio = np.divide(t.tp, denom)
    i = ratio.size - 1 - int(np.argmax(ratio[::-1]))
    return 2.0 * float(t.tp[i]) / float(denom[i]), float(keys_to_scores(t.keys[i:i + 1])[0])


def reduce_points(x: np.ndarray, y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points spread evenly along the curve's (L1) length; keeps both ends."""
    if x.size <= max_points:
        return np.arange(x.size)
    arc = np.concatenate(([0.0], np.cumsum(np.abs(np.diff(x)) + np.abs(np.diff(y)))))
    return reduce_arc(arc, max_points)


def reduce_arc(arc: np.ndarray, max_points: int) -> np.ndarray:
    """:func:`reduce_points` given the curve's length ``arc`` at each point (non-decreasing, from 0).

    Splits the length into ``max_points - 2`` equal bins and keeps the first point
    of each non-empty bin and the last point: one search per bin.
    """
    n = arc.size
    if n <= max_points:
        return np.arange(n)
    total = float(arc[-1] - arc[0])
    if not total > 0:
        return np.array([0, n - 1])
    bins = max(1, max_points - 2)
    first = np.searchsorted(arc, arc[0] + np.arange(bins) * (total / bins), side="left")
    return np.unique(np.append(first, n - 1))


def roc_points(t: Table, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``fpr, tpr, threshold`` of the ROC curve through the given steps (indices into ``t``, increasing).

    Step ``j`` contributes the top of the run of inliers scoring between anomaly
    scores ``j - 1`` and ``j`` (when there are any) and the point after anomaly
    score ``j``'s tie group; the curve starts at (0, 0) (threshold +inf) and ends
    at (1, 1). With every step, this is scikit-learn's ``roc_curve`` (corners only).
    """
    P, N = t.n_pos, t.n_neg
    prev = steps - 1
    tp_prev = np.where(prev >= 0, t.tp[np.maximum(prev, 0)], 0)
    fp_prev = np.where(prev >= 0, t.fp[np.maximum(prev, 0)], 0)
    k = steps.size
    x = np.empty(2 * k, np.int64)
    y = np.empty(2 * k, np.int64)
    key = np.empty(2 * k, np.int32)
    keep = np.ones(2 * k, bool)
    x[0::2], y[0::2], key[0::2] = t.fp_above[steps], tp_prev, t.next_above[steps]  # top of the inlier run
    x[1::2], y[1::2], key[1::2] = t.fp[steps], t.tp[steps], t.keys[steps]          # after the tie group
    keep[0::2] = t.fp_above[steps] > fp_prev
    x, y, key = x[keep], y[keep], key[keep]
    if x[-1] < N:  # inliers below the lowest anomaly score: the curve's last run to (1, 1)
        x, y, key = np.append(x, N), np.append(y, P), np.append(key, np.int32(t.min_key))
    fpr = np.concatenate(([0.0], x / N))
    tpr = np.concatenate(([0.0], y / P))
    thr = np.concatenate(([np.inf], keys_to_scores(key).astype(np.float64)))
    return fpr, tpr, thr



def curves(t: Table, max_points: int) -> dict[str, dict[str, np.ndarray]]:
    """ROC and precision-recall curves of ``t``, at most ``max_points`` points each (see ``AnomalyMetrics.curves``)."""
    if max_points < 3:
        raise InputError(f"max_points must be at least 3, got {max_points}")
    if t.reason is not None:
        raise InputError(f"no curves: {t.reason}")
    P, N, m = t.n_pos, t.n_neg, t.keys.size
    # Only the points kept are built: a step j of the ROC staircase is the top of its run of
    # inliers and the point after its anomaly tie group; both coordinates only grow, so the
    # curve's L1 length at step j is fpr + tpr and the steps to keep come from one search
    # (O(max_points log m), not O(m) passes over millions of steps).
    steps = reduce_arc(t.fp / N + t.tp / P, max(1, (max_points - 2) // 2))
    fpr, tpr, thr = roc_points(t, steps)
    if fpr.size > max_points:  # only for tiny max_points
        ri = reduce_points(fpr, tpr, max_points)
        fpr, tpr, thr = fpr[ri], tpr[ri], thr[ri]
    # PR in increasing threshold order: recall falls by count / P per step, precision moves
    # either way, so its L1 length needs one pass over the steps
    tpf = t.tp[::-1].astype(np.float64)
    precision = tpf / (tpf + t.fp[::-1])
    arc = np.empty(m)
    arc[0] = 0.0
    np.cumsum(np.abs(np.diff(precision)), out=arc[1:])
    arc += 1.0 - tpf / P
    pi = reduce_arc(arc, max_points)
    pthr = keys_to_scores(t.keys[::-1][pi]).astype(np.float64)
    return {"roc": {"fpr": fpr, "tpr": tpr, "threshold": thr},
            "pr": {"precision": precision[pi], "recall": tpf[pi] / P, "threshold": pthr}}
