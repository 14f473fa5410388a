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

__all__ = ["NUM_BINS", "KNOWN_DEFECTS", "NOT_FINITE", "frame_bins", "device_frame_bins", "curve_from_bins",
           "to_submission", "device_submission"]

#: ``PixBinaryClass``: 768 percentile bins, half from each class
NUM_BINS = 768

#: a frame whose evaluated float16 scores are not all finite
NOT_FINITE = ("anomaly map is not finite in float16 at evaluated pixels (NaN, inf, or a score beyond +-65504 "
              "that float16 cannot hold); rescale the scores before submitting")


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


def device_submission(anomaly: Any) -> Any:
    """:func:`to_submission` of a torch tensor, where it lives: the same float16 values as NumPy's cast.

    float64 is rounded to float32 *to odd* first (the float32 next to zero, its last bit set where inexact):
    torch casts float64 to float16 through a float32 rounded to nearest, which can land on a float16 midpoint
    that the exact value is not on; from the round-to-odd float32 the float16 rounding is NumPy's.
    """
    import torch

    x = anomaly.detach()
    if x.is_complex():
        raise InputError(f"anomaly scores must be real numbers, got dtype {x.dtype}")
    if x.dtype == torch.float16:
        return x
    if x.dtype == torch.float64:
        f = x.to(torch.float32)
        bits = f.view(torch.int32) - (f.abs().to(torch.float64) > x.abs()).to(torch.int32)  # toward zero
        x = (bits | (f.to(torch.float64) != x).to(torch.int32)).view(torch.float32)
    return x.to(torch.float16)


def _empty_bins() -> dict[str, Any]:
    return {"thresholds": np.empty(0), "tp_rel": np.empty(0, np.int64), "fp_rel": np.empty(0, np.int64),
            "num_pos": 0, "num_neg": 0}


def _bins(edges: np.ndarray, tp_rel: np.ndarray, fp_rel: np.ndarray) -> dict[str, Any]:
    """A frame's bins from its edges and per-class counts: lower edges as thresholds, high to low."""
    return {"thresholds": edges[:-1][::-1].copy(), "tp_rel": tp_rel[::-1].copy(), "fp_rel": fp_rel[::-1].copy(),
            "num_pos": int(tp_rel.sum()), "num_neg": int(fp_rel.sum())}


def frame_bins(scores: np.ndarray, is_anomaly: np.ndarray, num_bins: int = NUM_BINS) -> dict[str, Any]:
    """One frame's binned counts: ``thresholds`` (high to low), ``tp_rel``, ``fp_rel``, ``num_pos``, ``num_neg``.

    ``scores`` are the frame's float16 scores at evaluated pixels (1-D),
    ``is_anomaly`` the matching booleans. ``tp_rel[i]`` / ``fp_rel[i]`` count
    the anomaly / inlier pixels in the bin whose lower edge is ``thresholds[i]``.
    A score that is not finite is an :class:`InputError`.
    """
    if scores.size == 0:
        return _empty_bins()
    # sorted as float32 (exact for float16 values): NumPy 2.4's np.sort of large float16 arrays
    # returned out-of-order runs on this project's CI machines (AVX-512), float32 sorts correctly
    pos = np.sort(scores[is_anomaly].astype(np.float32))
    neg = np.sort(scores[~is_anomaly].astype(np.float32))
    edges = _edges(pos[_reads(pos.size, num_bins)], pos.size, neg[_reads(neg.size, num_bins)], neg.size, num_bins)
    return _bins(edges, *(np.diff(np.concatenate(_below_edges(x.astype(np.float64), edges, np.searchsorted)))
                          .astype(np.int64) for x in (pos, neg)))


def device_frame_bins(scores16: Any, keep: Any, positive: Any, num_bins: int = NUM_BINS) -> dict[str, Any]:
    """:func:`frame_bins` of a torch float16 map (:func:`device_submission`), computed where it lives.

    ``keep``: the evaluated pixels of the flattened map (a bool tensor there, None: all), ``positive``:
    the anomaly pixels among them (a bool tensor there, None: none). The classes are sorted there; only
    the sorted values the edges read, and the counts below each edge, cross to the host.
    """
    import torch

    from sml.utils.device import to_host

    flat = scores16.detach().reshape(-1)
    sc = (flat[keep] if keep is not None else flat).to(torch.float32)
    if sc.numel() == 0:
        return _empty_bins()
    pos, neg = (torch.sort(c).values for c in ((sc[:0], sc) if positive is None else (sc[positive], sc[~positive])))
    reads = [torch.from_numpy(_reads(c.numel(), num_bins)).to(sc.device) for c in (pos, neg)]
    at = to_host(torch.cat([pos[reads[0]], neg[reads[1]]]))
    k = reads[0].numel()
    edges = _edges(at[:k], pos.numel(), at[k:], neg.numel(), num_bins)
    e = torch.from_numpy(edges).to(sc.device)
    below = to_host(torch.stack([torch.cat(_below_edges(c.to(torch.float64), e, torch.searchsorted))
                                 for c in (pos, neg)]))
    return _bins(edges, *(np.diff(b).astype(np.int64) for b in below))


