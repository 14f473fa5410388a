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
on an accelerator become keys on that device; only the evaluated pixels' int32
keys are copied to the host.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sml.errors import InputError
from sml.metrics._inputs import label_counts, scores_and_labels, to_numpy
from sml.utils.state import Stateful

__all__ = ["AnomalyMetrics", "FrameLabels", "anomaly_metrics", "scores_to_keys", "keys_to_scores", "TPR_TARGET"]

TPR_TARGET = 0.95
_EMPTY = np.empty(0, dtype=np.int32)
# keys of -inf and +inf: a key strictly between them is a finite score (NaNs lie outside)
_KEY_NEG_INF = -2139095041
_KEY_POS_INF = 0x7F800000
#: pending keys (per metric) after which they are counted into the tables: 2**26 keys, 256 MiB
COMPACT_AT = 1 << 26
# tests: send CPU tensors through the accelerator path (torch ops, masked copy to the host)
_DEVICE_PATH_ON_CPU = False


class FrameLabels:
    """One image's labels, validated and counted once, for scoring several anomaly maps against them.

    ``AnomalyMetrics.update(anomaly, frame_labels)`` then skips the label
    work (value check, counts, masks) that every method would otherwise repeat.
    """

    def __init__(self, labels: Any, ignore_index: int = 255) -> None:
        y = to_numpy(labels, "labels")
        if y.dtype.kind not in "iub":
            # scores_and_labels' checks and messages (float labels holding integers are accepted)
            _, y = scores_and_labels(np.zeros(y.shape, np.float32), y)
        if y.dtype.kind == "b":
            y = y.view(np.uint8)
        self.ignore_index = int(ignore_index)
        self.shape = tuple(y.shape)
        self.n_pos, self.n_neg, self.n_ignored = label_counts(y, self.ignore_index)
        flat = y.reshape(-1)
        #: evaluated pixels (None: all of them)
        self.keep = flat != self.ignore_index if self.n_ignored else None
        kept = flat[self.keep] if self.keep is not None else flat
        #: anomaly pixels among the evaluated ones (None: no anomaly pixel)
        self.positive = kept == 1 if self.n_pos else None
        self._labels = labels if hasattr(labels, "detach") else None
        self._keep_on: dict[str, Any] = {}

    def keep_on(self, device: Any) -> Any:
        """``keep`` as a torch bool tensor on ``device`` (None: every pixel), made once per device.

        From the labels themselves when they already live there, else copied from the host.
        """
        if self.keep is None:
            return None
        key = str(device)
        if key not in self._keep_on:
            import torch

            lab = self._labels
            if lab is not None and lab.device == torch.device(device):
                self._keep_on[key] = lab.detach().reshape(-1) != self.ignore_index
            else:
                self._keep_on[key] = torch.from_numpy(self.keep).to(device)
        return self._keep_on[key]


def _on_device(x: Any) -> bool:
    """Whether ``x`` is a torch tensor off the CPU (its keys are then made where it lives)."""
    dev = getattr(x, "device", None)
    return dev is not None and hasattr(x, "detach") and (getattr(dev, "type", "cpu") != "cpu" or _DEVICE_PATH_ON_CPU)


def _check_tensor_dtype(x: Any) -> None:
    if x.is_complex() or str(x.dtype) == "torch.bool":
        raise InputError(f"anomaly scores must be real numbers, got dtype {x.dtype}")


def _device_keys(scores: Any, fl: FrameLabels, out: np.ndarray) -> None:
    """Keys of the evaluated pixels of a torch map, made on its device and copied into ``out`` (host int32).

    The same float32 rounding, ``-0.0`` -> ``+0.0`` and bit flip as the NumPy
    path, in torch ops; only the kept keys cross to the host.
    """
    import torch

    x = scores.detach().reshape(-1)
    x = x.float() + 0.0 if x.dtype != torch.float32 else x + 0.0  # a new tensor of our own
    k = x.view(torch.int32)
    keep = fl.keep_on(x.device)
    if keep is not None:
        k = k[keep]
    k ^= (k >> 31) & 0x7FFFFFFF
    torch.from_numpy(out).copy_(k)


def _flip(k: np.ndarray) -> None:
    """In place: float32 bit patterns (as int32) <-> order-preserving keys (an involution)."""
    m = k >> 31
    m &= 0x7FFFFFFF
    k ^= m


