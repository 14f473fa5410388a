"""Exact, streaming pixel metrics for anomaly segmentation (spec section 5).

Pooled AUROC, AP and FPR@95 depend only on how many anomaly and inlier pixels
share each distinct score value. Scores are evaluated as float32 and mapped to
order-preserving int32 *keys* (ties stay ties, ``-0.0`` equals ``0.0``). The
state counts pixels per distinct key, for every evaluated pixel and for the
anomaly pixels, each as two sorted arrays: the keys seen once, and the other
keys with their counts. New keys go into a pending buffer first (one write per
pixel, no sort on the update path); when it holds ``compact_at`` keys (default
:data:`COMPACT_AT`, 2**26) it is sorted, its runs counted and merged into the
tables (searches and one linear merge). ``compute()`` counts what is pending,
then takes, for each distinct anomaly score, the evaluated pixels at and above
it from cumulative sums of the counts. No binning: the numbers equal
scikit-learn's ``roc_auc_score`` / ``average_precision_score`` to rounding,
whatever the compaction points.

Memory per metric, with D1 distinct scores seen once and D2 seen more often
(evaluated pixels; the same again for the anomaly pixels): ``4 * D1 + 8 * D2``
bytes (int32 key, uint32 count; 12 bytes per repeated key once a state holds
2**32 pixels), plus the pending buffer, ``4 * compact_at`` bytes (256 MiB),
plus at a compaction the method's new tables while the old ones are alive and
the run temporaries of ``compact_at`` keys (~20 bytes each). So the state is
never more than 4 bytes per evaluated pixel (+4 per anomaly pixel), the old
multiset's size, and far less when scores repeat: it is bounded by the number
of distinct float32 values, at most ``8 * D``. The worst case is honest: D can
be as large as the number of float32 values in the scores' range, and the
evaluated pixel count. Each binade [2^e, 2^(e+1)) holds 2**23 float32 values: a
max logit in [2, 32) can take 33.5M values, a softmax probability in [0.25, 1)
16.8M, a score in [0, 1) about 1.07e9 (most of them tiny), all finite float32
~4.3e9. Scores spread over many binades near zero (entropy, standardized max
logits) keep finding new values; benchmarks/bench_memory.py measures the
growth on Lost and Found sized frames. Time: one pass per frame, one sort per
``compact_at`` keys and a merge linear in the tables. Below ``compact_at`` keys
``compute()`` takes the table straight from the sorted keys (as fast as the
plain multiset was); with compactions (200M pixels: three) update + compute
take ~2.4x the multiset's time (``bench_metrics.py --against``), the price of
the bound.

States are plain NumPy arrays (tables and pending keys): picklable, mergeable
in any order with identical results (counts do not depend on order), and
gathered over ``torch.distributed`` by :meth:`AnomalyMetrics.sync`. Torch maps
on an accelerator (:func:`sml.utils.device.on_device`) become keys on that
device, sorted and counted there: only the frame's compact table crosses to the
host (keys seen once as plain keys into the pending buffer, the other distinct
keys with their counts as pending runs, counted into the tables at the next
compaction). The multiset, so every number, is the host path's.

The parts: :mod:`sml.metrics.keys` (scores <-> keys), :mod:`sml.metrics.counts`
(the sorted key multisets), :mod:`sml.metrics.table` (counts per anomaly score),
:mod:`sml.metrics.functional` (the metrics and curves of a table); this module
holds the stateful class.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sml.errors import InputError
from sml.metrics import functional
from sml.metrics._inputs import IGNORE_INDEX, count_field, scores_and_labels, to_numpy
from sml.metrics.base import PixelMetric
from sml.metrics.counts import Counts, consolidate, count_dtype, disjoint_rule, merge_counts, runs, table_fields
from sml.metrics.functional import TPR_TARGET
from sml.metrics.keys import (EMPTY_KEYS, count_nonfinite, device_key_tensor, device_nonfinite, device_runs,
                              host_keys, keys_to_scores, scores_to_keys)
from sml.metrics.labels import FrameLabels
from sml.metrics.table import Table, build_table, table_of_sorted
from sml.utils import schema
from sml.utils.device import on_device

__all__ = ["AnomalyMetrics", "FrameLabels", "anomaly_metrics", "scores_to_keys", "keys_to_scores", "TPR_TARGET"]

#: pending keys (per metric) after which they are counted into the tables: 2**26 keys, 256 MiB
COMPACT_AT = 1 << 26


def _check_tensor_dtype(x: Any) -> None:
    if x.is_complex() or str(x.dtype) == "torch.bool":
        raise InputError(f"anomaly scores must be real numbers, got dtype {x.dtype}")


class AnomalyMetrics(PixelMetric):
    """Pooled pixel AUROC, AP and FPR@95 of anomaly maps, exact and one image at a time.

    ``update(anomaly, labels)`` takes float maps (NumPy or torch, any float dtype,
    evaluated as float32) of shape ``H x W`` or ``B x H x W`` and labels of the
    same shape: 1 anomaly, 0 inlier, ``ignore_index`` excluded, anything else an
    error. ``compute()`` returns every pixel of every update pooled (the
    benchmark number). ``compact_at``: pending keys counted into the tables at
    once (default :data:`COMPACT_AT`; smaller bounds memory tighter, results never change).
    ``state_dict()`` / ``load_state_dict()`` / ``merge`` / ``sync`` follow
    :class:`sml.utils.state.Stateful`; the interface is :class:`~sml.metrics.PixelMetric`'s.
    """

    def __init__(self, ignore_index: int = 255, compact_at: int | None = None) -> None:
        v = ARGUMENTS.read({"ignore_index": ignore_index, "compact_at": compact_at})
        self._setup(v["ignore_index"], v["compact_at"])

    def _setup(self, ignore_index: int, compact_at: int | None) -> None:
        """Checked settings (``compact_at`` None: :data:`COMPACT_AT`); nothing added yet."""
        self.ignore_index, self.compact_at = ignore_index, COMPACT_AT if compact_at is None else compact_at
        self.reset()

    def reset(self) -> None:
        """Forget every pixel added so far."""
        # Pending: int32 keys of evaluated pixels not yet counted, in one growable buffer used up to
        # _n (keys are written straight into it), and the anomaly pixels' keys as chunks.
        self._buf = np.empty(0, dtype=np.int32)
        self._n = 0
        self._pos: list[np.ndarray] = []
        self._n_pos_pending = 0
        # Pending runs of device frames: (distinct sorted keys, int64 counts >= 2), of every evaluated
        # pixel and of the anomaly pixels; _n_runs entries in all (they count towards compact_at).
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []
        self._pos_runs: list[tuple[np.ndarray, np.ndarray]] = []
        self._n_runs = 0
        # Counted: distinct keys (sorted) and their counts, of every evaluated pixel and of the
        # anomaly pixels. Arrays here are replaced, never modified in place (state dicts share them).
        self._ev, self._an = Counts(), Counts()
        self.n_pos = 0
        self.n_neg = 0
        self.n_ignored = 0
        self.images = 0
        self._synced = False
        self._table: Table | None = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Settings, counters, the counted tables and the keys not yet counted.

        ``keys`` / ``pos_keys``: pending keys of evaluated / anomaly pixels (multisets);
        ``table_single`` (keys seen once), ``table_keys`` / ``table_counts`` (the others
        and their counts), sorted, and the same with ``pos_`` for the anomaly pixels.
        A pixel is in exactly one of these forms (pending runs of device frames are counted into the tables first).
        """
        self._fold_runs()
        pos = self._pos[0] if len(self._pos) == 1 else (np.concatenate(self._pos) if self._pos else EMPTY_KEYS)
        return {"ignore_index": self.ignore_index, "compact_at": self.compact_at,
                "keys": self._buf[:self._n], "pos_keys": pos,
                "table_single": self._ev.single, "table_keys": self._ev.keys, "table_counts": self._ev.cnt,
                "pos_table_single": self._an.single, "pos_table_keys": self._an.keys,
                "pos_table_counts": self._an.cnt,
                "n_pos": int(self.n_pos), "n_neg": int(self.n_neg), "n_ignored": int(self.n_ignored),
                "images": int(self.images)}

    def load_state_dict(self, state: dict[str, Any]) -> "AnomalyMetrics":
        """Replace the state with ``state`` (from :meth:`state_dict`; arrays are copied when not ours to sort).

        States without the counted tables (written before they existed) load as all pending.
        An inconsistent state is refused with an :class:`InputError` naming what is wrong
        (nothing is loaded): arrays of the wrong dtype or shape, tables not strictly
        increasing, keys of NaN or infinite scores, counts that are not integers >= 0 or
        do not add up to ``n_pos`` / ``n_neg``, pixels without an image, and anomaly
        pixels at a score with fewer evaluated pixels. Checking the last sorts the pending
        keys in place (the sort ``compute()`` needs anyway).
        """
        v = STATE.read(state)
        keys, pos = (np.empty(0, np.int32) if v[k] is None else v[k] for k in ("keys", "pos_keys"))
        ev, an = Counts.from_values(v, ""), Counts.from_values(v, "pos_")
        dtype = count_dtype(v["n_pos"] + v["n_neg"])
        for c in (ev, an):
            c.cnt = c.cnt.astype(dtype, copy=False)
        self._setup(v["ignore_index"], v["compact_at"])
        self._ev, self._an = ev, an
        self._buf, self._n = keys, keys.size
        self._pos = [pos] if pos.size else []
        self._n_pos_pending = pos.size
        self.n_pos, self.n_neg, self.n_ignored, self.images = (v[k] for k in ("n_pos", "n_neg", "n_ignored", "images"))
        return self

    # ------------------------------------------------------------------ adding data
    def update(self, anomaly: Any, labels: Any, *, frame_ap: bool = False) -> float | None:
        """Add an anomaly map ``H x W`` (or batch ``B x H x W``) and its labels (same shape).

        ``labels`` may be a :class:`FrameLabels` (one image's labels prepared once
        for several maps). A torch tensor on an accelerator is turned into keys
        there; only the evaluated pixels' int32 keys come to the host. NaN or
        infinite scores at evaluated (non-ignored) pixels are an error. With
        ``frame_ap=True`` (one image) it returns that image's own AP, exactly
        scikit-learn's ``average_precision_score`` over its evaluated pixels (NaN
        without anomaly or inlier pixels); it costs an in-place sort of the
        image's keys. Otherwise returns None.
        """
        if isinstance(labels, FrameLabels):
            return self._add_frame(anomaly, labels, frame_ap)
        if on_device(anomaly):
            # the checks and messages of scores_and_labels, on a stand-in that allocates nothing
            s, y = scores_and_labels(np.broadcast_to(np.float32(0), tuple(anomaly.shape)), labels)
            _check_tensor_dtype(anomaly)
            s = anomaly
        else:
            s, y = scores_and_labels(anomaly, labels)
        if s.ndim != 3:
            return self._add_frame(s, FrameLabels(y, self.ignore_index), frame_ap)
        if frame_ap:
            raise InputError("frame_ap=True takes one image (H x W), not a batch")
        for b in range(s.shape[0]):
            self._add_frame(s[b], FrameLabels(y[b], self.ignore_index), False)
        return None

    def _add_frame(self, anomaly: Any, fl: FrameLabels, ap: bool) -> float | None:
        """One image's keys written straight into the pending buffer (and its own AP from one sort of them)."""
        if on_device(anomaly):
            return self._add_device_frame(anomaly, fl, ap)
        s = to_numpy(anomaly, "anomaly")
        fl.check_map(tuple(s.shape), self.ignore_index)
        if s.dtype.kind not in "fiub":
            raise InputError(f"anomaly scores must be real numbers, got dtype {s.dtype}")
        n = fl.n_pos + fl.n_neg
        if self._pending_total() and self._pending_total() + n > self.compact_at:
            self._compact_pending()
        keys = self._reserve(n)
        host_keys(s, fl.keep, keys)
        self._refuse_nonfinite(count_nonfinite(keys))
        pos = self._count_frame(fl, keys)
        if not ap:
            return None
        if fl.n_pos == 0 or fl.n_neg == 0:
            return math.nan
        keys.sort()
        pos.sort()  # a copy of our own (boolean indexing), shared with nobody yet
        return functional.average_precision(table_of_sorted(keys, pos, fl.n_pos, fl.n_neg))

    def _refuse_nonfinite(self, bad: int) -> None:
        if bad:
            raise InputError(f"anomaly map has {bad} NaN or infinite score(s) at evaluated pixels; "
                             f"fix the scorer or mark those pixels with the ignore value {self.ignore_index}")

    def _pending_total(self) -> int:
        """Pending entries: keys in the buffer and runs of device frames."""
        return self._n + self._n_runs

    def _add_device_frame(self, s: Any, fl: FrameLabels, ap: bool) -> float | None:
        """One image of a map on its device: keys made, sorted and counted there; its compact table is added."""
        fl.check_map(tuple(s.shape), self.ignore_index)
        _check_tensor_dtype(s)
        k = device_key_tensor(s, fl.keep_on(s.device))
        self._refuse_nonfinite(device_nonfinite(k))
        pk = k[fl.positive_on(s.device)] if fl.positive is not None else k[:0]
        ev, an = Counts(*device_runs(k)), Counts(*device_runs(pk))
        del k, pk
        if self._pending_total() and self._pending_total() + ev.distinct > self.compact_at:
            self._compact_pending()
        self._reserve(ev.single.size)[:] = ev.single
        self._n += ev.single.size
        if an.single.size:
            self._pos.append(an.single)
            self._n_pos_pending += an.single.size
        if ev.keys.size:
            self._runs.append((ev.keys, ev.cnt))
            self._n_runs += ev.keys.size
        if an.keys.size:
            self._pos_runs.append((an.keys, an.cnt))
            self._n_pos_pending += an.keys.size
        self._count_labels(fl)
        if self._n_pos_pending > self.compact_at:
            self._compact_pos()
        if not ap:
            return None
        if fl.n_pos == 0 or fl.n_neg == 0:
            return math.nan
        return functional.average_precision(build_table(ev, *an.unified(), fl.n_pos, fl.n_neg))

    def _count_labels(self, fl: FrameLabels) -> None:
        """The frame's pixel and image counters (its keys are already in the state)."""
        self.n_pos += fl.n_pos
        self.n_neg += fl.n_neg
        self.n_ignored += fl.n_ignored
        self.images += 1
        self._table = None

    def _count_frame(self, fl: FrameLabels, keys: np.ndarray) -> np.ndarray:
        """Take the frame's ``keys`` (just written at the end of the buffer) into the state; returns its anomaly keys."""
        pos = keys[fl.positive] if fl.positive is not None else EMPTY_KEYS
        if pos.size:
            self._pos.append(pos)
            self._n_pos_pending += pos.size
        self._n += keys.size
        self._count_labels(fl)
        if self._n_pos_pending > self.compact_at:
            self._compact_pos()
        return pos

    def _reserve(self, k: int) -> np.ndarray:
        """A writable slice of ``k`` free key slots at the end of the buffer (grown if needed)."""
        need = self._n + k
        if need > self._buf.size:
            # growth slack, but no more than compaction lets the buffer fill
            cap = max(need, min(max(self._buf.size + self._buf.size // 8, 1 << 16), self.compact_at))
            try:
                self._buf.resize(cap)  # realloc: in place when the block can grow (mapped blocks by remapping)
            except ValueError:  # someone holds a view (or we do not own the data): copy instead
                buf = np.empty(cap, dtype=np.int32)
                buf[:self._n] = self._buf[:self._n]
                self._buf = buf
        return self._buf[self._n:need]

    def _compact_pending(self, release: bool = False) -> None:
        """Count the pending keys into the tables (sort, count runs, merge); ``release`` frees the buffer."""
        dtype = count_dtype(self.n_pos + self.n_neg)
        if self._n:
            pend = self._buf[:self._n]
            pend.sort()  # in place: NumPy's SIMD sort, no second copy
            self._ev.add_sorted(pend, dtype)
            del pend
            self._n = 0
        if release or self._buf.size > self.compact_at:  # a buffer loaded or merged beyond the bound
            self._buf = np.empty(0, dtype=np.int32)
        self._compact_pos()

    def _compact_pos(self) -> None:
        """Count the pending anomaly keys, and every pending run, into the tables."""
        if self._pos:
            self._an.add_sorted(consolidate(self._pos), count_dtype(self.n_pos + self.n_neg))
        self._fold_runs()

    def _fold_runs(self) -> None:
        """Count the pending runs of device frames into the tables (pending keys stay pending); after it
        only pending keys are left (``_n_pos_pending`` counts the anomaly ones)."""
        dtype = count_dtype(self.n_pos + self.n_neg)
        if self._runs:
            self._ev.add_runs(*_summed(self._runs), dtype)
            self._runs, self._n_runs = [], 0
        if self._pos_runs:
            self._an.add_runs(*_summed(self._pos_runs), dtype)
            self._pos_runs = []
        self._n_pos_pending = sum(c.size for c in self._pos)

    def merge(self, other: "AnomalyMetrics") -> "AnomalyMetrics":
        """Add ``other``'s pixels to this metric; returns ``self``."""
        self._check_mergeable(other)
        if self._pending_total() and self._pending_total() + other._pending_total() > self.compact_at:
            self._compact_pending()
        other_keys = other._buf[:other._n]
        self._reserve(other._n)[:] = other_keys
        del other_keys
        self._n += other._n
        self._pos.extend(other._pos)   # pending chunks are only sorted in place (a multiset), so sharing is safe
        self._n_pos_pending += other._n_pos_pending
        self._runs.extend(other._runs)  # pending runs are only read
        self._pos_runs.extend(other._pos_runs)
        self._n_runs += other._n_runs
        self.n_pos += other.n_pos
        self.n_neg += other.n_neg
        self.n_ignored += other.n_ignored
        self.images += other.images
        dtype = count_dtype(self.n_pos + self.n_neg)
        self._ev.merge(other._ev, dtype)
        self._an.merge(other._an, dtype)
        if self._pending_total() > self.compact_at or self._n_pos_pending > self.compact_at:
            self._compact_pending()
        self._table = None
        return self

    def totals(self) -> dict[str, int]:
        """``anomaly``, ``inlier``, ``ignored`` pixels and ``images`` counted so far."""
        return {"anomaly": int(self.n_pos), "inlier": int(self.n_neg), "ignored": int(self.n_ignored),
                "images": int(self.images)}

    @property
    def nbytes(self) -> int:
        """Bytes held by the metric state (pending key buffer and chunks, counted tables)."""
        runs = sum(k.nbytes + c.nbytes for k, c in self._runs + self._pos_runs)
        return self._buf.nbytes + sum(c.nbytes for c in self._pos) + runs + self._ev.nbytes + self._an.nbytes

    @property
    def distinct(self) -> int:
        """Distinct evaluated scores counted so far (the size of the table; pending keys not included)."""
        return self._ev.distinct

    # ------------------------------------------------------------------ results
    def _get_table(self) -> Table:
        if self._table is None:
            if self._ev.distinct == 0 and self._an.distinct == 0 and not self._runs and not self._pos_runs:
                # nothing counted yet (under compact_at keys in all): the sorted keys give the table
                # directly, without building counted tables
                pend = self._buf[:self._n]
                pend.sort()
                self._pos = [consolidate(self._pos)] if self._pos else []
                self._n_pos_pending = self._pos[0].size if self._pos else 0
                self._table = table_of_sorted(pend, self._pos[0] if self._pos else EMPTY_KEYS, self.n_pos, self.n_neg)
            else:
                self._compact_pending(release=True)
                self._table = build_table(self._ev, *self._an.unified(), self.n_pos, self.n_neg)
        return self._table

    def compute(self) -> dict[str, Any]:
        """The pooled metrics, as a dict.

        Keys: ``auroc``, ``ap``, ``fpr95`` (interpolated, the reference's
        ``fpr_at_95_tpr``), ``fpr95_threshold`` (FPR at the highest threshold with
        TPR >= 0.95, SegmentMeIfYouCan), ``threshold_at_95tpr`` (that score),
        ``fpr95_convention`` (what ``fpr95`` means), ``best_f1`` and
        ``best_f1_threshold`` (pooled pixel F1 maximiser), ``pixels``
        (``{"anomaly", "inlier"}``), ``ignored``, ``images``, ``reason`` (None,
        or why values are NaN).
        """
        out = functional.pooled_metrics(self._get_table())
        out["ignored"] = int(self.n_ignored)
        out["images"] = int(self.images)
        return out

    def best_f1_threshold(self) -> float:
        """Score threshold ``t`` maximising pooled pixel F1 of ``score >= t`` (NaN without anomaly pixels)."""
        return functional.best_f1_point(self._get_table())[1]

    @property
    def best_f1(self) -> float:
        """The maximal pooled pixel F1 (NaN without anomaly pixels)."""
        return functional.best_f1_point(self._get_table())[0]

    def curves(self, max_points: int = 2000) -> dict[str, dict[str, np.ndarray]]:
        """ROC and precision-recall curves, reduced to at most ``max_points`` points each for plotting.

        ``roc``: ``fpr``, ``tpr``, ``threshold`` from (0, 0) (threshold +inf, as
        scikit-learn) to (1, 1); ``pr``: ``precision``, ``recall``, ``threshold``,
        one point per distinct anomaly score in increasing threshold order (as
        scikit-learn, without its artificial (recall 0, precision 1) end). The
        unreduced curves are exact; the reduction keeps both ends and points
        spread evenly along the curve. Raises :class:`InputError` if a class is missing.
        """
        if max_points < 3:  # before the table is built
            raise InputError(f"max_points must be at least 3, got {max_points}")
        return functional.curves(self._get_table(), max_points)

    def __repr__(self) -> str:
        return (f"AnomalyMetrics(ignore_index={self.ignore_index}, images={self.images}, "
                f"anomaly={self.n_pos}, inlier={self.n_neg})")


def _summed(runs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One counted table (distinct sorted keys, int64 counts) of several, with the counts of shared keys added."""
    if len(runs) == 1:
        return runs[0]
    keys = np.concatenate([k for k, _ in runs])
    cnt = np.concatenate([c for _, c in runs])
    order = np.argsort(keys, kind="stable")
    keys, cnt = keys[order], cnt[order]
    del order
    first = np.empty(keys.size, bool)
    first[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    return keys[starts], np.add.reduceat(cnt, starts)


def _pending(keys: np.ndarray, ctx: schema.Context) -> np.ndarray:
    """Check hook: pending keys of finite scores, as sorted writable memory of our own (the buffer is grown and
    sorted in place; a multiset: its order means nothing)."""
    if count_nonfinite(keys):
        raise schema.Invalid("holds keys of NaN or infinite scores")
    keys = keys if keys.flags.owndata and keys.flags.writeable else keys.copy()
    keys.sort()
    return keys


def _pending_field(name: str) -> schema.Field:
    return schema.Field(name, type="array", dtype="int32", ndim=1, check=_pending,
                        says={"invalid": "'{key}' must be a 1-D int32 array, got {value}",
                              "check": "'{key}' {text}"})


def _totals(v: dict[str, Any], ctx: schema.Context) -> list[schema.Problem]:
    """Rule: ``n_pos`` counts the anomaly keys, ``n_pos + n_neg`` every evaluated key; pixels need an image."""
    size = (lambda k: 0 if v[k] is None else v[k].size)
    an, ev = Counts.from_values(v, "pos_"), Counts.from_values(v, "")
    if v["n_pos"] != size("pos_keys") + an.total or v["n_pos"] + v["n_neg"] != size("keys") + ev.total:
        return [ctx.problem("n_pos", "pixel counts do not match its key arrays (n_pos must count the anomaly keys, "
                                     "n_pos + n_neg every evaluated key)")]
    if v["images"] == 0 and v["n_pos"] + v["n_neg"] + v["n_ignored"]:
        return [ctx.problem("images", "pixels counted without an image ('images' is 0)")]
    return []


def _anomaly_within_evaluated(v: dict[str, Any], ctx: schema.Context) -> list[schema.Problem]:
    """Rule: no score with more anomaly pixels than evaluated pixels (each anomaly pixel is one of them)."""
    keys, pos = (np.empty(0, np.int32) if v[k] is None else v[k] for k in ("keys", "pos_keys"))  # sorted
    ev, an = Counts.from_values(v, ""), Counts.from_values(v, "pos_")
    ak, ac = an.unified()
    if pos.size:
        ak, ac = merge_counts(ak, ac, *runs(pos), np.int64)
    if ak.size == 0:
        return []
    have = ev.count_of(ak)
    if keys.size:
        have += np.searchsorted(keys, ak, "right") - np.searchsorted(keys, ak, "left")
    if not have.all():
        return [ctx.problem("pos_keys", "an anomaly-pixel key is missing from the evaluated pixels' keys (the "
                                        "state was not written by AnomalyMetrics)")]
    if np.any(ac > have):
        return [ctx.problem("pos_keys", "more anomaly pixels than evaluated pixels at some score (the anomaly keys "
                                        "must be a part of the evaluated keys)")]
    return []


_COMPACT_AT = schema.Field("compact_at", type="int", null=True, ge=1,
                           says={"invalid": "compact_at must be a positive number of keys, got {value}"})
#: :class:`AnomalyMetrics`' arguments
ARGUMENTS = schema.Schema((IGNORE_INDEX, _COMPACT_AT), voice=schema.Voice(prefix=""))
#: :meth:`AnomalyMetrics.state_dict` (resume chunks, ``sync``): settings, pending keys, counted tables, counters
STATE = schema.Schema((
    IGNORE_INDEX, _COMPACT_AT, _pending_field("keys"), _pending_field("pos_keys"),
    *table_fields(""), *table_fields("pos_"),
    *(count_field(k) for k in ("n_pos", "n_neg", "n_ignored", "images")),
), rules=(disjoint_rule(""), disjoint_rule("pos_"), _totals, _anomaly_within_evaluated),
    voice=schema.Voice(prefix="metric state: "))


def anomaly_metrics(anomaly: Any, labels: Any, ignore_index: int = 255) -> dict[str, Any]:
    """One-shot :meth:`AnomalyMetrics.compute` of one map or batch and its labels."""
    m = AnomalyMetrics(ignore_index=ignore_index)
    m.update(anomaly, labels)
    return m.compute()
