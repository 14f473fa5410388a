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


#: counts of one frame (see ClassDiagnostics._check_frame), its max-logit and SML-score histograms
#: (flat, rows: inlier classes, anomaly classes, then rows not kept; None where the frame is refused / no SML)
_FrameCounts = tuple[dict[str, int], "np.ndarray | None", "np.ndarray | None"]
#: histogram rows per class while counting: inlier, anomaly, void (counted, then dropped)
_ROW_KINDS = 3
#: pixels per block of the host path: each map read from memory once, the temporaries in the CPU's cache
_BLOCK = 1 << 17


def _one_frame(a: Any) -> Any:
    """One frame as 1 x H x W (model and scorer outputs) or H x W (labels) alike (arrays and tensors)."""
    return a[0] if a.ndim == 3 and a.shape[0] == 1 else a


def _np(x: Any, what: str) -> np.ndarray:
    from sml.metrics._inputs import to_numpy

    return _one_frame(to_numpy(x, what))


@dataclass(frozen=True)
class _Slots:
    """The histogram slot of each value, exactly :meth:`Bins.index` (``searchsorted(edges, side="right")``),
    in the precision of the map itself, on the host (NumPy) and the device (torch) alike.

    ``t = clip(x * scale + offset, 0, top)``; ``k = floor(t)`` is the slot of ``x`` or the one
    below it (``offset`` is lowered by a margin, more than twice the rounding error of the
    two operations can be, and far less than one slot), and ``x >= above[k]`` adds the one:
    ``above[k]`` is the smallest value of ``dtype`` at or above edge ``k`` (``+inf`` past
    the last), so the comparison, in ``dtype``, equals the float64 comparison with the
    edge. Where ``t - k < near`` (``1 - 2 * margin``), ``x`` is clear of the edges and ``k``
    is its slot without the comparison.
    """

    dtype: np.dtype
    scale: float
    offset: float
    near: float         # 1 - 2 * margin
    top: int            # the overflow slot, count + 1
    above: np.ndarray   # (count + 2,) of dtype


@functools.lru_cache(maxsize=16)
def _slots(bins: Bins, dtype: str) -> _Slots:
    """The slot plan of ``bins`` for values of ``dtype`` (float32 arithmetic for float32 maps and smaller)."""
    dt = np.dtype(dtype)
    scale = bins.count / (bins.hi - bins.lo)
    # bound of the rounding error of x * scale + offset wherever the result lies in [0, top + 1]
    # (scale and offset rounded to dt, one product, one sum): a few eps of the magnitudes involved
    margin = 16 * float(np.finfo(dt).eps) * (abs(bins.lo * scale) + bins.count + 2)
    if margin >= 0.25:
        return _slots(bins, "float64")
    edges = bins.edges
    above = edges.astype(dt)
    low = above < edges
    above[low] = np.nextafter(above[low], dt.type(np.inf))
    above = np.r_[above, np.inf].astype(dt)
    above.setflags(write=False)
    return _Slots(dt, float(dt.type(scale)), float(dt.type(1 - bins.lo * scale - margin)), 1 - 2 * margin,
                  bins.count + 1, above)


def _slot_dtype(dtype: Any, flat_size: int = 0) -> str:
    """The arithmetic of the slots: float64 for float64 maps, or (host path) where the flat index
    row * size + slot, below ``flat_size``, is not exact in float32; else float32."""
    return "float64" if dtype.itemsize > 4 or flat_size > 2 ** 24 else "float32"


@functools.lru_cache(maxsize=16)
def _tiled(bins: Bins, dtype: str, rows: int) -> np.ndarray:
    """``above`` of the slot plan once per histogram row (indexed by row * size + slot)."""
    t = np.tile(_slots(bins, dtype).above, rows)
    t.setflags(write=False)
    return t


def _host_index(x: np.ndarray, bins: Bins, base: np.ndarray, rows: int) -> np.ndarray:
    """``base + slot`` of each value of ``x`` (finite), as intp.

    ``base``: row * size per pixel, as floats (exact integers), so that the flat index
    is made in float arithmetic before the one conversion to integers. Only values
    within twice the margin below an edge (a few per thousand) are compared with it.
    """
    sl = _slots(bins, _slot_dtype(x.dtype, rows * bins.size))
    with np.errstate(over="ignore"):  # huge values become inf: the under/overflow slot, as they should
        t = np.multiply(x, sl.dtype.type(sl.scale), dtype=sl.dtype)
    t += sl.dtype.type(sl.offset)
    np.clip(t, 0, sl.top, out=t)
    k = np.floor(t)
    t -= k
    near = np.flatnonzero(t >= sl.dtype.type(sl.near))  # elsewhere floor(t) is the slot
    k += base
    idx = k.astype(np.intp)
    idx[near] += x[near] >= _tiled(bins, sl.dtype.name, rows).take(idx[near])
    return idx