def scores_to_keys(scores: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Order-preserving int32 keys of float32 ``scores``: ``a < b`` iff ``key(a) < key(b)``.

    Positive floats keep their bit pattern; negative ones get their magnitude bits
    flipped so that larger magnitudes sort lower. ``-0.0`` is first turned into
    ``+0.0`` (they are equal scores, so they must tie).
    """
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    out = np.add(s, np.float32(0.0), out=s if inplace else None)
    k = out.view(np.int32)
    _flip(k)
    return k


def keys_to_scores(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`scores_to_keys` (the bit flip is an involution)."""
    k = np.array(keys, dtype=np.int32, copy=True).reshape(-1)
    _flip(k)
    return k.view(np.float32)


def _consolidate(chunks: list[np.ndarray]) -> np.ndarray:
    """One sorted array from ``chunks`` (emptied as it goes, so peak memory is the total plus one chunk).

    Sorting in place is safe even for chunks shared with a merged metric: a
    pending chunk is a multiset, so reordering it changes nothing anyone can observe.
    """
    if len(chunks) == 1:
        out = chunks.pop()
    else:
        out = np.empty(sum(c.size for c in chunks), dtype=np.int32)
        pos = 0
        for i, c in enumerate(chunks):
            out[pos:pos + c.size] = c
            pos += c.size
            chunks[i] = _EMPTY  # drop our reference now, not after the loop
        chunks.clear()
    out.sort()  # in place: no second copy of the largest array we hold
    return out


def _count_dtype(total: int) -> type:
    """Counts of a table whose counts sum to ``total``: uint32 while no count can overflow it."""
    return np.uint32 if total < 2 ** 32 else np.int64


def _runs(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys of the sorted ``a`` and how often each occurs (int64)."""
    n = a.size
    if n == 0:
        return _EMPTY, np.empty(0, np.int64)
    first = np.empty(n, bool)
    first[0] = True
    np.not_equal(a[1:], a[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    del first
    return a[starts], np.diff(starts, append=n)


def _split_sorted(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of the sorted multiset ``a``: the keys seen once, and the other distinct keys with their counts (int64).

    Two boolean passes find the keys seen once; only the rest pays for positions.
    """
    n = a.size
    if n == 0:
        return _EMPTY, _EMPTY, np.empty(0, np.int64)
    edge = np.empty(n + 1, bool)
    edge[0] = edge[n] = True
    np.not_equal(a[1:], a[:-1], out=edge[1:n])
    one = edge[:-1] & edge[1:]
    del edge
    single = a[one]
    if single.size == n:
        return single, _EMPTY, np.empty(0, np.int64)
    np.logical_not(one, out=one)
    k, c = _runs(a[one])
    return single, k, c


def _insert_sorted(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The sorted union of two sorted, disjoint int32 arrays."""
    if v.size == 0:
        return a
    at = _search_sorted(a, v, "left")
    at += np.arange(v.size)
    slot = np.ones(a.size + v.size, bool)
    slot[at] = False
    out = np.empty(slot.size, np.int32)
    out[slot] = a
    out[at] = v
    return out


def _merge_counts(k1: np.ndarray, c1: np.ndarray, k2: np.ndarray, c2: np.ndarray,
                  dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """The union of two counted tables (distinct sorted keys, counts) with the counts of shared keys added.

    One search of ``k2`` in ``k1``, then both written into new arrays at their
    final places (the inputs are not modified: they may be shared with a state dict).
    """
    if k2.size == 0:
        return k1, c1.astype(dtype, copy=False)
    if k1.size == 0:
        return k2, c2.astype(dtype, copy=False)
    ins = _search_sorted(k1, k2, "left")
    hit = ins < k1.size
    hit[hit] = k1[ins[hit]] == k2[hit]
    new = ~hit
    n_new = int(np.count_nonzero(new))
    # old entry p moves up by the number of new keys inserted before it
    before = np.cumsum(new, dtype=np.int64)
    before -= new
    at_new = ins[new] + before[new]
    old_slot = np.ones(k1.size + n_new, bool)
    old_slot[at_new] = False
    keys = np.empty(old_slot.size, np.int32)
    cnt = np.empty(old_slot.size, dtype)
    keys[old_slot] = k1
    cnt[old_slot] = c1
    keys[at_new] = k2[new]
    cnt[at_new] = c2[new]
    del old_slot, at_new
    at_hit = ins[hit] + before[hit]
    cnt[at_hit] += c2[hit].astype(dtype, copy=False)
    return keys, cnt


@dataclass
class _Table:
    """Counts at each distinct anomaly score, highest first (everything the metrics need)."""

    n_pos: int
    n_neg: int
    keys: np.ndarray       # distinct anomaly-pixel keys, descending
    count: np.ndarray      # anomaly pixels with exactly that score
    tp: np.ndarray         # anomaly pixels with score >= key
    fp: np.ndarray         # inlier pixels with score >= key
    fp_above: np.ndarray   # inlier pixels with score > key
    next_above: np.ndarray  # key of the smallest evaluated score above key (only meaningful where fp_above grows)
    min_key: int           # smallest evaluated key (end of the ROC curve)

    @property
    def reason(self) -> str | None:
        if self.n_pos == 0 and self.n_neg == 0:
            return "no evaluated pixels (every label is the ignore value, or nothing was added)"
        if self.n_pos == 0:
            return "no anomaly pixels (label 1): AUROC, AP and FPR@95 are undefined without positives"
        if self.n_neg == 0:
            return "no inlier pixels (label 0): AUROC, AP and FPR@95 are undefined without negatives"
        return None


def _search_sorted(a: np.ndarray, v: np.ndarray, side: str, block: int = 2048,
                   out: np.ndarray | None = None) -> np.ndarray:
    """``np.searchsorted(a, v, side)`` for sorted ``v`` (int64, into ``out`` if given), block by block.

    The ends of each block of ``v`` bound where its values land in ``a``, so each
    block searches only that window of ``a``, which stays in cache: the same
    result, with most of the cache misses of a binary search over all of ``a``
    gone (11M keys, 1.4M needles: ~30 ms instead of ~46 ms).
    """
    n = v.size
    out = np.empty(n, np.int64) if out is None else out
    if n <= 4 * block:
        out[:] = np.searchsorted(a, v, side=side)
        return out
    heads = np.searchsorted(a, v[::block], side=side).tolist()
    ends = heads[1:] + [a.size]
    for i, (h, e) in enumerate(zip(heads, ends)):
        i0 = i * block
        np.add(np.searchsorted(a[h:e], v[i0:i0 + block], side=side), h, out=out[i0:i0 + block])
    return out


class _Counts:
    """A multiset of keys as sorted arrays: keys seen once (``single``) and the others with their counts.

    Splitting off the keys seen once keeps the state at most 4 bytes a pixel
    (a repeated key costs 8 bytes for at least two pixels) whatever the scores.
    ``single`` and ``keys`` are disjoint; arrays are replaced, never changed in place.
    """

    __slots__ = ("single", "keys", "cnt")

    def __init__(self, single: np.ndarray = _EMPTY, keys: np.ndarray = _EMPTY,
                 cnt: np.ndarray | None = None) -> None:
        self.single, self.keys = single, keys
        self.cnt = np.empty(0, np.uint32) if cnt is None else cnt

    @property
    def total(self) -> int:
        return self.single.size + int(self.cnt.sum(dtype=np.int64))

    @property
    def distinct(self) -> int:
        return self.single.size + self.keys.size

    @property
    def nbytes(self) -> int:
        return self.single.nbytes + self.keys.nbytes + self.cnt.nbytes

    def add_runs(self, k2: np.ndarray, c2: np.ndarray, dtype: type) -> None:
        """Add ``c2[i]`` pixels at each distinct sorted key ``k2[i]``."""
        if k2.size == 0:
            self.cnt = self.cnt.astype(dtype, copy=False)
            return
        s, m = self.single, self.keys
        i_s = _search_sorted(s, k2, "left")
        hit_s = i_s < s.size
        hit_s[hit_s] = s[i_s[hit_s]] == k2[hit_s]
        i_m = _search_sorted(m, k2, "left")
        hit_m = i_m < m.size
        hit_m[hit_m] = m[i_m[hit_m]] == k2[hit_m]
        del i_m
        new_single = ~(hit_s | hit_m)
        new_single &= c2 == 1
        to_m = ~new_single
        self.keys, self.cnt = _merge_counts(m, self.cnt, k2[to_m], c2[to_m] + hit_s[to_m], dtype)
        if hit_s.any() or new_single.any():
            kept = np.delete(s, i_s[hit_s]) if hit_s.any() else s
            ns = k2[new_single]
            self.single = _insert_sorted(kept, ns)

    def add_sorted(self, a: np.ndarray, dtype: type) -> None:
        """Add the sorted multiset ``a``.

        The keys seen once join ``a`` in one sorted merge (timsort finds the two
        runs), whose split gives the new keys seen once and the repeated ones; the
        repeated keys' table is the smaller one, searched and merged last.
        """
        if self.single.size:
            b = np.concatenate((self.single, a))
            b.sort(kind="stable")  # two sorted runs: one linear merge
        else:
            b = a
        single, k, c = _split_sorted(b)
        del b
        m = self.keys
        if m.size and single.size:
            # a key seen once so far (or once in a) that is already repeated moves to the counts
            at = _search_sorted(single, m, "left")
            hit = at < single.size
            hit[hit] = single[at[hit]] == m[hit]
            if hit.any():
                moved = at[hit]
                k, c = _merge_counts(k, c, single[moved], np.ones(moved.size, np.int64), np.int64)
                single = np.delete(single, moved)
        self.single = single
        self.keys, self.cnt = _merge_counts(m, self.cnt, k, c, dtype)

    def unified(self) -> tuple[np.ndarray, np.ndarray]:
        """One table of every distinct key and its count (int64)."""
        return _merge_counts(self.keys, self.cnt.astype(np.int64), self.single,
                             np.ones(self.single.size, np.int64), np.int64)

    def merge(self, other: "_Counts", dtype: type) -> None:
        if other.distinct:
            self.add_runs(*other.unified(), dtype)
        else:
            self.cnt = self.cnt.astype(dtype, copy=False)


def _build_table(ev: _Counts, pkeys: np.ndarray, pcnt: np.ndarray, n_pos: int, n_neg: int) -> _Table:
    """The metric table from the evaluated pixels' counted keys and the anomaly pixels' table."""
    s, m = ev.single, ev.keys
    ends = [int(a[0]) for a in (s, m) if a.size]
    min_key = min(ends) if ends else 0
    if n_pos == 0:
        e = np.empty(0, dtype=np.int64)
        return _Table(n_pos, n_neg, _EMPTY, e, e, e, e, _EMPTY, min_key)
    # every anomaly key is an evaluated key, seen once (in single) or more (in keys)
    i_s = _search_sorted(s, pkeys, "left")
    i_m = _search_sorted(m, pkeys, "left")
    at_s = i_s < s.size
    at_s[at_s] = s[i_s[at_s]] == pkeys[at_s]
    at_m = i_m < m.size
    at_m[at_m] = m[i_m[at_m]] == pkeys[at_m]
    if not np.all(at_s | at_m):
        raise InputError("metric state: an anomaly-pixel key is missing from the evaluated pixels' keys "
                         "(the state was not written by AnomalyMetrics)")
    cs = np.zeros(m.size + 1, np.int64)   # cs[i]: pixels at the i smallest repeated keys
    np.cumsum(ev.cnt, out=cs[1:])
    ge = cs[-1] - cs[i_m]                 # evaluated pixels at or above (>=) each anomaly key
    ge += s.size - i_s
    at = np.where(at_m, cs[np.minimum(i_m + 1, m.size)] - cs[i_m], 1)
    del cs
    # the smallest evaluated key above each anomaly key (the key itself above the highest)
    big = np.int64(2 ** 31)
    j = i_s + at_s
    nxt = np.where(j < s.size, s[np.minimum(j, max(s.size - 1, 0))] if s.size else big, big)
    j = i_m + at_m
    np.minimum(nxt, np.where(j < m.size, m[np.minimum(j, max(m.size - 1, 0))] if m.size else big, big), out=nxt)
    after = np.where(nxt == big, pkeys, nxt).astype(np.int32)[::-1]
    del i_s, i_m, at_s, at_m, j, nxt
    # highest score first
    ge, at = ge[::-1], at[::-1]
    u, count = pkeys[::-1], pcnt[::-1].astype(np.int64)
    tp = np.cumsum(count)
    fp_above = np.subtract(ge, at)     # evaluated pixels strictly above
    fp_above -= tp
    fp_above += count
    fp = np.subtract(ge, tp)
    return _Table(n_pos, n_neg, u, count, tp, fp, fp_above, after, min_key)


def _table_of_sorted(all_sorted: np.ndarray, pos_sorted: np.ndarray, n_pos: int, n_neg: int) -> _Table:
    """:func:`_build_table` straight from a sorted key multiset and its sorted anomaly keys (no tables).

    For one image's AP, and for compute() while nothing was counted yet: the
    positives bracket each tie group with one search.
    """
    n_all = all_sorted.size
    if n_pos == 0:
        e = np.empty(0, dtype=np.int64)
        return _Table(n_pos, n_neg, _EMPTY, e, e, e, e, _EMPTY, int(all_sorted[0]) if n_all else 0)
    first = np.empty(n_pos, bool)
    first[0] = True
    np.not_equal(pos_sorted[1:], pos_sorted[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    del first
    u = pos_sorted[starts]
    cnt = np.diff(starts, append=n_pos)
    del starts
    # the positives are part of all_sorted, so these bracket each tie group exactly
    lo = _search_sorted(all_sorted, u, "left")
    # each tie group holds its cnt anomaly pixels; only where inliers tie too do we search again
    hi = lo + cnt
    after = all_sorted[np.minimum(hi, n_all - 1)]  # the smallest evaluated key above the group (if hi < n)
    more = np.flatnonzero((after == u) & (hi < n_all))
    if more.size:
        hi[more] = _search_sorted(all_sorted, u[more], "right")
        after[more] = all_sorted[np.minimum(hi[more], n_all - 1)]
    # evaluated pixels at or above (>=) and strictly above (>) each key, in place of the positions
    np.subtract(n_all, lo, out=lo)
    np.subtract(n_all, hi, out=hi)
    # highest score first (reversed views: every array here is our own)
    u, cnt, fp, fp_above, after = u[::-1], cnt[::-1], lo[::-1], hi[::-1], after[::-1]
    tp = np.cumsum(cnt)
    fp -= tp
    fp_above -= tp
    fp_above += cnt
    return _Table(n_pos, n_neg, u, cnt, tp, fp, fp_above, after, int(all_sorted[0]))


def _nan_result() -> dict[str, Any]:
    nan = math.nan
    return {"auroc": nan, "ap": nan, "fpr95": nan, "fpr95_threshold": nan, "threshold_at_95tpr": nan,
            "best_f1": nan, "best_f1_threshold": nan}


def _metrics(t: _Table) -> dict[str, Any]:
    """AUROC, AP, both FPR@95 and the best-F1 threshold from a table (NaN with a reason if undefined)."""
    reason = t.reason
    base: dict[str, Any] = {"fpr95_convention": "interpolated",
                            "pixels": {"anomaly": int(t.n_pos), "inlier": int(t.n_neg)}}
    if reason is not None:
        out = _nan_result()
        if t.n_pos > 0 and t.n_neg == 0:
            # best F1 is still defined (the lowest threshold catches everything with precision 1)
            out["best_f1"], out["best_f1_threshold"] = _best_f1(t)
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
    ap = _ap(t, flagged)
    tpr = np.divide(tp, float(P))  # the same float64 operation as scikit-learn's tps / tps[-1]
    i95 = int(np.searchsorted(tpr, TPR_TARGET, side="left"))  # highest threshold with TPR >= 0.95
    fpr95_thr = float(fp[i95]) / N
    fpr95 = _fpr95_interpolated(tpr, fp, fa, N)
    del tpr
    best_f1, best_thr = _best_f1(t, flagged)
    return {"auroc": float(auroc), "ap": ap, "fpr95": fpr95, "fpr95_threshold": fpr95_thr,
            "threshold_at_95tpr": float(keys_to_scores(t.keys[i95:i95 + 1])[0]),
            "best_f1": best_f1, "best_f1_threshold": best_thr, **base, "reason": None}


def _ap(t: _Table, flagged: np.ndarray | None = None) -> float:
    """``sum_k (R_k - R_{k-1}) P_k`` over the distinct anomaly scores (scikit-learn's AP); NaN if undefined.

    ``flagged`` (``tp + fp``) may be passed in when already computed.
    """
    if t.reason is not None:
        return math.nan
    flagged = np.add(t.tp, t.fp) if flagged is None else flagged
    precision = np.divide(t.tp, flagged)           # tp / (tp + fp), float64 (exact integer sums)
    step = np.divide(t.count, float(t.n_pos))      # R_k - R_{k-1}
    return max(0.0, float(np.sum(np.multiply(step, precision, out=step))))


def _fpr95_interpolated(tpr: np.ndarray, fp: np.ndarray, fa: np.ndarray, N: int) -> float:
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


def _best_f1(t: _Table, flagged: np.ndarray | None = None) -> tuple[float, float]:
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


def _reduce(x: np.ndarray, y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points spread evenly along the curve's (L1) length; keeps both ends."""
    if x.size <= max_points:
        return np.arange(x.size)
    arc = np.concatenate(([0.0], np.cumsum(np.abs(np.diff(x)) + np.abs(np.diff(y)))))
    return _reduce_arc(arc, max_points)


def _reduce_arc(arc: np.ndarray, max_points: int) -> np.ndarray:
    """:func:`_reduce` given the curve's length ``arc`` at each point (non-decreasing, from 0).

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


def _roc_points(t: _Table, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


class AnomalyMetrics(Stateful):
    """Pooled pixel AUROC, AP and FPR@95 of anomaly maps, exact and one image at a time.

    ``update(anomaly, labels)`` takes float maps (NumPy or torch, any float dtype,
    evaluated as float32) of shape ``H x W`` or ``B x H x W`` and labels of the
    same shape: 1 anomaly, 0 inlier, ``ignore_index`` excluded, anything else an
    error. ``compute()`` returns every pixel of every update pooled (the
    benchmark number). ``compact_at``: pending keys counted into the tables at
    once (default :data:`COMPACT_AT`; smaller bounds memory tighter, results never change).
    ``state_dict()`` / ``load_state_dict()`` / ``merge`` / ``sync`` follow
    :class:`sml.utils.state.Stateful`.
    """

    def __init__(self, ignore_index: int = 255, compact_at: int | None = None) -> None:
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)) or ignore_index in (0, 1):
            raise InputError(f"ignore_index must be an integer other than 0 and 1, got {ignore_index!r}")
        compact_at = COMPACT_AT if compact_at is None else compact_at
        if isinstance(compact_at, bool) or not isinstance(compact_at, (int, np.integer)) or compact_at < 1:
            raise InputError(f"compact_at must be a positive number of keys, got {compact_at!r}")
        self.ignore_index = int(ignore_index)
        self.compact_at = int(compact_at)
        self.reset()

    def reset(self) -> None:
        """Forget every pixel added so far."""
        # Pending: int32 keys of evaluated pixels not yet counted, in one growable buffer used up to
        # _n (keys are written straight into it), and the anomaly pixels' keys as chunks.
        self._buf = np.empty(0, dtype=np.int32)
        self._n = 0
        self._pos: list[np.ndarray] = []
        self._n_pos_pending = 0
        # Counted: distinct keys (sorted) and their counts, of every evaluated pixel and of the
        # anomaly pixels. Arrays here are replaced, never modified in place (state dicts share them).
        self._ev, self._an = _Counts(), _Counts()
        self.n_pos = 0
        self.n_neg = 0
        self.n_ignored = 0
        self.images = 0
        self._synced = False
        self._table: _Table | None = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Settings, counters, the counted tables and the keys not yet counted.

        ``keys`` / ``pos_keys``: pending keys of evaluated / anomaly pixels (multisets);
        ``table_single`` (keys seen once), ``table_keys`` / ``table_counts`` (the others
        and their counts), sorted, and the same with ``pos_`` for the anomaly pixels.
        A pixel is in exactly one of these forms.
        """
        pos = self._pos[0] if len(self._pos) == 1 else (np.concatenate(self._pos) if self._pos else _EMPTY)
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
        """
        AnomalyMetrics.__init__(self, state["ignore_index"], state.get("compact_at"))
        keys, pos = np.asarray(state["keys"]), np.asarray(state["pos_keys"])
        tables = []
        for pre in ("", "pos_"):
            kk, ck, sk = f"{pre}table_keys", f"{pre}table_counts", f"{pre}table_single"
            k = np.asarray(state.get(kk, _EMPTY))
            c = np.asarray(state.get(ck, np.empty(0, np.uint32)))
            one = np.asarray(state.get(sk, _EMPTY))
            if (k.dtype != np.int32 or one.dtype != np.int32 or k.ndim != 1 or one.ndim != 1 or c.ndim != 1
                    or c.size != k.size or (c.size and c.dtype.kind not in "iu")):
                raise InputError(f"metric state: {kk!r} and {sk!r} must be 1-D int32 arrays and {ck!r} integer "
                                 f"counts as long as {kk!r}")
            for a in (k, one):
                if a.size > 1 and np.any(a[1:] <= a[:-1]):
                    raise InputError(f"metric state: {kk!r} and {sk!r} must be strictly increasing")
            if (c.size and int(c.min()) < 1) or (one.size and k.size and np.isin(one, k).any()):
                raise InputError(f"metric state: {ck!r} must be positive and {sk!r} disjoint from {kk!r}")
            tables.append(_Counts(one, k, c))
        if keys.dtype != np.int32 or pos.dtype != np.int32 or keys.ndim != 1 or pos.ndim != 1:
            raise InputError("metric state: 'keys' and 'pos_keys' must be 1-D int32 arrays")
        counts = [int(state[k]) for k in ("n_pos", "n_neg", "n_ignored", "images")]
        n_all = keys.size + tables[0].total
        n_pos = pos.size + tables[1].total
        if min(counts) < 0 or counts[0] != n_pos or counts[0] + counts[1] != n_all:
            raise InputError("metric state: pixel counts do not match its key arrays")
        dtype = _count_dtype(n_all)
        for t in tables:
            t.cnt = t.cnt.astype(dtype, copy=False)
        self._ev, self._an = tables
        # we grow and sort the buffer in place: it must be our own, writable memory
        self._buf = keys if keys.flags.owndata and keys.flags.writeable else keys.copy()
        self._n = keys.size
        self._pos = [pos] if pos.size else []
        self._n_pos_pending = pos.size
        self.n_pos, self.n_neg, self.n_ignored, self.images = counts
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
        if _on_device(anomaly):
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
        if fl.ignore_index != self.ignore_index:
            raise InputError(f"labels were prepared with ignore_index {fl.ignore_index}, this metric uses "
                             f"{self.ignore_index}")
        device = _on_device(anomaly)
        s = anomaly if device else to_numpy(anomaly, "anomaly")
        if tuple(s.shape) != fl.shape:
            raise InputError(f"anomaly map shape {tuple(s.shape)} does not match labels shape {fl.shape}; "
                             "pass the map at label resolution (H x W)")
        if s.ndim not in (1, 2) and not (s.ndim == 3 and s.shape[0] == 1):
            raise InputError(f"update() with FrameLabels takes one image (H x W), got shape {tuple(s.shape)}")
        n = fl.n_pos + fl.n_neg
        if self._n and self._n + n > self.compact_at:
            self._compact_pending()
        keys = self._reserve(n)
        if device:
            _check_tensor_dtype(s)
            _device_keys(s, fl, keys)
        else:
            if s.dtype.kind not in "fiub":
                raise InputError(f"anomaly scores must be real numbers, got dtype {s.dtype}")
            fs = np.asarray(s, dtype=np.float32).reshape(-1)
            kf = keys.view(np.float32)
            # -0.0 -> +0.0 (equal scores must tie) on the way into the state, no temporary
            if fl.keep is not None:
                np.compress(fl.keep, fs, out=kf)
                np.add(kf, np.float32(0.0), out=kf)
            else:
                np.add(fs, np.float32(0.0), out=kf)
            _flip(keys)
        if n and not (int(keys.min()) > _KEY_NEG_INF and int(keys.max()) < _KEY_POS_INF):
            bad = int(np.count_nonzero((keys <= _KEY_NEG_INF) | (keys >= _KEY_POS_INF)))
            raise InputError(f"anomaly map has {bad} NaN or infinite score(s) at evaluated pixels; "
                             f"fix the scorer or mark those pixels with the ignore value {self.ignore_index}")
        pos = keys[fl.positive] if fl.positive is not None else _EMPTY
        if pos.size:
            self._pos.append(pos)
            self._n_pos_pending += pos.size
        self._n += n
        self.n_pos += fl.n_pos
        self.n_neg += fl.n_neg
        self.n_ignored += fl.n_ignored
        self.images += 1
        self._table = None
        if self._n_pos_pending > self.compact_at:
            self._compact_pos()
        if not ap:
            return None
        if fl.n_pos == 0 or fl.n_neg == 0:
            return math.nan
        keys.sort()
        pos.sort()  # a copy of our own (boolean indexing), shared with nobody yet
        return _ap(_table_of_sorted(keys, pos, fl.n_pos, fl.n_neg))

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
        dtype = _count_dtype(self.n_pos + self.n_neg)
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
        if self._pos:
            self._an.add_sorted(_consolidate(self._pos), _count_dtype(self.n_pos + self.n_neg))
            self._n_pos_pending = 0

    def merge(self, other: "AnomalyMetrics") -> "AnomalyMetrics":
        """Add ``other``'s pixels to this metric; returns ``self``."""
        if not isinstance(other, AnomalyMetrics):
            raise InputError(f"can only merge another AnomalyMetrics, got {type(other).__name__}")
        if other.ignore_index != self.ignore_index:
            raise InputError(f"cannot merge metrics with ignore_index {other.ignore_index} into one with "
                             f"{self.ignore_index}")
        if other is self:
            raise InputError("cannot merge a metric into itself (that would count every pixel twice)")
        if self._n and self._n + other._n > self.compact_at:
            self._compact_pending()
        other_keys = other._buf[:other._n]
        self._reserve(other._n)[:] = other_keys
        del other_keys
        self._n += other._n
        self._pos.extend(other._pos)   # pending chunks are only sorted in place (a multiset), so sharing is safe
        self._n_pos_pending += other._n_pos_pending
        self.n_pos += other.n_pos
        self.n_neg += other.n_neg
        self.n_ignored += other.n_ignored
        self.images += other.images
        dtype = _count_dtype(self.n_pos + self.n_neg)
        self._ev.merge(other._ev, dtype)
        self._an.merge(other._an, dtype)
        if self._n > self.compact_at or self._n_pos_pending > self.compact_at:
            self._compact_pending()
        self._table = None
        return self

    @property
    def nbytes(self) -> int:
        """Bytes held by the metric state (pending key buffer and chunks, counted tables)."""
        return self._buf.nbytes + sum(c.nbytes for c in self._pos) + self._ev.nbytes + self._an.nbytes

    @property
    def distinct(self) -> int:
        """Distinct evaluated scores counted so far (the size of the table; pending keys not included)."""
        return self._ev.distinct

    # ------------------------------------------------------------------ results
    def _get_table(self) -> _Table:
        if self._table is None:
            if self._ev.distinct == 0 and self._an.distinct == 0:
                # nothing counted yet (under compact_at keys in all): the sorted keys give the table
                # directly, without building counted tables
                pend = self._buf[:self._n]
                pend.sort()
                self._pos = [_consolidate(self._pos)] if self._pos else []
                self._n_pos_pending = self._pos[0].size if self._pos else 0
                self._table = _table_of_sorted(pend, self._pos[0] if self._pos else _EMPTY, self.n_pos, self.n_neg)
            else:
                self._compact_pending(release=True)
                self._table = _build_table(self._ev, *self._an.unified(), self.n_pos, self.n_neg)
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
        out = _metrics(self._get_table())
        out["ignored"] = int(self.n_ignored)
        out["images"] = int(self.images)
        return out

    def summary(self, max_points: int = 2000) -> tuple[dict[str, Any], Any]:
        """``(compute(), curves(max_points))`` from one table; the curves are None where a class is missing."""
        try:
            cur = self.curves(max_points)
        except InputError:  # no positives or no negatives: compute() says why
            cur = None
        return self.compute(), cur

    def best_f1_threshold(self) -> float:
        """Score threshold ``t`` maximising pooled pixel F1 of ``score >= t`` (NaN without anomaly pixels)."""
        return _best_f1(self._get_table())[1]

    @property
    def best_f1(self) -> float:
        """The maximal pooled pixel F1 (NaN without anomaly pixels)."""
        return _best_f1(self._get_table())[0]

    def curves(self, max_points: int = 2000) -> dict[str, dict[str, np.ndarray]]:
        """ROC and precision-recall curves, reduced to at most ``max_points`` points each for plotting.

        ``roc``: ``fpr``, ``tpr``, ``threshold`` from (0, 0) (threshold +inf, as
        scikit-learn) to (1, 1); ``pr``: ``precision``, ``recall``, ``threshold``,
        one point per distinct anomaly score in increasing threshold order (as
        scikit-learn, without its artificial (recall 0, precision 1) end). The
        unreduced curves are exact; the reduction keeps both ends and points
        spread evenly along the curve. Raises :class:`InputError` if a class is missing.
        """
        if max_points < 3:
            raise InputError(f"max_points must be at least 3, got {max_points}")
        t = self._get_table()
        if t.reason is not None:
            raise InputError(f"no curves: {t.reason}")
        P, N, m = t.n_pos, t.n_neg, t.keys.size
        # Only the points kept are built: a step j of the ROC staircase is the top of its run of
        # inliers and the point after its anomaly tie group; both coordinates only grow, so the
        # curve's L1 length at step j is fpr + tpr and the steps to keep come from one search
        # (O(max_points log m), not O(m) passes over millions of steps).
        steps = _reduce_arc(t.fp / N + t.tp / P, max(1, (max_points - 2) // 2))
        fpr, tpr, thr = _roc_points(t, steps)
        if fpr.size > max_points:  # only for tiny max_points
            ri = _reduce(fpr, tpr, max_points)
            fpr, tpr, thr = fpr[ri], tpr[ri], thr[ri]
        # PR in increasing threshold order: recall falls by count / P per step, precision moves
        # either way, so its L1 length needs one pass over the steps
        tpf = t.tp[::-1].astype(np.float64)
        precision = tpf / (tpf + t.fp[::-1])
        arc = np.empty(m)
        arc[0] = 0.0
        np.cumsum(np.abs(np.diff(precision)), out=arc[1:])
        arc += 1.0 - tpf / P
        pi = _reduce_arc(arc, max_points)
        pthr = keys_to_scores(t.keys[::-1][pi]).astype(np.float64)
        return {"roc": {"fpr": fpr, "tpr": tpr, "threshold": thr},
                "pr": {"precision": precision[pi], "recall": tpf[pi] / P, "threshold": pthr}}

    def __repr__(self) -> str:
        return (f"AnomalyMetrics(ignore_index={self.ignore_index}, images={self.images}, "
                f"anomaly={self.n_pos}, inlier={self.n_neg})")


def anomaly_metrics(anomaly: Any, labels: Any, ignore_index: int = 255) -> dict[str, Any]:
    """One-shot :meth:`AnomalyMetrics.compute` of one map or batch and its labels."""
    m = AnomalyMetrics(ignore_index=ignore_index)
    m.update(anomaly, labels)
    return m.compute()
