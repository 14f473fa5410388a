"""Scores as order-preserving int32 keys: the exact metrics compare and count keys, never floats.

A float32 score's bit pattern, read as int32, sorts like the score for
positive values; negative values get their magnitude bits flipped so that
larger magnitudes sort lower. ``-0.0`` is first turned into ``+0.0`` (equal
scores must tie). NaNs fall outside the keys of -inf and +inf.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["scores_to_keys", "keys_to_scores", "EMPTY_KEYS", "KEY_NEG_INF", "KEY_POS_INF"]

#: an empty key array, shared and read-only (a state that takes it as its buffer copies it first)
EMPTY_KEYS = np.empty(0, dtype=np.int32)
EMPTY_KEYS.flags.writeable = False
# keys of -inf and +inf: a key strictly between them is a finite score (NaNs lie outside)
KEY_NEG_INF = -2139095041
KEY_POS_INF = 0x7F800000


def flip(k: np.ndarray) -> None:
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
    flip(k)
    return k


def keys_to_scores(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`scores_to_keys` (the bit flip is an involution)."""
    k = np.array(keys, dtype=np.int32, copy=True).reshape(-1)
    flip(k)
    return k.view(np.float32)


def host_keys(scores: np.ndarray, keep: np.ndarray | None, out: np.ndarray) -> None:
    """Keys of ``scores`` (NumPy, any real dtype) at the pixels ``keep`` (None: all) written into ``out`` (int32).

    The float32 values go straight into ``out`` and become keys there: no temporary.
    """
    fs = np.asarray(scores, dtype=np.float32).reshape(-1)
    kf = out.view(np.float32)
    # -0.0 -> +0.0 (equal scores must tie) on the way in
    if keep is not None:
        np.compress(keep, fs, out=kf)
        np.add(kf, np.float32(0.0), out=kf)
    else:
        np.add(fs, np.float32(0.0), out=kf)
    flip(out)


def device_key_tensor(scores: Any, keep: Any) -> Any:
    """Keys of a torch map at the pixels ``keep`` (a bool tensor on its device, None: all), as an int32 tensor there.

    The same float32 rounding, ``-0.0`` -> ``+0.0`` and bit flip as :func:`host_keys`, in torch ops.
    """
    import torch

    x = scores.detach().reshape(-1)
    x = x.float() + 0.0 if x.dtype != torch.float32 else x + 0.0  # a new tensor of our own
    k = x.view(torch.int32)
    if keep is not None:
        k = k[keep]
    k ^= (k >> 31) & 0x7FFFFFFF
    return k


def device_nonfinite(k: Any) -> int:
    """How many of the key tensor ``k`` stand for NaN or infinite scores (one number crosses to the host)."""
    return int(((k <= KEY_NEG_INF) | (k >= KEY_POS_INF)).sum()) if k.numel() else 0


def device_runs(k: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The multiset ``k`` (an int32 key tensor) sorted and counted where it lives: the keys seen once, and the
    other distinct keys with their counts (int64), as host arrays - the frame's compact table.

    Keys seen once cross as plain int32 keys (4 bytes), the others with an int32 count (8 bytes).
    """
    import torch

    from sml.utils.device import to_host

    if k.numel() == 0:
        return EMPTY_KEYS, EMPTY_KEYS, np.empty(0, np.int64)
    u, c = torch.unique(k, sorted=True, return_counts=True)
    one = c == 1
    if bool(one.all()):
        return to_host(u), EMPTY_KEYS, np.empty(0, np.int64)
    rep = ~one
    return to_host(u[one]), to_host(u[rep]), to_host(c[rep].to(torch.int32)).astype(np.int64)


def count_nonfinite(keys: np.ndarray) -> int:
    """How many of ``keys`` stand for NaN or infinite scores (0 after one min / max pass when none do)."""
    if keys.size == 0 or (int(keys.min()) > KEY_NEG_INF and int(keys.max()) < KEY_POS_INF):
        return 0
    return int(np.count_nonzero((keys <= KEY_NEG_INF) | (keys >= KEY_POS_INF)))
