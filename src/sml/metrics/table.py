"""The table every exact pixel metric is computed from: counts at each distinct anomaly score, highest first.

Built either from the counted state (:func:`build_table`: the evaluated
pixels' :class:`~sml.metrics.counts.Counts` searched at each anomaly key) or
straight from sorted key multisets (:func:`table_of_sorted`: one image's AP,
or a metric whose keys were never compacted). Both give the same table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sml.errors import InputError
from sml.metrics.counts import Counts, search_sorted
from sml.metrics.keys import EMPTY_KEYS

__all__ = ["Table", "build_table", "table_of_sorted"]


@dataclass
class Table:
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
        """Why the metrics are undefined (a class is missing), or None."""
        if self.n_pos == 0 and self.n_neg == 0:
            return "no evaluated pixels (every label is the ignore value, or nothing was added)"
        if self.n_pos == 0:
            return "no anomaly pixels (label 1): AUROC, AP and FPR@95 are undefined without positives"
        if self.n_neg == 0:
            return "no inlier pixels (label 0): AUROC, AP and FPR@95 are undefined without negatives"
        return None


def build_table(ev: Counts, pkeys: np.ndarray, pcnt: np.ndarray, n_pos: int, n_neg: int) -> Table:
    """The metric table from the evaluated pixels' counted keys and the anomaly pixels' table."""
    s, m = ev.single, ev.keys
    ends = [int(a[0]) for a in (s, m) if a.size]
    min_key = min(ends) if ends else 0
    if n_pos == 0:
        e = np.empty(0, dtype=np.int64)
        return Table(n_pos, n_neg, EMPTY_KEYS, e, e, e, e, EMPTY_KEYS, min_key)
    # every anomaly key is an evaluated key, seen once (in single) or more (in keys)
    i_s = search_sorted(s, pkeys, "left")
    i_m = search_sorted(m, pkeys, "left")
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
    return Table(n_pos, n_neg, u, count, tp, fp, fp_above, after, min_key)


def table_of_sorted(all_sorted: np.ndarray, pos_sorted: np.ndarray, n_pos: int, n_neg: int) -> Table:
    """:func:`build_table` straight from a sorted key multiset and its sorted anomaly keys (no tables).

    For one image's AP, and for compute() while nothing was counted yet: the
    positives bracket each tie group with one search.
    """
    n_all = all_sorted.size
    if n_pos == 0:
        e = np.empty(0, dtype=np.int64)
        return Table(n_pos, n_neg, EMPTY_KEYS, e, e, e, e, EMPTY_KEYS, int(all_sorted[0]) if n_all else 0)
    first = np.empty(n_pos, bool)
    first[0] = True
    np.not_equal(pos_sorted[1:], pos_sorted[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    del first
    u = pos_sorted[starts]
    cnt = np.diff(starts, append=n_pos)
    del starts
    # the positives are part of all_sorted, so these bracket each tie group exactly
    lo = search_sorted(all_sorted, u, "left")
    # each tie group holds its cnt anomaly pixels; only where inliers tie too do we search again
    hi = lo + cnt
    after = all_sorted[np.minimum(hi, n_all - 1)]  # the smallest evaluated key above the group (if hi < n)
    more = np.flatnonzero((after == u) & (hi < n_all))
    if more.size:
        hi[more] = search_sorted(all_sorted, u[more], "right")
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
    return Table(n_pos, n_neg, u, cnt, tp, fp, fp_above, after, int(all_sorted[0]))

