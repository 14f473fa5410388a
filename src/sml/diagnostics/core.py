"""Per-class diagnostics of anomaly scores: why SML helps or fails on a network.

For every *predicted* class the object counts inlier and anomaly pixels and
keeps exact integer histograms (fixed, documented bins; int64) of their max
logit and of their SML score. It reads the maps the evaluation already has
(max logit, argmax, the SML score), so it costs no second network pass. The
state is integer counts only: merging processes is a sum and bit-exact.
See docs/diagnostics.md for the bins and the JSON schema.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sml.errors import InputError
from sml.utils import schema
from sml.utils.state import Stateful

__all__ = ["Bins", "ClassDiagnostics", "MAX_LOGIT_BINS", "SML_BINS", "FORMAT", "box_numbers", "binned_auroc",
           "count_at_or_above"]

FORMAT = "sml-class-diagnostics/1"
QUANTILES = {"p05": 0.05, "q1": 0.25, "median": 0.5, "q3": 0.75, "p95": 0.95}


@functools.lru_cache(maxsize=8)
def _slot_edges(lo: float, hi: float, count: int) -> np.ndarray:
    e = np.r_[-np.inf, np.linspace(lo, hi, count + 1), np.inf]
    e.setflags(write=False)
    return e


@dataclass(frozen=True)
class Bins:
    """``count`` equal bins over ``[lo, hi)`` plus an underflow (``< lo``) and an overflow (``>= hi``) bin.

    Histogram layout: ``[underflow, bin 0, ..., bin count-1, overflow]``; bin
    ``k`` is ``[edges[k], edges[k+1])`` with ``edges = np.linspace(lo, hi, count + 1)``
    (float64), so a value's bin is ``searchsorted(edges, value, side="right")``.
    """

    lo: float
    hi: float
    count: int

    @property
    def width(self) -> float:
        return (self.hi - self.lo) / self.count

    @property
    def size(self) -> int:
        """Histogram length, under- and overflow included."""
        return self.count + 2

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.count + 1)

    def index(self, values: np.ndarray) -> np.ndarray:
        """Histogram slot (0 = underflow, ``count + 1`` = overflow) of every value (float64 comparison).

        Equals ``searchsorted(edges, values, side="right")``; computed as NumPy's
        uniform histogram does (a scaled floor, then one comparison with the
        neighbouring edges to undo rounding), 5x faster than the search.
        """
        x = np.asarray(values, dtype=np.float64)
        k = np.floor((x - self.lo) * (self.count / (self.hi - self.lo)))
        k = np.clip(k, -1, self.count).astype(np.int64) + 1
        lower = _slot_edges(self.lo, self.hi, self.count)   # slot k covers [lower[k], lower[k + 1])
        # rounding moves a value by at most one slot; such values are rare, so fix them by masked updates
        # (int64 -= bool would cast all elements, 10x slower)
        k[x < lower[k]] -= 1
        k[x >= lower[k + 1]] += 1
        return k

    def to_dict(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "count": self.count, "width": self.width,
                "layout": "[underflow (< lo), count bins [lo + k*width, lo + (k+1)*width), overflow (>= hi)]"}


# Max logits of Cityscapes networks lie within about -5..30; SML scores (standardized, negated) within
# about -10..10. Values outside land in the under/overflow bins and are still counted.
MAX_LOGIT_BINS = Bins(-30.0, 30.0, 600)   # width 0.1
SML_BINS = Bins(-15.0, 15.0, 600)         # width 0.05


def _np(x: Any, what: str) -> np.ndarray:
    from sml.metrics._inputs import to_numpy

    a = to_numpy(x, what)
    # one frame as 1 x H x W (model and scorer outputs) or H x W (labels) alike
    return a[0] if a.ndim == 3 and a.shape[0] == 1 else a


def _quantile(hist: np.ndarray, bins: Bins, q: float) -> float:
    """The ``q`` quantile of a histogram, linear within its bin; -inf / +inf in the under/overflow bin."""
    n = int(hist.sum())
    if n == 0:
        return math.nan
    target = q * n
    cum = np.cumsum(hist)
    k = int(np.searchsorted(cum, target, side="left"))
    k = min(k, hist.size - 1)
    while hist[k] == 0:  # target == 0 lands on the first non-empty bin
        k += 1
    if k == 0:
        return -math.inf
    if k == hist.size - 1:
        return math.inf
    before = float(cum[k - 1])
    frac = (target - before) / float(hist[k])
    lo = bins.edges[k - 1]
    return float(lo + min(max(frac, 0.0), 1.0) * bins.width)


def _range(hist: np.ndarray, bins: Bins) -> tuple[float, float]:
    nz = np.flatnonzero(hist)
    if nz.size == 0:
        return math.nan, math.nan
    edges = np.r_[-math.inf, bins.edges, math.inf]
    return float(edges[nz[0]]), float(edges[nz[-1] + 1])


def box_numbers(hist: np.ndarray, bins: Bins) -> dict[str, float]:
    """Box-plot numbers of one histogram: ``pixels``, ``p05``, ``q1``, ``median``, ``q3``, ``p95``,
    ``min``/``max`` (edges of the outermost non-empty bins), ``mean`` (bin centres; under/overflow
    at the range ends). Quantiles are exact to one bin width; NaN without pixels."""
    out: dict[str, float] = {"pixels": int(hist.sum())}
    for key, q in QUANTILES.items():
        out[key] = _quantile(hist, bins, q)
    out["min"], out["max"] = _range(hist, bins)
    centres = np.r_[bins.lo, bins.edges[:-1] + bins.width / 2, bins.hi]
    out["mean"] = float((hist * centres).sum() / out["pixels"]) if out["pixels"] else math.nan
    return out


def count_at_or_above(hist: np.ndarray, bins: Bins, value: float) -> float:
    """Pixels of a histogram at or above ``value`` (the bin holding ``value`` split linearly); NaN for NaN."""
    if not math.isfinite(value):
        return math.nan
    k = int(bins.index(np.array([value]))[0])
    above = float(hist[k + 1:].sum())
    if 1 <= k <= bins.count:  # interior bin: the part of it above the value
        above += float(hist[k]) * (bins.edges[k] - value) / bins.width
    else:
        above += float(hist[k])
    return above


def binned_auroc(inlier: np.ndarray, anomaly: np.ndarray, higher_is_anomalous: bool) -> float:
    """AUROC of two histograms over the same bins, pixels in one bin counted as ties (half).

    Within one bin width of the exact pooled AUROC; NaN when a class is empty.
    """
    n_in, n_an = float(inlier.sum()), float(anomaly.sum())
    if not (n_in and n_an):
        return math.nan
    a, b = inlier.astype(np.float64), anomaly.astype(np.float64)
    if not higher_is_anomalous:
        a, b = a[::-1], b[::-1]
    below = np.cumsum(a) - a  # inlier pixels in lower bins
    return float((b * (below + 0.5 * a)).sum() / (n_in * n_an))


def _json_num(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _histogram(bins: Bins) -> Any:
    """Check hook: a ``2 x num_classes x bins`` histogram of non-negative counts, as int64."""
    def check(a: np.ndarray, ctx: schema.Context) -> np.ndarray:
        expected = (2, ctx.get("num_classes"), bins.size)
        if a.shape != expected:
            raise schema.Invalid(f"has shape {a.shape}, expected {expected} (other number of classes or bins)")
        if (a < 0).any():
            raise schema.Invalid("must hold non-negative integers (pixel counts)")
        return a.astype(np.int64, copy=True)
    return check


def _counts_agree(v: dict[str, Any], ctx: schema.Context) -> list[schema.Problem]:
    """Rule: histograms and counters that frames could have produced (a damaged or edited state is refused):
    both histograms count the same pixels per (label, class), and nothing is counted without a frame."""
    ml, sh, sml = v["max_logit_hist"], v["sml_hist"], ctx.get("sml")
    if v["frames"] == 0 and (v["ignored"] or ml.any() or sh.any()):
        return [ctx.problem("frames", "pixels are counted but no frame")]
    if sml and not np.array_equal(ml.sum(axis=2), sh.sum(axis=2)):
        return [ctx.problem("sml_hist", "the SML-score histograms do not count the same pixels as the max-logit "
                                        "histograms (per label and class totals differ)")]
    if not sml and sh.any():
        return [ctx.problem("sml_hist", "SML-score histograms hold pixels but these diagnostics have no SML score "
                                        "(sml=False)")]
    return []


def _json(text: str, ctx: schema.Context) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise schema.Invalid("is not JSON") from None


_PER_CLASS = dict(type="array", required=True, dtype="iuf", ndim=1, length="num_classes",
                  expected="one number per class")
_COUNTS = (schema.Field("max_logit_hist", type="array", required=True, dtype="iu", ndim=3,
                        check=_histogram(MAX_LOGIT_BINS), expected="an integer array"),
           schema.Field("sml_hist", type="array", required=True, dtype="iu", ndim=3, check=_histogram(SML_BINS),
                        expected="an integer array"),
           schema.Field("frames", type="int", required=True, ge=0),
           schema.Field("ignored", type="int", required=True, ge=0))
_VOICE = schema.Voice(prefix="ClassDiagnostics state: ", fix="A state comes from ClassDiagnostics.state_dict().")
#: :meth:`ClassDiagnostics.state_dict`: the settings, then the counts
STATE = schema.Schema((
    schema.Field("num_classes", type="int", required=True, ge=1),
    schema.Field("class_names", type="list", required=True, length="num_classes", item=schema.Field("", type="str"),
                 says={"length": "{count} class names for {length} classes"}),
    schema.Field("sml", type="bool", required=True),
    schema.Field("ignore_index", type="int", required=True),
    *(schema.Field(k, **_PER_CLASS) for k in ("train_mean", "train_std", "train_count")),
    schema.Field("stats_source", type="str", required=True, check=_json),
    *_COUNTS,
), rules=(_counts_agree,), says={"rule": "{text}"}, voice=_VOICE)
#: a state without settings (loaded into diagnostics built with them)
COUNTS = schema.Schema(_COUNTS, rules=(_counts_agree,), voice=_VOICE)


class ClassDiagnostics(Stateful):
    """Per predicted class: inlier / anomaly pixel counts and histograms of their max logit and SML score.

    ``stats`` (a :class:`sml.ClassStatistics`) supplies the training mean / std
    shown beside each class. Update with each frame's maps (``update`` from
    logits, or ``update_from_predictions`` from the max logit and argmax an
    evaluation already has); ``merge`` / ``sync`` add other partial states
    (integer sums: exact); ``state_dict`` / ``load_state_dict`` for resuming.
    """

    def __init__(self, num_classes: int | None = None, class_names: Sequence[str] | None = None,
                 stats: Any = None, *, sml: bool = True, ignore_index: int = 255) -> None:
        if stats is not None:
            if num_classes is None:
                num_classes = stats.num_classes
            if int(num_classes) != stats.num_classes:
                raise InputError(f"the statistics have {stats.num_classes} classes but num_classes is {num_classes}")
            class_names = class_names or stats.class_names
        from sml.stats import validate  # the classes are declared as statistics declare theirs

        args = validate.ARGUMENTS.read({"num_classes": 19 if num_classes is None else num_classes,
                                        "class_names": class_names})
        self.num_classes = args["num_classes"]
        self.class_names = args["class_names"] or validate.default_names(self.num_classes)
        self.sml = bool(sml)
        self.ignore_index = int(ignore_index)
        nan = np.full(self.num_classes, np.nan)
        self.train_mean = nan.copy() if stats is None else np.asarray(stats.mean, dtype=np.float64)
        self.train_std = nan.copy() if stats is None else np.asarray(stats.std, dtype=np.float64)
        self.train_count = nan.copy() if stats is None else np.asarray(stats.count, dtype=np.float64)
        self.stats_source = None if stats is None else {"model": stats.model, "data": stats.data}
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every counted pixel (the training statistics stay)."""
        c = self.num_classes
        # [kind, class, slot] with kind 0 = inlier (label 0), 1 = anomaly (label 1)
        self.max_logit_hist = np.zeros((2, c, MAX_LOGIT_BINS.size), dtype=np.int64)
        self.sml_hist = np.zeros((2, c, SML_BINS.size), dtype=np.int64)
        self.frames = 0
        self.ignored = 0
        self._synced = False

    def state_dict(self) -> dict[str, np.ndarray]:
        """The state as plain arrays, numbers and strings, settings included (resume files, merging processes)."""
        return {"max_logit_hist": self.max_logit_hist.copy(), "sml_hist": self.sml_hist.copy(),
                "frames": np.array(self.frames, dtype=np.int64), "ignored": np.array(self.ignored, dtype=np.int64),
                "num_classes": self.num_classes, "class_names": list(self.class_names), "sml": self.sml,
                "ignore_index": self.ignore_index, "train_mean": self.train_mean.copy(),
                "train_std": self.train_std.copy(), "train_count": self.train_count.copy(),
                "stats_source": json.dumps(self.stats_source)}

    def load_state_dict(self, state: dict[str, Any]) -> "ClassDiagnostics":
        """Replace the counted state with ``state`` (from :meth:`state_dict`); returns ``self``."""
        if "num_classes" in state:   # settings travel with the counts (Stateful.sync, pickling)
            v = STATE.read(state)
            self.num_classes, self.class_names, self.sml, self.ignore_index = (
                v["num_classes"], v["class_names"], v["sml"], v["ignore_index"])
            self.train_mean, self.train_std, self.train_count = (
                v[k].astype(np.float64) for k in ("train_mean", "train_std", "train_count"))
            self.stats_source = v["stats_source"]
        elif hasattr(self, "num_classes"):
            v = COUNTS.read(state, num_classes=self.num_classes, sml=self.sml)
        else:
            raise InputError("this ClassDiagnostics state carries no settings (num_classes, bins); load it into "
                             "a ClassDiagnostics built with them")
        self.max_logit_hist, self.sml_hist = v["max_logit_hist"], v["sml_hist"]
        self.frames, self.ignored = v["frames"], v["ignored"]
        return self

    # ------------------------------------------------------------------ accumulation
    def update(self, logits: Any, labels: Any, sml_score: Any = None) -> "ClassDiagnostics":
        """Add frames given their logits ``B x C x H x W`` (or ``C x H x W``), labels and SML score maps."""
        import torch

        from sml.scores import functional as F

        t = F.as_logits(torch.as_tensor(logits) if not isinstance(logits, torch.Tensor) else logits)
        if t.shape[1] != self.num_classes:
            raise InputError(f"the logits have {t.shape[1]} classes but these diagnostics have {self.num_classes}")
        values, pred = F.max_and_argmax(t)
        return self.update_from_predictions(pred, values, labels, sml_score)

    def update_from_predictions(self, pred: Any, max_logit: Any, labels: Any,
                                sml_score: Any = None) -> "ClassDiagnostics":
        """Add pixels given their predicted class, max logit, label (1 anomaly, 0 inlier, ``ignore_index``
        void) and SML score (higher = more anomalous), all ``H x W`` or ``B x H x W`` of one shape.

        These are the maps an evaluation already computed for max logit and SML
        (:meth:`sml.scores.LogitContext.max_and_argmax`, the ``sml`` score map).
        """
        p = _np(pred, "pred")
        v = _np(max_logit, "max_logit")
        y = _np(labels, "labels")
        shapes = {"pred": p.shape, "max_logit": v.shape, "labels": y.shape}
        s = None
        if self.sml:
            if sml_score is None:
                raise InputError("these diagnostics track the SML score (sml=True): pass sml_score, or build "
                                 "them with ClassDiagnostics(..., sml=False)")
            s = _np(sml_score, "sml_score")
            shapes["sml_score"] = s.shape
        elif sml_score is not None:
            raise InputError("sml_score given but these diagnostics were built with sml=False")
        if len(set(shapes.values())) != 1:
            raise InputError(f"pred, max_logit, labels (and sml_score) must share one shape, got {shapes}")
        if p.dtype.kind not in "iu":
            raise InputError(f"pred must hold integer class indices, got dtype {p.dtype}")
        if v.dtype.kind != "f" or (s is not None and s.dtype.kind != "f"):
            raise InputError("max_logit and sml_score must be floating point maps")
        if y.dtype.kind == "b":
            y = y.view(np.uint8)
        if y.dtype.kind not in "iu":
            raise InputError(f"labels must be integers (1 anomaly, 0 inlier, {self.ignore_index} void), "
                             f"got dtype {y.dtype}")
        p, v, y = p.reshape(-1), v.reshape(-1), y.reshape(-1)
        inlier, anomaly = y == 0, y == 1
        void = y == self.ignore_index
        other = y.size - int(np.count_nonzero(inlier)) - int(np.count_nonzero(anomaly)) - int(np.count_nonzero(void))
        if other:
            raise InputError(f"labels hold {other} pixels with values other than 0, 1 and {self.ignore_index}; "
                             "map the data set's raw labels first (sml.data loaders do)")
        keep = inlier | anomaly
        p, v, kind = p[keep], v[keep], anomaly[keep]
        if p.size and (int(p.min()) < 0 or int(p.max()) >= self.num_classes):
            raise InputError(f"pred holds class indices outside 0..{self.num_classes - 1}")
        if not np.isfinite(v).all():
            raise InputError("max_logit holds NaN or infinite values at labelled pixels; check the model output")
        # one bincount over (kind, class, slot) per histogram
        base = (kind.astype(np.int64) * self.num_classes + p.astype(np.int64))
        self.max_logit_hist += np.bincount(base * MAX_LOGIT_BINS.size + MAX_LOGIT_BINS.index(v),
                                           minlength=self.max_logit_hist.size).reshape(self.max_logit_hist.shape)
        if s is not None:
            sv = s.reshape(-1)[keep]
            if not np.isfinite(sv).all():
                raise InputError("sml_score holds NaN or infinite values at labelled pixels")
            self.sml_hist += np.bincount(base * SML_BINS.size + SML_BINS.index(sv),
                                         minlength=self.sml_hist.size).reshape(self.sml_hist.shape)
        self.frames += 1 if len(shapes["pred"]) <= 2 else int(shapes["pred"][0])
        self.ignored += int(np.count_nonzero(void))
        return self

    def merge(self, other: "ClassDiagnostics | dict[str, Any]") -> "ClassDiagnostics":
        """Add another partial state's counts (a ClassDiagnostics or its :meth:`state_dict`) to this one
        (in place; returns ``self``)."""
        if isinstance(other, dict):
            other = ClassDiagnostics(self.num_classes, self.class_names, sml=self.sml,
                                     ignore_index=self.ignore_index).load_state_dict(other)
        if not isinstance(other, ClassDiagnostics):
            raise InputError(f"can only merge ClassDiagnostics, got {type(other).__name__}")
        if other is self:
            raise InputError("cannot merge diagnostics into themselves (every pixel would count twice)")
        if other.num_classes != self.num_classes or other.sml != self.sml:
            raise InputError(f"cannot merge diagnostics of {other.num_classes} classes (sml={other.sml}) into "
                             f"{self.num_classes} classes (sml={self.sml})")
        self.max_logit_hist += other.max_logit_hist
        self.sml_hist += other.sml_hist
        self.frames += other.frames
        self.ignored += other.ignored
        return self

    # ------------------------------------------------------------------ results
    @property
    def inlier_pixels(self) -> np.ndarray:
        """Inlier (label 0) pixels per predicted class, int64."""
        return self.max_logit_hist[0].sum(axis=1)

    @property
    def anomaly_pixels(self) -> np.ndarray:
        """Anomaly (label 1) pixels per predicted class, int64."""
        return self.max_logit_hist[1].sum(axis=1)

    @property
    def anomaly_share(self) -> np.ndarray:
        """Share of all anomaly pixels predicted as each class (NaN without anomaly pixels)."""
        a = self.anomaly_pixels
        total = int(a.sum())
        return a / total if total else np.full(self.num_classes, np.nan)

    def compute(self) -> dict[str, Any]:
        """Per-class numbers (the ``classes`` list of diagnostics.json) plus the pooled totals."""
        inl, ano = self.inlier_pixels, self.anomaly_pixels
        share = self.anomaly_share
        total_in = int(inl.sum())
        classes = []
        for c in range(self.num_classes):
            entry: dict[str, Any] = {
                "id": c, "name": self.class_names[c],
                "inlier_pixels": int(inl[c]), "anomaly_pixels": int(ano[c]),
                "anomaly_share": float(share[c]),
                "inlier_share": float(inl[c] / total_in) if total_in else math.nan,
                "train_mean": float(self.train_mean[c]), "train_std": float(self.train_std[c]),
                "train_pixels": float(self.train_count[c]),
                "max_logit": {"inlier": box_numbers(self.max_logit_hist[0, c], MAX_LOGIT_BINS),
                              "anomaly": box_numbers(self.max_logit_hist[1, c], MAX_LOGIT_BINS)},
            }
            mu = float(self.train_mean[c])
            entry["at_or_above_train_mean"] = {
                key: (count_at_or_above(self.max_logit_hist[kind, c], MAX_LOGIT_BINS, mu) / n if n else math.nan)
                for kind, key, n in ((0, "inlier", int(inl[c])), (1, "anomaly", int(ano[c])))}
            if self.sml:
                entry["sml"] = {"inlier": box_numbers(self.sml_hist[0, c], SML_BINS),
                                "anomaly": box_numbers(self.sml_hist[1, c], SML_BINS)}
            classes.append(entry)
        pooled = {"max_logit": {"inlier": box_numbers(self.max_logit_hist[0].sum(axis=0), MAX_LOGIT_BINS),
                                "anomaly": box_numbers(self.max_logit_hist[1].sum(axis=0), MAX_LOGIT_BINS)}}
        pooled["binned_auroc"] = {"max_logit": binned_auroc(self.max_logit_hist[0].sum(axis=0),
                                                            self.max_logit_hist[1].sum(axis=0), False)}
        if self.sml:
            pooled["sml"] = {"inlier": box_numbers(self.sml_hist[0].sum(axis=0), SML_BINS),
                             "anomaly": box_numbers(self.sml_hist[1].sum(axis=0), SML_BINS)}
            pooled["binned_auroc"]["sml"] = binned_auroc(self.sml_hist[0].sum(axis=0), self.sml_hist[1].sum(axis=0),
                                                         True)
        # pixels at or above their predicted class's training mean (classes with a known mean only)
        known = np.isfinite(self.train_mean)
        for kind, key in ((0, "inlier"), (1, "anomaly")):
            n = int(self.max_logit_hist[kind][known].sum())
            above = sum(count_at_or_above(self.max_logit_hist[kind, c], MAX_LOGIT_BINS, float(self.train_mean[c]))
                        for c in np.flatnonzero(known))
            pooled.setdefault("at_or_above_train_mean", {})[key] = above / n if n else math.nan
        return {"frames": self.frames,
                "pixels": {"inlier": total_in, "anomaly": int(ano.sum()), "ignored": self.ignored},
                "classes": classes, "pooled": pooled}

    def to_json(self) -> dict[str, Any]:
        """The diagnostics.json object (docs/diagnostics.md): numbers, box plots and the full histograms."""
        def clean(obj: Any) -> Any:
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items()}
            if isinstance(obj, list):
                return [clean(v) for v in obj]
            return _json_num(obj)

        out = {"format": FORMAT, "num_classes": self.num_classes, "class_names": list(self.class_names),
               "ignore_index": self.ignore_index,
               "bins": {"max_logit": MAX_LOGIT_BINS.to_dict(), "sml": SML_BINS.to_dict()},
               "stats": {"mean": self.train_mean.tolist(), "std": self.train_std.tolist(),
                         "count": self.train_count.tolist(), "source": self.stats_source}}
        out.update(self.compute())
        out["histograms"] = {"max_logit": {"inlier": self.max_logit_hist[0].tolist(),
                                           "anomaly": self.max_logit_hist[1].tolist()}}
        if self.sml:
            out["histograms"]["sml"] = {"inlier": self.sml_hist[0].tolist(), "anomaly": self.sml_hist[1].tolist()}
        return clean(out)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` atomically (``RUN_DIR/diagnostics.json``); returns the path."""
        from sml.utils.atomic import write_json

        write_json(Path(path), self.to_json())
        return Path(path)

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = "diagnostics") -> "ClassDiagnostics":
        """Rebuild the object (exact counts) from :meth:`to_json`'s output."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(f"{source} is not a diagnostics file (format {FORMAT!r} expected, got "
                             f"{d.get('format') if isinstance(d, dict) else type(d).__name__!r}); "
                             "`sml eval` writes RUN_DIR/diagnostics.json")
        bins = d.get("bins", {})
        for key, b in (("max_logit", MAX_LOGIT_BINS), ("sml", SML_BINS)):
            got = bins.get(key, {})
            if (got.get("lo"), got.get("hi"), got.get("count")) != (b.lo, b.hi, b.count):
                raise InputError(f"{source}: {key} bins {got} differ from this version's {b}; rewrite the file "
                                 "with this version of sml")
        try:
            hist = d["histograms"]
            sml = "sml" in hist
            out = cls(d["num_classes"], d["class_names"], sml=sml, ignore_index=d.get("ignore_index", 255))
            st = d.get("stats") or {}
            n = out.num_classes
            for attr, key in (("train_mean", "mean"), ("train_std", "std"), ("train_count", "count")):
                vals = st.get(key) or [None] * n
                setattr(out, attr, np.array([np.nan if x is None else float(x) for x in vals], dtype=np.float64))
            out.stats_source = st.get("source")
            empty = np.zeros((2, n, SML_BINS.size), dtype=np.int64)
            out.load_state_dict({
                "max_logit_hist": np.array([hist["max_logit"]["inlier"], hist["max_logit"]["anomaly"]],
                                           dtype=np.int64),
                "sml_hist": np.array([hist["sml"]["inlier"], hist["sml"]["anomaly"]], dtype=np.int64)
                if sml else empty,
                "frames": d.get("frames", 0), "ignored": (d.get("pixels") or {}).get("ignored", 0)})
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise InputError(f"{source}: {exc}") from None
            raise InputError(f"{source}: malformed diagnostics ({type(exc).__name__}: {exc}); rewrite it with "
                             "`sml eval`") from None
        return out

    @classmethod
    def load(cls, path: str | Path) -> "ClassDiagnostics":
        """Read a diagnostics.json."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read diagnostics file {path}: {exc.strerror or exc}; `sml eval` writes "
                             "RUN_DIR/diagnostics.json") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} is not valid JSON ({exc}); rewrite it with `sml eval`") from None
        return cls.from_json(d, source=str(path))

    def __repr__(self) -> str:
        return (f"ClassDiagnostics(num_classes={self.num_classes}, frames={self.frames}, "
                f"anomaly_pixels={int(self.anomaly_pixels.sum())}, inlier_pixels={int(self.inlier_pixels.sum())})")
