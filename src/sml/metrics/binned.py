"""``SmiycPixelMetric``: the SegmentMeIfYouCan tool's binned pixel metric, accumulated frame by frame.

The tool's arithmetic (float16 maps, 768 percentile bins per frame, frames
pooled by their bin edges) is :mod:`sml.metrics.smiyc_bins`; this module
holds the state: each frame's bins, in the order the frames were added. It
offers the :class:`~sml.metrics.PixelMetric` interface of the exact metric.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from sml.errors import InputError
from sml.metrics._inputs import IGNORE_INDEX, count_field, scores_and_labels, to_numpy
from sml.metrics.base import PixelMetric
from sml.metrics.labels import FrameLabels
from sml.metrics.smiyc_bins import (KNOWN_DEFECTS, NUM_BINS, curve_from_bins, device_frame_bins,
                                     device_submission, frame_bins, to_submission)
from sml.utils import schema
from sml.utils.device import on_device

__all__ = ["SmiycPixelMetric"]

_WHAT = "smiyc metric state"


class SmiycPixelMetric(PixelMetric):
    """``PixBinaryClass`` of the SegmentMeIfYouCan tool, accumulated frame by frame (protocol ``smiyc``).

    ``update`` rounds each map to float16 (the submission's dtype) and keeps its
    768-bin histogram; ``compute`` pools the frames as the tool does.
    ``best_f1_threshold()`` is the threshold the tool hands to its component
    metrics (``SegEval-AnomalyTrack`` / ``SegEval-ObstacleTrack``). The tool has
    no per-frame AP: ``update(..., frame_ap=True)`` returns None.
    """

    def __init__(self, ignore_index: int = 255, num_bins: int = NUM_BINS) -> None:
        v = ARGUMENTS.read({"ignore_index": ignore_index, "num_bins": num_bins})
        self._setup(v["ignore_index"], v["num_bins"])

    def _setup(self, ignore_index: int, num_bins: int) -> None:
        """Checked settings; no frame yet."""
        self.ignore_index, self.num_bins = ignore_index, num_bins
        self.reset()

    def reset(self) -> None:
        """Forget every frame added so far."""
        self._thr: list[np.ndarray] = []
        self._tp: list[np.ndarray] = []
        self._fp: list[np.ndarray] = []
        self.num_pos = 0
        self.num_neg = 0
        self.frames = 0
        self.ignored = 0
        self._synced = False
        self._pooled: dict[str, Any] | None = None

    def update(self, anomaly: Any, labels: Any, *, frame_ap: bool = False) -> None:
        """Add one ``H x W`` frame (or a ``B x H x W`` batch): scores, labels 1 anomaly / 0 inlier / ignore.

        ``labels`` may be a prepared :class:`~sml.metrics.FrameLabels` (one frame). A torch tensor
        on an accelerator is rounded, sorted and binned there; only each frame's bins cross to the host.
        """
        device = on_device(anomaly)
        s16 = device_submission(anomaly) if device else to_submission(to_numpy(anomaly, "anomaly"))
        if isinstance(labels, FrameLabels):
            self._add_frame(s16, labels)
            return None
        # shape and label checks only (for a map on the device, on a stand-in that allocates nothing)
        _, y = scores_and_labels(np.broadcast_to(np.float32(0), tuple(s16.shape)) if device else s16, labels)
        if s16.ndim not in (2, 3):
            raise InputError(f"smiyc metric takes H x W or B x H x W maps, got shape {tuple(s16.shape)}")
        for fs, fy in [(s16, y)] if s16.ndim == 2 else zip(s16, y):
            self._add_frame(fs, FrameLabels(fy, self.ignore_index))
        return None

    def _add_frame(self, s16: Any, fl: FrameLabels) -> None:
        """One frame's float16 map (NumPy, or a torch tensor on the device path): its bins at the evaluated pixels."""
        fl.check_map(tuple(s16.shape), self.ignore_index)
        if on_device(s16):
            b = device_frame_bins(s16, fl.keep_on(s16.device), fl.positive_on(s16.device), self.num_bins)
        else:
            flat = s16.reshape(-1)
            sc = flat[fl.keep] if fl.keep is not None else flat
            b = frame_bins(sc, fl.positive if fl.positive is not None else np.zeros(sc.size, bool), self.num_bins)
        self._thr.append(b["thresholds"])
        self._tp.append(b["tp_rel"])
        self._fp.append(b["fp_rel"])
        self.num_pos += b["num_pos"]
        self.num_neg += b["num_neg"]
        self.ignored += fl.n_ignored
        self.frames += 1
        self._pooled = None

    def merge(self, other: "SmiycPixelMetric") -> "SmiycPixelMetric":
        """Add ``other``'s frames after ours; returns ``self``."""
        self._check_mergeable(other)
        if other.num_bins != self.num_bins:
            raise InputError(f"cannot merge smiyc metrics with {other.num_bins} and {self.num_bins} bins")
        self._thr += other._thr
        self._tp += other._tp
        self._fp += other._fp
        self.num_pos += other.num_pos
        self.num_neg += other.num_neg
        self.frames += other.frames
        self.ignored += other.ignored
        self._pooled = None
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
        """Restore a :meth:`state_dict`; returns ``self``.

        An inconsistent state is refused with an :class:`InputError` naming what is
        wrong (nothing is loaded): counts that are not integers >= 0, arrays of the
        wrong dtype or length, more bins per frame than ``num_bins + 1`` or a
        frame's thresholds not strictly decreasing, bin counts that do not add up to
        ``num_pos`` / ``num_neg``, a frame with bins but no pixel.
        """
        v = STATE.read(state)
        lengths, thr, tp, fp = v["lengths"], v["thresholds"], v["tp_rel"], v["fp_rel"]
        self._setup(v["ignore_index"], v["num_bins"])
        cuts = np.cumsum(lengths)[:-1]
        self._thr, self._tp, self._fp = ([*np.split(a.astype(dt), cuts)] if lengths.size else []
                                         for a, dt in ((thr, np.float64), (tp, np.int64), (fp, np.int64)))
        self.num_pos, self.num_neg, self.frames, self.ignored = (v[k] for k in ("num_pos", "num_neg", "frames",
                                                                               "ignored"))
        return self

    def totals(self) -> dict[str, int]:
        """``anomaly``, ``inlier``, ``ignored`` pixels and ``images`` (frames) counted so far."""
        return {"anomaly": int(self.num_pos), "inlier": int(self.num_neg), "ignored": int(self.ignored),
                "images": int(self.frames)}

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-frame bins."""
        return sum(a.nbytes for xs in (self._thr, self._tp, self._fp) for a in xs)

    def _reason(self) -> str | None:
        if self.frames == 0 or self.num_pos + self.num_neg == 0:
            return "no evaluated pixel"
        if self.num_pos == 0:
            return "no anomaly pixel (label 1) in the evaluated frames"
        if self.num_neg == 0:
            return "no inlier pixel (label 0) in the evaluated frames"
        return None

    def _curve(self) -> dict[str, Any]:
        """The pooled binned curve and the tool's numbers (computed once per state)."""
        if self._pooled is None:
            self._pooled = curve_from_bins(np.concatenate(self._thr), np.concatenate(self._tp),
                                           np.concatenate(self._fp), self.num_pos, self.num_neg)
        return self._pooled

    def compute(self) -> dict[str, Any]:
        """The tool's numbers: ``auroc``, ``ap``, ``fpr95`` (threshold convention), ``best_f1`` and its threshold.

        NaN with a ``reason`` where a class is missing (the tool itself would
        divide by zero there); ``notes`` lists the tool's reproduced defects.
        """
        base = {"protocol": "smiyc", "fpr95_convention": "threshold", "num_bins": self.num_bins,
                "pixels": {"anomaly": int(self.num_pos), "inlier": int(self.num_neg)},
                "ignored": int(self.ignored), "images": int(self.frames), "notes": list(KNOWN_DEFECTS)}
        reason = self._reason()
        if reason is not None:
            nan = math.nan
            return {"auroc": nan, "ap": nan, "fpr95": nan, "threshold_at_95tpr": nan, "best_f1": nan,
                    "best_f1_threshold": nan, **base, "reason": reason}
        c = self._curve()
        return {k: c[k] for k in ("auroc", "ap", "fpr95", "threshold_at_95tpr", "best_f1", "best_f1_threshold")} \
            | base | {"reason": None}

    def best_f1_threshold(self) -> float:
        """The binned curve's best-F1 threshold, rounded to float16 as the tool's comparison with float16 maps
        rounds it (NaN without anomaly or inlier pixels)."""
        t = self.compute()["best_f1_threshold"]
        return t if math.isnan(t) else float(np.float16(t))

    def curves(self, max_points: int = 2000) -> dict[str, dict[str, np.ndarray]]:
        """The binned ROC and PR curves at up to ``max_points`` evenly spaced points of the pooled curve.

        ``roc`` from the highest threshold down, ``pr`` in increasing threshold
        order, as :meth:`AnomalyMetrics.curves`. Raises :class:`InputError` if a class is missing.
        """
        if max_points < 3:
            raise InputError(f"max_points must be at least 3, got {max_points}")
        reason = self._reason()
        if reason is not None:
            raise InputError(f"no curves: {reason}")
        c = self._curve()
        idx = np.unique(np.linspace(0, c["tpr"].size - 1, min(max_points, c["tpr"].size)).astype(np.intp))
        thr = c["thresholds"][idx]
        return {"roc": {"fpr": c["fpr"][idx], "tpr": c["tpr"][idx], "threshold": thr},
                "pr": {"precision": c["precision"][idx][::-1], "recall": c["recall"][idx][::-1],
                       "threshold": thr[::-1]}}

    def binned_curve(self) -> dict[str, np.ndarray]:
        """The whole pooled binned curve (``thresholds``, ``tpr``, ``fpr``, ``precision``, ``recall``)."""
        c = self._curve()
        return {k: c[k] for k in ("thresholds", "tpr", "fpr", "precision", "recall")}

    def __repr__(self) -> str:
        return f"SmiycPixelMetric(frames={self.frames}, num_bins={self.num_bins})"


def _kinds(kinds: str) -> Any:
    """Check hook: a 1-D array whose dtype is of ``kinds`` (any dtype when empty), as int64 / float64."""
    def check(a: np.ndarray, ctx: schema.Context) -> np.ndarray:
        if a.size and a.dtype.kind not in kinds:
            raise schema.Invalid("")
        return a.astype(np.int64 if kinds == "iu" else np.float64, copy=False)
    return check


def _bins(name: str, kinds: str) -> schema.Field:
    says = "'{key}' must be a 1-D array of " + ("integers" if kinds == "iu" else "floats") + ", got {value}"
    return schema.Field(name, type="array", required=True, ndim=1, check=_kinds(kinds),
                        says={"invalid": says, "check": says, "missing": says.replace("{value}", "None")})


def _frame_problem(lengths: np.ndarray, frames: int, num_bins: int, thr: np.ndarray, tp: np.ndarray,
                   fp: np.ndarray) -> str | None:
    """What is wrong with bins that do not fit the ``frames`` they claim (None: nothing)."""
    if lengths.size != frames or (lengths.size and not (0 <= lengths.min() and lengths.max() <= num_bins + 1)):
        return f"'lengths' must give 0 to {num_bins + 1} bins for each of the {frames} frames"
    n = int(lengths.sum())
    if not thr.size == tp.size == fp.size == n:
        return f"'thresholds', 'tp_rel' and 'fp_rel' must hold the {n} bins of 'lengths'"
    if n == 0:
        return None
    if not np.isfinite(thr).all() or tp.min() < 0 or fp.min() < 0:
        return "thresholds must be finite and bin counts >= 0"
    starts = np.cumsum(lengths) - lengths
    rising = np.diff(thr) >= 0
    rising[starts[(starts > 0) & (starts < n)] - 1] = False  # a new frame starts there
    if rising.any():
        return "each frame's thresholds must be strictly decreasing"
    if np.any(np.add.reduceat(tp + fp, starts[lengths > 0]) == 0):
        return "a frame has bins but no pixel in them"
    return None


def _frames_fit(v: dict[str, Any], ctx: schema.Context) -> list[schema.Problem]:
    """Rule: each frame's bins fit it, and the bins hold the stated pixels."""
    problem = _frame_problem(v["lengths"], v["frames"], v["num_bins"], v["thresholds"], v["tp_rel"], v["fp_rel"])
    if problem is not None:
        return [ctx.problem("lengths", problem)]
    tp, fp = int(v["tp_rel"].sum()), int(v["fp_rel"].sum())
    if tp != v["num_pos"] or fp != v["num_neg"]:
        return [ctx.problem("num_pos", f"the bins hold {tp} anomaly and {fp} inlier pixels, not the stated num_pos "
                                       f"{v['num_pos']} and num_neg {v['num_neg']}")]
    return []


_NUM_BINS = replace(count_field("num_bins"), ge=2,
                    says={**count_field("num_bins").says, "range": "'num_bins' must be at least 2, got {value}"})
#: :class:`SmiycPixelMetric`'s arguments
ARGUMENTS = schema.Schema((IGNORE_INDEX, _NUM_BINS), voice=schema.Voice(prefix=""))
#: :meth:`SmiycPixelMetric.state_dict` (resume chunks, ``sync``): settings, counters, each frame's bins
STATE = schema.Schema((
    schema.Field("protocol", type="str", required=True, choices=("smiyc",), says={
        "invalid": "its 'protocol' entry is {value}, not 'smiyc': this is not a smiyc metric state",
        "missing": "it has no 'protocol' entry: this is not a smiyc metric state"}),
    _NUM_BINS, IGNORE_INDEX, *(count_field(k) for k in ("num_pos", "num_neg", "frames", "ignored")),
    _bins("lengths", "iu"), _bins("thresholds", "f"), _bins("tp_rel", "iu"), _bins("fp_rel", "iu"),
), rules=(_frames_fit,), voice=schema.Voice(prefix=_WHAT + ": "))
