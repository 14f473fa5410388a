"""Component-level metrics of SegmentMeIfYouCan (spec section 6): sIoU, PPV, mean F1.

Per frame: threshold the map, label 8-connected components of prediction and
ground truth (``scipy.ndimage.label``), drop small predicted components, turn
small ground-truth components into void, keep the region ``label < 255``, and
score every component. All intersections come from one ``np.unique`` over
(ground-truth id, predicted id) pair codes plus ``bincount`` sums, so the cost
is a few passes over the frame whatever the number of components.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import ndimage

from sml.errors import InputError
from sml.metrics._inputs import label_counts, scores_and_labels
from sml.utils.state import Stateful

__all__ = ["ComponentMetrics", "component_metrics", "frame_components", "SIOU_THRESHOLDS", "TRACKS"]

#: the 11 sIoU / precision thresholds 0.25, 0.30, ..., 0.75 (as the benchmark's ``np.linspace``)
SIOU_THRESHOLDS = np.linspace(0.25, 0.75, 11, endpoint=True)
#: minimum sizes per track: (predicted components, ground-truth components), in pixels
TRACKS: dict[str, tuple[int, int]] = {"anomaly": (500, 100), "obstacle": (50, 10)}
_EIGHT = np.ones((3, 3), dtype=bool)


def frame_components(anomaly: Any, labels: Any, threshold: float, min_pred_size: int, min_gt_size: int,
                     ignore_index: int = 255) -> dict[str, np.ndarray]:
    """Per-component values of one ``H x W`` frame (spec 6, steps 1-3).

    Returns float64 arrays ``siou_gt`` (one per ground-truth component),
    ``siou_pred`` and ``precision_pred`` (one per predicted component), and the
    components' pixel counts ``gt_size``, ``pred_size`` inside the evaluated region.
    """
    s, y = scores_and_labels(anomaly, labels)
    if s.ndim != 2:
        raise InputError(f"component metrics take one H x W frame at a time, got shape {tuple(s.shape)}")
    label_counts(y, ignore_index)  # rejects values other than 0 / 1 / ignore
    void = y == ignore_index
    if not np.isfinite(s[~void]).all():
        raise InputError("anomaly map has NaN or infinite scores at evaluated pixels; fix the scorer or mark "
                         f"those pixels with the ignore value {ignore_index}")
    # 1. masks and 8-connected components
    lp, n_p = ndimage.label((s > threshold) & ~void, structure=_EIGHT)
    lg, n_g = ndimage.label(y == 1, structure=_EIGHT)
    # 2. small predictions deleted, small ground truth made void, then keep label < 255 only
    size_p = np.bincount(lp.ravel(), minlength=n_p + 1)
    lut = np.arange(n_p + 1)
    lut[size_p < min_pred_size] = 0
    lut[0] = 0
    size_g = np.bincount(lg.ravel(), minlength=n_g + 1)
    small_g = size_g < min_gt_size
    small_g[0] = False  # the background is not a component (the reference would void it below s_gt pixels)
    roi = ~void & ~small_g[lg]
    g = lg[roi]
    p = lut[lp[roi]]
    sg = np.bincount(g, minlength=n_g + 1).astype(np.int64)
    sp = np.bincount(p, minlength=n_p + 1).astype(np.int64)
    # 3. pairwise intersections |k ∩ j| from pair codes
    both = (g > 0) & (p > 0)
    codes, cnt = np.unique(g[both].astype(np.int64) * (n_p + 1) + p[both], return_counts=True)
    pk, pj = codes // (n_p + 1), codes % (n_p + 1)
    cnt = cnt.astype(np.int64)
    pred_in_gt = np.bincount(pj, weights=cnt, minlength=n_p + 1)  # |j ∩ all ground truth|
    gt_in_pred = np.bincount(pk, weights=cnt, minlength=n_g + 1)  # |k ∩ all predictions|
    # ground-truth side: P(k) = predicted components meeting k (disjoint, so sizes add up)
    union_p = np.bincount(pk, weights=sp[pj], minlength=n_g + 1)
    adj_g = np.bincount(pk, weights=pred_in_gt[pj] - cnt, minlength=n_g + 1)  # P(k) on other GT components
    ks = np.flatnonzero(sg[1:] > 0) + 1
    inter_g = gt_in_pred[ks]
    siou_gt = inter_g / (union_p[ks] + sg[ks] - inter_g - adj_g[ks])
    # predicted side: G(j) = ground-truth components meeting j
    union_g = np.bincount(pj, weights=sg[pk], minlength=n_p + 1)
    adj_p = np.bincount(pj, weights=gt_in_pred[pk] - cnt, minlength=n_p + 1)  # G(j) on other predictions
    js = np.flatnonzero(sp[1:] > 0) + 1
    inter_p = pred_in_gt[js]
    siou_pred = inter_p / (union_g[js] + sp[js] - inter_p - adj_p[js])
    precision = inter_p / sp[js]
    return {"siou_gt": siou_gt.astype(np.float64), "siou_pred": siou_pred.astype(np.float64),
            "precision_pred": precision.astype(np.float64), "gt_size": sg[ks], "pred_size": sp[js]}


class ComponentMetrics(Stateful):
    """SegmentMeIfYouCan component metrics accumulated frame by frame (spec section 6).

    ``track`` picks the minimum sizes (``"anomaly"``: predictions >= 500 px,
    ground truth >= 100 px; ``"obstacle"``: 50 / 10 px); ``min_pred_size`` and
    ``min_gt_size`` override them. ``threshold`` is the pixel threshold ``t_p``
    (prediction = ``anomaly > t_p``); by spec it is the pooled best-F1 threshold,
    :meth:`AnomalyMetrics.best_f1_threshold`. It may also be given per update.
    """

    def __init__(self, track: str = "anomaly", threshold: float | None = None, min_pred_size: int | None = None,
                 min_gt_size: int | None = None, ignore_index: int = 255) -> None:
        if track not in TRACKS:
            raise InputError(f"unknown track {track!r}; choose one of {sorted(TRACKS)}")
        self.track = track
        self.min_pred_size = int(TRACKS[track][0] if min_pred_size is None else min_pred_size)
        self.min_gt_size = int(TRACKS[track][1] if min_gt_size is None else min_gt_size)
        if self.min_pred_size < 0 or self.min_gt_size < 0:
            raise InputError("minimum component sizes must be >= 0")
        self.threshold = None if threshold is None else _check_threshold(threshold)
        self.ignore_index = int(ignore_index)
        self.frames = 0
        self._siou_gt: list[np.ndarray] = []
        self._siou_pred: list[np.ndarray] = []
        self._prec: list[np.ndarray] = []
        self._thresholds: set[float] = set()
        self._synced = False

    def update(self, anomaly: Any, labels: Any, threshold: float | None = None) -> None:
        """Add one frame ``H x W`` (or a batch ``B x H x W``) with its labels (1 anomaly, 0 inlier, ignore)."""
        t = self.threshold if threshold is None else _check_threshold(threshold)
        if t is None:
            raise InputError("ComponentMetrics needs the pixel threshold: pass threshold= to the constructor or "
                             "update (normally AnomalyMetrics.best_f1_threshold() of the data set)")
        s, y = scores_and_labels(anomaly, labels)
        frames = [(s, y)] if s.ndim == 2 else list(zip(s, y)) if s.ndim == 3 else None
        if frames is None:
            raise InputError(f"component metrics take H x W or B x H x W maps, got shape {tuple(s.shape)}")
        for fs, fy in frames:
            r = frame_components(fs, fy, t, self.min_pred_size, self.min_gt_size, self.ignore_index)
            self._siou_gt.append(r["siou_gt"])
            self._siou_pred.append(r["siou_pred"])
            self._prec.append(r["precision_pred"])
            self.frames += 1
        self._thresholds.add(float(t))

    def merge(self, other: "ComponentMetrics") -> "ComponentMetrics":
        """Add ``other``'s frames (after ours); returns ``self``."""
        if not isinstance(other, ComponentMetrics):
            raise InputError(f"can only merge another ComponentMetrics, got {type(other).__name__}")
        if (other.min_pred_size, other.min_gt_size) != (self.min_pred_size, self.min_gt_size):
            raise InputError(f"cannot merge component metrics with minimum sizes "
                             f"{(other.min_pred_size, other.min_gt_size)} into "
                             f"{(self.min_pred_size, self.min_gt_size)}")
        if other is self:
            raise InputError("cannot merge a metric into itself")
        self._siou_gt.extend(other._siou_gt)
        self._siou_pred.extend(other._siou_pred)
        self._prec.extend(other._prec)
        self._thresholds |= other._thresholds
        self.frames += other.frames
        return self

    def state_dict(self) -> dict[str, Any]:
        """Settings, frame count, thresholds used and the per-component arrays (in frame order)."""
        def cat(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts).astype(np.float64) if parts else np.empty(0)

        return {"track": self.track, "threshold": self.threshold, "min_pred_size": self.min_pred_size,
                "min_gt_size": self.min_gt_size, "ignore_index": self.ignore_index, "frames": int(self.frames),
                "thresholds": sorted(self._thresholds), "siou_gt": cat(self._siou_gt),
                "siou_pred": cat(self._siou_pred), "precision_pred": cat(self._prec)}

    def load_state_dict(self, state: dict[str, Any]) -> "ComponentMetrics":
        """Replace the state with ``state`` (from :meth:`state_dict`)."""
        ComponentMetrics.__init__(self, state["track"], state["threshold"], state["min_pred_size"],
                                  state["min_gt_size"], state["ignore_index"])
        arrays = [np.asarray(state[k], dtype=np.float64) for k in ("siou_gt", "siou_pred", "precision_pred")]
        if any(a.ndim != 1 for a in arrays) or arrays[1].size != arrays[2].size:
            raise InputError("component metric state: siou_gt, siou_pred and precision_pred must be 1-D "
                             "(the last two of equal length)")
        frames, thresholds = int(state["frames"]), [float(t) for t in state["thresholds"]]
        _check_state(arrays, frames, thresholds)
        self._siou_gt, self._siou_pred, self._prec = ([a] if a.size else [] for a in arrays)
        self.frames = frames
        self._thresholds = set(thresholds)
        return self

    def compute(self) -> dict[str, Any]:
        """sIoU, PPV and mean F1 over all frames (spec 6, step 4), with the counts behind them.

        Keys: ``siou`` (mean over ground-truth components), ``ppv`` (mean
        precision over predicted components), ``mean_f1`` (mean of
        ``f1_per_tau`` over ``taus``), ``tp``/``fn``/``fp`` per tau,
        ``siou_pred``, ``components`` (``{"gt", "pred"}``), ``frames``,
        ``threshold``, sizes and ``reason`` (None, or why a value is NaN).
        """
        sg, spred, prec = (np.concatenate(xs) if xs else np.empty(0)
                           for xs in (self._siou_gt, self._siou_pred, self._prec))
        taus = SIOU_THRESHOLDS
        tp = (sg[None, :] >= taus[:, None]).sum(1)
        fn = sg.size - tp
        fp = (prec[None, :] < taus[:, None]).sum(1)
        denom = 2 * tp + fn + fp
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)
        return {
            "siou": _mean(sg),
            "ppv": _mean(prec),
            "mean_f1": float(f1.mean()) if sg.size or prec.size else math.nan,
            "f1_per_tau": [float(v) for v in f1],
            "taus": [float(v) for v in taus],
            "tp": [int(v) for v in tp], "fn": [int(v) for v in fn], "fp": [int(v) for v in fp],
            "siou_pred": _mean(spred),
            "components": {"gt": int(sg.size), "pred": int(prec.size)},
            "frames": int(self.frames),
            "threshold": self._threshold_used(),
            "min_pred_size": self.min_pred_size, "min_gt_size": self.min_gt_size,
            "reason": _undefined(sg.size, prec.size),
        }

    def _threshold_used(self) -> float | None:
        """The one threshold every frame used (None: no frame; NaN: frames used different ones)."""
        if len(self._thresholds) == 1:
            return next(iter(self._thresholds))
        return None if not self._thresholds else math.nan

    def __repr__(self) -> str:
        return (f"ComponentMetrics(track={self.track!r}, min_pred_size={self.min_pred_size}, "
                f"min_gt_size={self.min_gt_size}, frames={self.frames})")


