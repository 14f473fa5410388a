"""Reading a run directory (docs/design.md, "Run directory") and per-frame numbers for the gallery."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sml.errors import InputError


@dataclass
class Run:
    """The parts of a run directory the report reads; optional parts are None when absent."""

    root: Path
    metrics: dict[str, Any]
    curves: dict[str, Any] | None = None
    frames: list[dict[str, Any]] | None = None
    stats: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        """Method names in metrics.json order (then any that only curves / frames mention)."""
        names = list(self.metrics.get("methods", {}))
        for extra in (self.curves or {}):
            if extra not in names:
                names.append(extra)
        return names

    def threshold(self, method: str) -> float | None:
        """The score threshold at 95% TPR of ``method`` (None when metrics.json has none)."""
        t = self.metrics.get("methods", {}).get(method, {}).get("threshold_at_95tpr")
        try:
            t = float(t)
        except (TypeError, ValueError):
            return None
        return t if math.isfinite(t) else None

    def resolve(self, path: str | None) -> Path | None:
        """A path from frames.json: absolute, or relative to the run directory."""
        if not path:
            return None
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def map_path(self, method: str, frame_id: str) -> Path:
        """``maps/<method>/<safe frame id>.npy``, as ``sml eval`` names them (``writers.safe_name``)."""
        from sml.pipelines.writers import safe_name

        return self.root / "maps" / method / f"{safe_name(str(frame_id))}.npy"

    def label_table(self) -> np.ndarray | None:
        """Raw label value -> evaluation label (256 entries, 255 for unknown values) of this run's
        data-set kind, or None when the kind's mapping cannot be rebuilt (``folder`` with a user mapping)."""
        if not hasattr(self, "_lut"):
            self._lut = _label_lut(str(self.metrics.get("dataset", "")), self.metrics.get("label_mapping"))
        return self._lut


# datasets.md's raw conventions that are not already 0 / 1 / 255: the fallback when
# sml.data cannot be imported (the loaders own these tables; see _label_lut).
_SPEC_TABLES = {"road-anomaly": {0: 0, 2: 1}, "lost-and-found": {0: 255, 1: 0, **{v: 1 for v in range(2, 256)}}}


def _label_lut(kind: str, mapping: Any = None) -> np.ndarray | None:
    try:
        from sml.data import DATASETS, canonical_kind, label_table

        kind = canonical_kind(kind)
        if DATASETS[kind].task != "anomaly":
            return None  # Cityscapes train ids are not anomaly labels
        return label_table(kind, mapping) if kind == "folder" else label_table(kind)
    except ImportError:
        table = _SPEC_TABLES.get(kind)
        if table is None:
            return None
        lut = np.full(256, 255, np.uint8)
        lut[list(table)] = list(table.values())
        return lut
    except Exception:  # noqa: BLE001 - unknown kind or mapping: only labels already in 0/1/255 are read
        return None


def read_eval_labels(path: Path, table: np.ndarray | None) -> np.ndarray:
    """Labels of ``path`` in the evaluation convention (1 anomaly, 0 in-distribution, 255 void).

    Files already holding only 0 / 1 / 255 are used as they are; others are mapped
    through ``table`` (the data set's raw-value table). ``InputError`` otherwise.
    """
    from PIL import Image

    with Image.open(path) as im:
        lab = np.asarray(im)
    if lab.ndim == 3:
        lab = lab[..., 0]
    if lab.dtype != np.uint8:
        lab = lab.astype(np.uint8) if lab.size and lab.max() < 256 and lab.min() >= 0 else lab
    values = np.unique(lab)
    if np.isin(values, (0, 1, 255)).all():
        return lab.astype(np.uint8, copy=False)
    if table is not None and lab.dtype == np.uint8:
        return table[lab]
    raise InputError(f"labels {path} hold values {values.tolist()[:8]} outside the evaluation convention "
                     "(0 in-distribution, 1 anomaly, 255 void) and the run's data-set kind gives no mapping; "
                     "give frames.json an 'eval_labels' PNG in that convention")


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); rewrite it with `sml eval`") from None