def _host_pass(p: np.ndarray, y: np.ndarray, maps: list[tuple[np.ndarray, Bins]], num_classes: int,
               ignore_index: int) -> tuple[dict[str, int], list[np.ndarray]] | None:
    """One pass over a frame (flat maps) with NumPy: its label counts and, per map, ``3 * num_classes * size``
    counts (rows: the classes of inlier pixels, of anomaly pixels, then of void ones, dropped later).

    Block by block (:data:`_BLOCK` pixels): each map is read from memory once and every temporary
    stays in the CPU cache. None where a block holds anything to refuse (labels other than 0, 1
    and void, classes out of range, NaN or inf, even at void pixels): the caller looks closer.
    """
    n = {"inlier": 0, "anomaly": 0, "void": 0}
    hists = [np.zeros(_ROW_KINDS * num_classes * bins.size, np.intp) for _, bins in maps]
    for i in range(0, y.size, _BLOCK):
        b = slice(i, i + _BLOCK)
        if not _host_block(p[b], y[b], [(x[b], bins) for x, bins in maps], num_classes, ignore_index, n, hists):
            return None
    return n, hists


def _host_block(p: np.ndarray, y: np.ndarray, maps: list[tuple[np.ndarray, Bins]], num_classes: int,
                ignore_index: int, n: dict[str, int], hists: list[np.ndarray]) -> bool:
    """One block of :func:`_host_pass` into ``n`` and ``hists``; False (nothing added) where it holds anything
    to refuse."""
    anomaly, void = y == 1, y == ignore_index
    counts = (int(np.count_nonzero(y == 0)), int(np.count_nonzero(anomaly)), int(np.count_nonzero(void)))
    if sum(counts) != y.size or not _classes_ok(p, num_classes) or not all(np.isfinite(x).all() for x, _ in maps):
        return False
    for key, k in zip(n, counts):
        n[key] += k
    void = void if counts[2] and ignore_index not in (0, 1) else None  # 0 / 1: counted as labelled
    bases: dict[int, np.ndarray] = {}  # row * size of each pixel as floats (exact integers), per size
    for (x, bins), h in zip(maps, hists):
        if bins.size not in bases:
            bases[bins.size] = _host_base(p, anomaly if counts[1] else None, void, num_classes, bins.size)
        h += np.bincount(_host_index(x, bins, bases[bins.size], _ROW_KINDS * num_classes), minlength=h.size)
    return True


def _host_base(p: np.ndarray, anomaly: np.ndarray | None, void: np.ndarray | None, num_classes: int,
               size: int) -> np.ndarray:
    """``row * size`` per pixel as floats: row = class (inlier), ``num_classes`` + class (anomaly),
    ``2 * num_classes`` + class (void)."""
    base = np.multiply(p, size, dtype=_row_dtype(num_classes))
    if anomaly is not None:
        np.add(base, num_classes * size, out=base, where=anomaly)
    if void is not None:
        np.add(base, 2 * num_classes * size, out=base, where=void)
    return base


def _device_counts(x: Any, bins: Bins, base: Any, rows: int) -> Any:
    """``rows * size`` counts of the values ``x`` with torch ops where ``x`` lives, pixel ``i`` in row
    ``base[i] / size`` (``base``: int64), by the same slot plan as :func:`_host_index`."""
    import torch

    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    sl = _slots(bins, _slot_dtype(x.dtype))
    x = x.to(getattr(torch, sl.dtype.name))
    t = x * sl.scale
    t += sl.offset
    # NaN (void pixels, or a bad frame about to be refused) may convert to any integer: clamped into the table
    k = t.clamp_(0, sl.top).floor_().long().clamp_(0, sl.top)
    k += x >= torch.from_numpy(np.array(sl.above)).to(x.device)[k]
    k += base
    return torch.bincount(k, minlength=rows * bins.size)


def _kind(a: Any) -> tuple[str, str]:
    """(NumPy dtype kind, dtype name) of an array or a tensor: ``b``, ``i``, ``u``, ``f``, ``c``..."""
    dtype = a.dtype
    if isinstance(dtype, np.dtype):
        return dtype.kind, str(dtype)
    name = str(dtype).replace("torch.", "")
    if name == "bool":
        return "b", name
    if dtype.is_floating_point or dtype.is_complex:
        return ("f" if dtype.is_floating_point else "c"), name
    return ("u" if name.startswith("uint") else "i"), name