def _lerp_plan(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.quantile(x, np.linspace(0, 1, k))`` of ``n`` sorted values as NumPy 1.23 reads them (linear method).

    Returns the indices read, the ``k`` lower then the ``k`` upper neighbours (in ``[0, n)``), and
    the fractions ``gamma`` between them: index ``(n - 1) q``; NumPy points both neighbours at the
    last element where ``q`` reaches it.
    """
    virtual = (n - 1) * np.linspace(0, 1, k)
    prev = np.floor(virtual)
    above = virtual >= n - 1
    prev[above] = -1
    nxt = prev + 1
    nxt[above] = -1
    return np.concatenate([prev, nxt]).astype(np.intp) % n, virtual - prev


def _lerp(at: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """The quantiles from the values ``at`` the indices of :func:`_lerp_plan` (float32 holding float16 values).

    ``b - a`` is a float16 difference, the interpolation float64, from ``b`` downwards where the fraction is >= 0.5.
    """
    a, b = np.split(at.astype(np.float16), 2)
    diff = b - a  # float16 arithmetic, as in NumPy's _lerp
    out = a.astype(np.float64) + diff * gamma
    hi = gamma >= 0.5
    out[hi] = b[hi].astype(np.float64) - diff[hi] * (1 - gamma[hi])
    return out


def _quantiles(sorted32: np.ndarray, k: int) -> np.ndarray:
    """``np.quantile(x, np.linspace(0, 1, k))`` as NumPy 1.23 evaluates it on float16 ``x`` (given sorted, as float32)."""
    idx, gamma = _lerp_plan(sorted32.size, k)
    return _lerp(sorted32[idx], gamma)


def _reads(n: int, num_bins: int) -> np.ndarray:
    """The indices of a sorted class of ``n`` scores that its bin edges read: first, last, then :func:`_lerp_plan`'s."""
    if n == 0:
        return np.empty(0, np.intp)
    return np.concatenate([[0, n - 1], _lerp_plan(n, min(num_bins // 2, n))[0]]).astype(np.intp)


def _edges(pos_at: np.ndarray, n_pos: int, neg_at: np.ndarray, n_neg: int, num_bins: int) -> np.ndarray:
    """A frame's bin edges from each class's sorted float32 scores at :func:`_reads` (``n_*``: the class sizes).

    The union of ``[vmin - eps, vmax + eps]`` and each class's quantiles, sorted and deduplicated.
    Refuses scores that are not finite (sorted, they are at the ends: -inf first, inf and NaN last).
    """
    # + 0: -0.0 as 0.0, so a zero edge does not depend on where a sort put the two zeros
    classes = [(at + np.float32(0), n) for at, n in ((pos_at, n_pos), (neg_at, n_neg)) if n]
    ends = np.concatenate([at[:2] for at, _ in classes])
    if not np.isfinite(ends).all():
        raise InputError(NOT_FINITE)
    vmin, vmax = ends.min(), ends.max()
    # The tool runs under NumPy 1.x: vmax - vmin of two float16 scalars is rounded to float16,
    # and everything after it (scalar times a Python float) is float64. Written out here so the
    # edges do not depend on the NumPy version sml runs with (NumPy 2 would keep float16).
    vrange = float(np.float16(vmax) - np.float16(vmin))  # a float16 subtraction
    eps = max(vrange * 1e-2, 1e-2)
    parts = [np.array([float(vmin) - eps, float(vmax) + eps])]
    parts += [_lerp(at[2:], _lerp_plan(n, min(num_bins // 2, n))[1]) for at, n in classes]
    return np.unique(np.concatenate(parts))


def _below_edges(x64: Any, edges: Any, searchsorted: Any) -> tuple[Any, Any]:
    """How many of the sorted ``x64`` lie below each lower edge, and at or below the last one
    (``searchsorted``: NumPy's or torch's); their differences are ``np.histogram(x, bins=edges)[0]``:
    bins ``[e_i, e_i+1)``, the last one closed."""
    return searchsorted(x64, edges[:-1], side="left"), searchsorted(x64, edges[-1:], side="right")


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