def load_run(run_dir: str | Path) -> Run:
    """Read metrics.json (required) and curves.json, frames.json, stats.json (optional)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise InputError(f"run directory {root} does not exist; create one with "
                         "`sml eval ... --out {root}` (or `sml demo --out DIR`)")
    mpath = root / "metrics.json"
    if not mpath.is_file():
        raise InputError(f"{root} is not a run directory: {mpath} is missing; `sml eval --out DIR` "
                         "writes it")
    metrics = _read_json(mpath)
    if not isinstance(metrics, dict) or not isinstance(metrics.get("methods"), dict):
        raise InputError(f"{mpath} has no 'methods' object (see docs/design.md); rewrite it with `sml eval`")
    run = Run(root=root, metrics=metrics)
    cpath, fpath, spath = root / "curves.json", root / "frames.json", root / "stats.json"
    if cpath.is_file():
        curves = _read_json(cpath)
        if not isinstance(curves, dict):
            raise InputError(f"{cpath} must map method names to curves (see docs/design.md)")
        run.curves = curves
    else:
        run.warnings.append("curves.json is missing: no ROC / PR figure")
    if fpath.is_file():
        frames = _read_json(fpath)
        if isinstance(frames, dict) and "frames" in frames:
            frames = frames["frames"]
        if not isinstance(frames, list) or not all(isinstance(f, dict) and "id" in f for f in frames):
            raise InputError(f"{fpath} must be a list of objects with an 'id' (see docs/design.md)")
        run.frames = frames
    else:
        run.warnings.append("frames.json is missing: no gallery")
    if spath.is_file():
        stats = _read_json(spath)
        if not isinstance(stats, dict) or "mean" not in stats:
            run.warnings.append(f"{spath.name} has no per-class 'mean': statistics table skipped")
        else:
            run.stats = stats
    return run


def frame_numbers(anomaly: np.ndarray, labels: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """Per-frame gallery numbers: ``ap`` (average precision of this frame's pixels, NaN without
    anomaly or inlier pixels), ``fp_area`` (share of the frame's in-distribution pixels with
    ``anomaly >= threshold``), ``fp_pixels``, ``anomaly_pixels``, ``inlier_pixels``.

    Labels: 1 anomaly, 0 in-distribution, anything else (255) ignored. AP is
    scikit-learn's ``average_precision_score`` (no interpolation, ties as one
    threshold); NaN scores rank lowest.
    """
    a = np.asarray(anomaly, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if a.shape != y.shape:
        raise InputError(f"anomaly map ({np.shape(anomaly)}) and labels ({np.shape(labels)}) differ in size")
    valid = (y == 0) | (y == 1)
    s = np.nan_to_num(a[valid], nan=-np.inf)
    pos = y[valid] == 1
    n_pos = int(pos.sum())
    n_neg = int(pos.size - n_pos)
    out: dict[str, float] = {"ap": math.nan, "fp_area": math.nan, "fp_pixels": math.nan,
                             "anomaly_pixels": n_pos, "inlier_pixels": n_neg}
    if n_pos and n_neg:
        order = np.argsort(-s, kind="stable")
        s_sorted, pos_sorted = s[order], pos[order]
        # Last index of each run of equal scores: one threshold per distinct score.
        last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
        tps = np.cumsum(pos_sorted)[last].astype(np.float64)
        precision = tps / (last + 1)
        recall = tps / n_pos
        out["ap"] = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    if threshold is not None and n_neg:
        fp = int(np.count_nonzero(s[~pos] >= threshold))
        out["fp_pixels"] = fp
        out["fp_area"] = fp / n_neg
    return out


_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str, max_len: int = 80) -> str:
    """A file-name-safe form of a frame id or method name."""
    s = _SLUG.sub("_", str(text)).strip("._") or "x"
    return s[:max_len]