def _to_device(a: Any, device: Any) -> Any:
    """A checked map (a tensor anywhere, or a NumPy array) as a tensor on ``device`` that torch counts with."""
    import torch

    if not hasattr(a, "detach"):
        a = torch.from_numpy(np.require(a, requirements=["C", "W"]))  # a host -> device copy below
    a = a.detach().to(device)
    if a.dtype == torch.bool:
        return a.to(torch.uint8)
    if _kind(a)[0] == "u" and a.element_size() > 1:  # uint16..64: few torch ops; their values as int64
        return a.long()
    return a


def _classes_ok(p: np.ndarray, num_classes: int) -> bool:
    """Whether every class index lies in ``0 .. num_classes - 1`` (one pass: negative ones read as unsigned)."""
    u = p.view(f"u{p.dtype.itemsize}") if p.dtype.kind == "i" else p
    return p.size == 0 or int(u.max()) < num_classes


def _row_dtype(num_classes: int) -> str:
    """Histogram rows as floats: float32 while every row * size + slot is an exact float32 integer."""
    return "float32" if _ROW_KINDS * num_classes * max(MAX_LOGIT_BINS.size, SML_BINS.size) <= 2 ** 24 else "float64"


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
        Maps that are tensors on an accelerator (:func:`sml.utils.device.on_device`)
        are counted there with torch (the labels are copied to them); only the
        histograms and a few counts come to the host. Both paths count exactly
        alike and refuse the same inputs with the same errors.
        """
        from sml.utils.device import on_device

        device = next((m.device for m in (pred, max_logit, sml_score) if on_device(m)), None)

        def read(x: Any, what: str) -> Any:  # device path: tensors stay tensors; anything else through NumPy
            return _one_frame(x.detach()) if device is not None and hasattr(x, "detach") else _np(x, what)

        p, v, y = read(pred, "pred"), read(max_logit, "max_logit"), read(labels, "labels")
        s = self._sml_score(sml_score)
        s = None if s is None else read(s, "sml_score")
        self._check_maps({"pred": p, "max_logit": v, "labels": y, **({} if s is None else {"sml_score": s})})
        frames = 1 if len(p.shape) <= 2 else int(p.shape[0])
        if device is None:
            counts = self._host_frame(p, v, y.view(np.uint8) if y.dtype.kind == "b" else y, s)
        else:
            counts = self._device_frame(*(None if a is None else _to_device(a, device) for a in (p, v, y, s)))
        return self._add(counts, frames)

    # one frame: the checks and the final addition are shared; the histograms come from _host_frame (NumPy)
    # or _device_frame (torch, where the maps live)
    def _sml_score(self, sml_score: Any) -> Any:
        if self.sml and sml_score is None:
            raise InputError("these diagnostics track the SML score (sml=True): pass sml_score, or build "
                             "them with ClassDiagnostics(..., sml=False)")
        if not self.sml and sml_score is not None:
            raise InputError("sml_score given but these diagnostics were built with sml=False")
        return sml_score

    def _check_maps(self, maps: dict[str, Any]) -> None:
        shapes = {k: tuple(int(n) for n in a.shape) for k, a in maps.items()}
        if len(set(shapes.values())) != 1:
            raise InputError(f"pred, max_logit, labels (and sml_score) must share one shape, got {shapes}")
        kinds = {k: _kind(a) for k, a in maps.items()}
        if kinds["pred"][0] not in "iu":
            raise InputError(f"pred must hold integer class indices, got dtype {kinds['pred'][1]}")
        if kinds["max_logit"][0] != "f" or kinds.get("sml_score", "f")[0] != "f":
            raise InputError("max_logit and sml_score must be floating point maps")
        if kinds["labels"][0] not in "iub":
            raise InputError(f"labels must be integers (1 anomaly, 0 inlier, {self.ignore_index} void), "
                             f"got dtype {kinds['labels'][1]}")

    def _check_frame(self, n: dict[str, int]) -> None:
        """Refuse a frame from its counts (both paths): ``pixels``, ``inlier``, ``anomaly``, ``void``, and at
        labelled pixels ``bad_class`` (indices outside the classes), ``bad_max_logit`` / ``bad_sml``
        (NaN or infinite)."""
        other = n["pixels"] - n["inlier"] - n["anomaly"] - n["void"]
        if other:
            raise InputError(f"labels hold {other} pixels with values other than 0, 1 and {self.ignore_index}; "
                             "map the data set's raw labels first (sml.data loaders do)")
        if n["bad_class"]:
            raise InputError(f"pred holds class indices outside 0..{self.num_classes - 1}")
        if n["bad_max_logit"]:
            raise InputError("max_logit holds NaN or infinite values at labelled pixels; check the model output")
        if n["bad_sml"]:
            raise InputError("sml_score holds NaN or infinite values at labelled pixels")

    def _add(self, counts: _FrameCounts, frames: int) -> "ClassDiagnostics":
        """Check the frame's counts, then add its histograms (rows: inlier classes, anomaly classes, then
        rows not kept) to the state."""
        n, ml, sh = counts
        self._check_frame(n)
        kept = 2 * self.num_classes
        self.max_logit_hist += ml[:kept * MAX_LOGIT_BINS.size].reshape(self.max_logit_hist.shape)
        if sh is not None:
            self.sml_hist += sh[:kept * SML_BINS.size].reshape(self.sml_hist.shape)
        self.frames += frames
        self.ignored += n["void"]
        return self

    def _host_frame(self, p: np.ndarray, v: np.ndarray, y: np.ndarray, s: np.ndarray | None) -> _FrameCounts:
        """Counts and histograms of one frame with NumPy."""
        p, y = p.reshape(-1), y.reshape(-1)
        maps = [(v.reshape(-1), MAX_LOGIT_BINS)] + ([] if s is None else [(s.reshape(-1), SML_BINS)])
        done = _host_pass(p, y, maps, self.num_classes, self.ignore_index)
        if done is None:
            return self._host_closer(p, y, maps)
        n, hists = done
        n = {"pixels": y.size, **n, "bad_class": 0, "bad_max_logit": 0, "bad_sml": 0}
        return n, hists[0], (hists[1] if s is not None else None)

    def _host_closer(self, p: np.ndarray, y: np.ndarray, maps: list[tuple[np.ndarray, Bins]]) -> _FrameCounts:
        """A frame with something to refuse somewhere, checked where it counts: refused (for its labels, or
        for classes or values at labelled pixels), else counted from its labelled pixels alone."""
        anomaly, void = y == 1, y == self.ignore_index
        n = {"pixels": y.size, "inlier": int(np.count_nonzero(y == 0)), "anomaly": int(np.count_nonzero(anomaly)),
             "void": int(np.count_nonzero(void)), "bad_class": 0, "bad_max_logit": 0, "bad_sml": 0}
        if n["pixels"] != n["inlier"] + n["anomaly"] + n["void"]:
            return n, None, None
        keep = (y == 0) | anomaly
        p, y, maps = p[keep], y[keep], [(x[keep], bins) for x, bins in maps]
        n.update(bad_class=int(not _classes_ok(p, self.num_classes)),
                 **{f"bad_{k}": int(not np.isfinite(x).all()) for (x, _), k in zip(maps, ("max_logit", "sml"))})
        if n["bad_class"] or n["bad_max_logit"] or n["bad_sml"]:
            return n, None, None
        done = _host_pass(p, y, maps, self.num_classes, self.ignore_index)
        assert done is not None, "labelled pixels with valid classes and finite values"
        hists = done[1]
        return n, hists[0], (hists[1] if len(hists) > 1 else None)

    def _device_frame(self, p: Any, v: Any, y: Any, s: Any) -> _FrameCounts:
        """Counts and histograms of one frame with torch on the maps' device; one copy to the host."""
        import torch

        from sml.utils.device import to_host

        p, v, y = p.reshape(-1), v.reshape(-1), y.reshape(-1)
        c = self.num_classes
        inlier, anomaly = y == 0, y == 1
        labelled = inlier | anomaly
        lim = torch.iinfo(y.dtype)
        void = y == self.ignore_index if lim.min <= self.ignore_index <= lim.max else torch.zeros_like(labelled)
        classes_ok = (p >= 0) & (p < c)

        def bad(x: Any) -> Any:  # NaN / inf at labelled pixels
            return (labelled & ~torch.isfinite(x)).sum()

        n = [inlier.sum(), anomaly.sum(), void.sum(), (labelled & ~classes_ok).sum(), bad(v),
             bad(s.reshape(-1)) if s is not None else torch.zeros((), dtype=torch.int64, device=y.device)]
        # rows as on the host; void pixels, and those of a frame about to be refused, into row 2 * num_classes
        rows = torch.where(labelled & classes_ok, p + c * anomaly, 2 * c)
        hists = [_device_counts(x.reshape(-1), bins, rows * bins.size, _ROW_KINDS * c)[:2 * c * bins.size]
                 for x, bins in ((v, MAX_LOGIT_BINS), (s, SML_BINS)) if x is not None]
        host = to_host(torch.cat([torch.stack(n).to(torch.int64), *hists]))
        keys = ("inlier", "anomaly", "void", "bad_class", "bad_max_logit", "bad_sml")
        counts = {"pixels": y.numel(), **dict(zip(keys, (int(k) for k in host[:len(keys)])))}
        ml = host[len(keys):len(keys) + 2 * c * MAX_LOGIT_BINS.size]
        return counts, ml, (host[len(keys) + ml.size:] if s is not None else None)

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