def _check_state(arrays: list[np.ndarray], frames: int, thresholds: list[float]) -> None:
    """Refuse a component state no frames could have produced: sIoU and precision values in [0, 1],
    components only with frames, a finite pixel threshold for every state with frames."""
    if frames < 0:
        raise InputError(f"component metric state: frames is {frames}; it counts frames (>= 0)")
    for name, a in zip(("siou_gt", "siou_pred", "precision_pred"), arrays):
        if a.size and not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
            raise InputError(f"component metric state: {name} holds values outside [0, 1] (or NaN); sIoU and "
                             f"precision are fractions")
    if not all(math.isfinite(t) for t in thresholds):
        raise InputError("component metric state: a pixel threshold is not finite")
    if frames == 0 and (thresholds or any(a.size for a in arrays)):
        raise InputError("component metric state: components or thresholds are recorded but no frame")
    if frames > 0 and not thresholds:
        raise InputError("component metric state: frames are counted but no pixel threshold was recorded")


def _mean(a: np.ndarray) -> float:
    return float(a.mean()) if a.size else math.nan


def _undefined(n_gt: int, n_pred: int) -> str | None:
    """Why component numbers are NaN (None: all defined)."""
    reasons = []
    if n_gt == 0:
        reasons.append("no ground-truth component (sIoU undefined)")
    if n_pred == 0:
        reasons.append("no predicted component (PPV undefined)")
    if n_gt == 0 and n_pred == 0:
        reasons.append("no component at all (F1 undefined)")
    return "; ".join(reasons) or None


