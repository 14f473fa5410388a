"""Boundary checks shared by the pixel and component metrics: arrays in, clear errors out."""
from __future__ import annotations

from typing import Any

import numpy as np

from sml.errors import InputError


def to_numpy(x: Any, what: str) -> np.ndarray:
    """A NumPy view of ``x`` (torch tensor on any device, NumPy array or nested sequence)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch here
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            # NumPy has no bfloat16; both convert to float32 exactly
            x = x.float()
        x = x.numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible is the caller's input error
        raise InputError(f"{what} must be a NumPy array or torch tensor, got {type(x).__name__}: {exc}") from exc
    return arr


def scores_and_labels(anomaly: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate an (anomaly map, labels) pair and return them as (float32 scores, integer labels).

    Both must have the same shape, ``H x W`` or ``B x H x W`` (1-D is accepted as one image).
    Scores may be any real dtype and are evaluated as float32; labels must be integers or bool.
    """
    s = to_numpy(anomaly, "anomaly")
    y = to_numpy(labels, "labels")
    if s.shape != y.shape:
        raise InputError(f"anomaly map shape {tuple(s.shape)} does not match labels shape {tuple(y.shape)}; "
                         "pass the map at label resolution (H x W or B x H x W)")
    if s.ndim not in (1, 2, 3):
        raise InputError(f"anomaly maps must be H x W or B x H x W, got shape {tuple(s.shape)}; "
                         "squeeze channel dimensions first")
    if s.dtype.kind not in "fiub":
        raise InputError(f"anomaly scores must be real numbers, got dtype {s.dtype}")
    if y.dtype.kind not in "iub":
        if y.dtype.kind == "f" and y.size and np.array_equal(y, np.round(y)):
            y = y.astype(np.int64)
        else:
            raise InputError(f"labels must be integers (1 anomaly, 0 inlier, ignore value), got dtype {y.dtype}")
    if y.dtype.kind == "b":
        y = y.view(np.uint8)
    return np.asarray(s, dtype=np.float32), y


def label_counts(y: np.ndarray, ignore_index: int) -> tuple[int, int, int]:
    """(anomaly, inlier, ignored) pixel counts of ``y``; any other value is an :class:`InputError`."""
    total = y.size
    # three SIMD compare-and-count passes beat one np.bincount (which widens to intp first)
    n_pos = int(np.count_nonzero(y == 1))
    n_neg = int(np.count_nonzero(y == 0))
    n_ign = int(np.count_nonzero(y == ignore_index)) if ignore_index not in (0, 1) else 0
    other = total - n_pos - n_neg - n_ign
    if other:
        bad = y[(y != 0) & (y != 1) & (y != ignore_index)]
        values = np.unique(bad)
        shown = ", ".join(str(v) for v in values[:8].tolist()) + (" ..." if values.size > 8 else "")
        raise InputError(f"labels contain {other} pixels with value(s) {shown}; anomaly labels must be 1 "
                         f"(anomaly), 0 (inlier) or {ignore_index} (ignored). Map the data set's values first "
                         "(sml.data loaders do), or set ignore_index to the void value")
    return n_pos, n_neg, n_ign


def state_count(state: dict[str, Any], key: str, what: str = "metric state") -> int:
    """``state[key]`` as a count: an integer >= 0 (not a bool, not a float); else an :class:`InputError` naming it."""
    v = state.get(key)
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise InputError(f"{what}: {key!r} must be a count (an integer >= 0), got {v!r}")
    return int(v)
