"""The numbers that need the pooled thresholds: per-frame false-positive area and component metrics.

A second pass over the maps ``sml eval`` kept (no network), once the pooled
metrics are known: for each frame the false-positive area at the pooled
95%-TPR threshold (the share of the frame's inlier pixels scoring at or above
it) and, with a component track, the SegmentMeIfYouCan component metrics at the
pooled best-F1 threshold (spec section 6), or the threshold the ``--protocol``
hands to them (:func:`sml.protocols.component_threshold`). It reads the
float32 maps kept for ``--components``, else the float16 maps of ``maps/``;
a protocol that scores submitted maps (``smiyc``) rounds them to float16 first. Frames are shared between
processes like the first pass; component states are merged in frame order.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from sml.errors import InputError
from sml.pipelines import writers
from sml.utils import distributed
from sml.utils.progress import progress


def _finite(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def load_map(path: Path) -> np.ndarray:
    """A kept map as float32; a missing or damaged file is refused naming it and the recovery."""
    try:
        return np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"the kept map {path} is missing or damaged ({type(exc).__name__}: {exc}); run the "
                         f"evaluation again with --overwrite") from None


def frame_threshold_metrics(amap: np.ndarray, labels: np.ndarray, thr95: float | None, best: float | None,
                            track: str | None) -> dict[str, Any]:
    """One frame's ``fp_area`` at ``thr95`` and (with ``track``) its component state at ``best``."""
    from sml.metrics import ComponentMetrics

    entry: dict[str, Any] = {}
    inl = labels == 0
    if thr95 is not None and inl.any():
        entry["fp_area"] = float((amap[inl] >= thr95).mean())
    if track and best is not None:
        cm = ComponentMetrics(track)
        cm.update(amap, labels, best)
        entry["components"] = cm
    return entry


def add_threshold_metrics(dataset: Any, indices: list[int], frame_list: list[dict[str, Any]],
                          pooled: dict[str, Any], results: dict[str, dict[str, Any]], out: Path, kind: str,
                          tmp32: Path | None, track: str | None, show_progress: bool,
                          protocol: str = "exact") -> None:
    """Add ``fp_area`` to ``frame_list`` and (with ``track``) ``components`` to ``results``, in place."""
    from sml import protocols

    methods = list(results)
    thr95 = {m: _finite(results[m].get("threshold_at_95tpr")) for m in methods}
    best = {m: _component_threshold(protocol, pooled[m]) for m in methods} if track else {}
    submitted = protocols.get_protocol(protocol).float16

    def load(path: Path) -> np.ndarray:
        return protocols.to_submission(load_map(path)) if submitted else load_map(path)

    def map_path(m: str, frame: Any) -> Path:
        if tmp32 is not None:
            return tmp32 / m / f"{writers.safe_name(frame.id)}.npy"
        return writers.map_path(out, "npy16", m, kind, frame.id)

    per_frame: dict[int, dict[str, Any]] = {}
    for p in progress(distributed.shard(range(len(indices))), total=len(indices), desc="thresholds",
                      disable=None if show_progress else True):
        frame = dataset.frames[indices[p]]
        if frame.label_path is not None:
            labels = dataset.load_labels(frame)
            per_frame[p] = {m: frame_threshold_metrics(load(map_path(m, frame)), labels, thr95[m],
                                                       best.get(m), track) for m in methods}
    _combine(per_frame, frame_list, results, best)


def _component_threshold(protocol: str, pixel: Any) -> float | None:
    """The protocol's component-metric threshold (any PixelMetric's), None where it is undefined (NaN)."""
    from sml import protocols

    return _finite(protocols.component_threshold(protocol, pixel))


def _combine(per_frame: dict[int, dict[str, Any]], frame_list: list[dict[str, Any]],
             results: dict[str, dict[str, Any]], best: dict[str, float | None]) -> None:
    """Every process's frames, in frame order: fp_area into the records, component states merged into results."""
    merged: dict[int, dict[str, Any]] = {}
    for part in distributed.all_gather_object(per_frame):
        merged.update(part)
    comp_total: dict[str, Any] = {}
    for p in range(len(frame_list)):
        for m, entry in merged.get(p, {}).items():
            comp = entry.pop("components", None)
            if comp is not None:
                comp_total[m] = comp if m not in comp_total else comp_total[m].merge(comp)
            frame_list[p]["methods"][m].update(entry)
    for m, comp in comp_total.items():
        results[m]["components"] = {k: float(v) if isinstance(v, (float, np.floating)) else v
                                    for k, v in comp.compute().items()}
        results[m]["components"]["threshold"] = best[m]