def _check_threshold(t: Any) -> float:
    try:
        v = float(t)
    except (TypeError, ValueError):
        raise InputError(f"threshold must be a number, got {t!r}") from None
    if math.isnan(v):
        raise InputError("threshold is NaN (the best-F1 threshold is undefined without anomaly pixels)")
    return v


def component_metrics(anomaly: Sequence[Any] | Any, labels: Sequence[Any] | Any, track: str = "anomaly",
                      threshold: float | None = None, ignore_index: int = 255,
                      min_pred_size: int | None = None, min_gt_size: int | None = None) -> dict[str, Any]:
    """Component metrics of in-memory frames (lists of ``H x W`` maps or ``B x H x W`` arrays).

    Without ``threshold`` the spec's ``t_p`` is used: the pooled best-F1 pixel
    threshold of these frames (an extra pass with :class:`AnomalyMetrics`).
    """
    frames: Iterable[tuple[Any, Any]] = list(zip(anomaly, labels))
    if threshold is None:
        from sml.metrics.pixel import AnomalyMetrics

        pix = AnomalyMetrics(ignore_index=ignore_index)
        for a, y in frames:
            pix.update(a, y)
        threshold = pix.best_f1_threshold()
    cm = ComponentMetrics(track, threshold, min_pred_size, min_gt_size, ignore_index)
    for a, y in frames:
        cm.update(a, y)
    return cm.compute()
