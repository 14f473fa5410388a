"""The SegmentMeIfYouCan tool's pixel metric ``PixBinaryClass`` (spec section 7, protocol ``smiyc``).

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
1203 frames cost about 22 MB whatever the image size.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sml.errors import InputError
from sml.utils.state import Stateful
from sml.metrics._inputs import scores_and_labels

__all__ = ["NUM_BINS", "SmiycPixelMetric", "frame_bins", "curve_from_bins", "to_submission"]

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


class SmiycPixelMetric(Stateful):
    """``PixBinaryClass`` of the SegmentMeIfYouCan tool, accumulated frame by frame (protocol ``smiyc``).

    ``update`` rounds each map to float16 (the submission's dtype) and keeps its
    768-bin histogram; ``compute`` pools the frames as the tool does.
    ``best_f1_threshold()`` is the threshold the tool hands to its component
    metrics (``SegEval-AnomalyTrack`` / ``SegEval-ObstacleTrack``).
    """

    def __init__(self, ignore_index: int = 255, num_bins: int = NUM_BINS) -> None:
        self.ignore_index = int(ignore_index)
        self.num_bins = int(num_bins)
        self._thr: list[np.ndarray] = []
        self._tp: list[np.ndarray] = []
        self._fp: list[np.ndarray] = []
        self.num_pos = 0
        self.num_neg = 0
        self.frames = 0
        self.ignored = 0

    def update(self, anomaly: Any, labels: Any) -> None:
        """Add one ``H x W`` frame (or a ``B x H x W`` batch): scores, labels 1 anomaly / 0 inlier / ignore."""
        s16 = to_submission(_as_array(anomaly))
        _, y = scores_and_labels(s16, labels)  # shape and label checks only
        frames = [(s16, y)] if s16.ndim == 2 else list(zip(s16, y)) if s16.ndim == 3 else None
        if frames is None:
            raise InputError(f"smiyc metric takes H x W or B x H x W maps, got shape {tuple(s16.shape)}")
        for fs, fy in frames:
            bad = (fy != 0) & (fy != 1) & (fy != self.ignore_index)
            if bad.any():
                raise InputError(f"labels must be 0 (inlier), 1 (anomaly) or {self.ignore_index} (void); found "
                                 f"{sorted(set(np.unique(fy[bad]).tolist()))[:5]}")
            roi = fy != self.ignore_index
            sc = fs[roi]
            if not np.isfinite(sc).all():
                raise InputError("anomaly map is not finite in float16 at evaluated pixels (NaN, inf, or a score "
                                 "beyond +-65504 that float16 cannot hold); rescale the scores before submitting")
            b = frame_bins(sc, fy[roi] == 1, self.num_bins)
            self._thr.append(b["thresholds"])
            self._tp.append(b["tp_rel"])
            self._fp.append(b["fp_rel"])
            self.num_pos += b["num_pos"]
            self.num_neg += b["num_neg"]
            self.ignored += int(roi.size - sc.size)
            self.frames += 1

    def merge(self, other: "SmiycPixelMetric") -> "SmiycPixelMetric":
        """Add ``other``'s frames after ours; returns ``self``."""
        if not isinstance(other, SmiycPixelMetric) or other is self:
            raise InputError("can only merge another SmiycPixelMetric into this one")
        if other.num_bins != self.num_bins:
            raise InputError(f"cannot merge smiyc metrics with {other.num_bins} and {self.num_bins} bins")
        self._thr += other._thr
        self._tp += other._tp
        self._fp += other._fp
        self.num_pos += other.num_pos
        self.num_neg += other.num_neg
        self.frames += other.frames
        self.ignored += other.ignored
        return self

    def state_dict(self) -> dict[str, Any]:
        """Plain arrays and ints (save with ``np.savez``); ``load_state_dict`` restores them."""
        lengths = np.array([t.size for t in self._thr], dtype=np.int64)
        cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.empty(0, dt))
        return {"protocol": "smiyc", "num_bins": self.num_bins, "ignore_index": self.ignore_index,
                "lengths": lengths, "thresholds": cat(self._thr, np.float64),
                "tp_rel": cat(self._tp, np.int64), "fp_rel": cat(self._fp, np.int64),
                "num_pos": int(self.num_pos), "num_neg": int(self.num_neg),
                "frames": int(self.frames), "ignored": int(self.ignored)}

    def load_state_dict(self, state: dict[str, Any]) -> "SmiycPixelMetric":
        """Restore a :meth:`state_dict`; returns ``self``."""
        if str(np.asarray(state.get("protocol", ""))) != "smiyc":
            raise InputError("not a smiyc metric state (its 'protocol' entry is not 'smiyc')")
        self.num_bins = int(state["num_bins"])
        self.ignore_index = int(state["ignore_index"])
        cuts = np.cumsum(np.asarray(state["lengths"], dtype=np.int64))[:-1]
        self._thr = list(np.split(np.asarray(state["thresholds"], np.float64), cuts)) if len(state["lengths"]) else []
        self._tp = list(np.split(np.asarray(state["tp_rel"], np.int64), cuts)) if len(state["lengths"]) else []
        self._fp = list(np.split(np.asarray(state["fp_rel"], np.int64), cuts)) if len(state["lengths"]) else []
        self.num_pos, self.num_neg = int(state["num_pos"]), int(state["num_neg"])
        self.frames, self.ignored = int(state["frames"]), int(state["ignored"])
        return self

    def summary(self, max_points: int = 2000) -> tuple[dict[str, Any], Any]:
        """``(compute(), curves)`` in the layout of ``AnomalyMetrics.curves`` (None where a class is missing)."""
        r = self.compute()
        if r["reason"] is not None:
            return r, None
        c = self._curve()
        idx = np.unique(np.linspace(0, c["tpr"].size - 1, min(max_points, c["tpr"].size)).astype(np.intp))
        thr = c["thresholds"][idx]
        return r, {"roc": {"fpr": c["fpr"][idx], "tpr": c["tpr"][idx], "threshold": thr},
                   "pr": {"precision": c["precision"][idx][::-1], "recall": c["recall"][idx][::-1],
                          "threshold": thr[::-1]}}

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-frame bins."""
        return sum(a.nbytes for xs in (self._thr, self._tp, self._fp) for a in xs)

    def _curve(self) -> dict[str, Any]:
        return curve_from_bins(np.concatenate(self._thr), np.concatenate(self._tp), np.concatenate(self._fp),
                               self.num_pos, self.num_neg)

    def compute(self) -> dict[str, Any]:
        """The tool's numbers: ``auroc``, ``ap``, ``fpr95`` (threshold convention), ``best_f1`` and its threshold.

        NaN with a ``reason`` where a class is missing (the tool itself would
        divide by zero there); ``notes`` lists the tool's reproduced defects.
        """
        base = {"protocol": "smiyc", "fpr95_convention": "threshold", "num_bins": self.num_bins,
                "pixels": {"anomaly": int(self.num_pos), "inlier": int(self.num_neg)},
                "ignored": int(self.ignored), "images": int(self.frames), "notes": list(KNOWN_DEFECTS)}
        reason = None
        if self.frames == 0 or self.num_pos + self.num_neg == 0:
            reason = "no evaluated pixel"
        elif self.num_pos == 0:
            reason = "no anomaly pixel (label 1) in the evaluated frames"
        elif self.num_neg == 0:
            reason = "no inlier pixel (label 0) in the evaluated frames"
        if reason is not None:
            nan = math.nan
            return {"auroc": nan, "ap": nan, "fpr95": nan, "threshold_at_95tpr": nan, "best_f1": nan,
                    "best_f1_threshold": nan, **base, "reason": reason}
        c = self._curve()
        return {k: c[k] for k in ("auroc", "ap", "fpr95", "threshold_at_95tpr", "best_f1", "best_f1_threshold")} \
            | base | {"reason": None}

    def best_f1_threshold(self) -> float:
        """The binned curve's best-F1 threshold, rounded to float16 as the tool's comparison with float16 maps rounds it."""
        t = self.compute()["best_f1_threshold"]
        if math.isnan(t):
            raise InputError("smiyc: the best-F1 threshold is undefined without anomaly pixels")
        return float(np.float16(t))

    def curves(self) -> dict[str, np.ndarray]:
        """The pooled binned curve (``thresholds``, ``tpr``, ``fpr``, ``precision``, ``recall``)."""
        c = self._curve()
        return {k: c[k] for k in ("thresholds", "tpr", "fpr", "precision", "recall")}

    def __repr__(self) -> str:
        return f"SmiycPixelMetric(frames={self.frames}, num_bins={self.num_bins})"


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x)
