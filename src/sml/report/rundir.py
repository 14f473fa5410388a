"""Reading a run directory (docs/design.md, "Run directory") and per-frame numbers for the gallery."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sml.errors import InputError
# The run folder itself (its layout, run.json, the lock, what may be replaced or deleted) is
# sml.utils.run_layout's and sml.utils.run_folder's; the console table is sml.utils.tables'. These names
# stay importable from here.
from sml.utils.run_folder import LOCK, MANIFEST, RunFolder, eval_run, run_files  # noqa: F401
from sml.utils.run_layout import CURVES, DIAGNOSTICS, FRAMES, MAP_FOLDERS, METRICS, METRICS_CSV, PARTIAL, STATS
from sml.utils.run_layout import safe_name
from sml.utils.tables import metrics_table, print_metrics as print_table  # noqa: F401


@dataclass
class Run:
    """The parts of a run directory the report reads; optional parts are None when absent."""

    root: Path
    metrics: dict[str, Any]
    curves: dict[str, Any] | None = None
    frames: list[dict[str, Any]] | None = None
    stats: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    files: set[str] | None = None  # this run's per-frame files (run.json); None: an older run, take all

    def owns(self, relative: str) -> bool:
        """Whether the file ``relative`` (to the run directory) exists and belongs to this run (run.json)."""
        return (self.root / relative).is_file() and (self.files is None or relative in self.files)

    def own_map(self, method: str, frame_id: str) -> Path | None:
        """:meth:`map_path` when that map is this run's (a leftover of an earlier run is never drawn), else None."""
        p = self.map_path(method, frame_id)
        return p if self.owns(p.relative_to(self.root).as_posix()) else None

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
        """``maps/<method>/<safe frame id>.npy``, as ``sml eval`` names them (``run_layout.safe_name``)."""
        return self.root / MAP_FOLDERS["npy16"] / method / f"{safe_name(str(frame_id))}.npy"

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
                         f"`sml eval ... --out {root}` (or `sml demo --out DIR`)")
    mpath = root / METRICS
    if not mpath.is_file():
        raise InputError(f"{root} is not a run directory: {mpath} is missing; `sml eval --out DIR` "
                         "writes it")
    metrics = _read_json(mpath)
    if not isinstance(metrics, dict) or not isinstance(metrics.get("methods"), dict):
        raise InputError(f"{mpath} has no 'methods' object (see docs/design.md); rewrite it with `sml eval`")
    run = Run(root=root, metrics=metrics, files=run_files(root))
    cpath, fpath, spath = root / CURVES, root / FRAMES, root / STATS
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


# ---------------------------------------------------------------- writing a run (sml eval)
CSV_FIELDS = ["method", "auroc", "ap", "fpr95", "fpr95_threshold", "threshold_at_95tpr", "best_f1_threshold",
              "siou", "ppv", "mean_f1"]


def RunLock(out: str | Path, *, resume: bool = False, overwrite: bool = False,  # noqa: N802 - was a class
            expected: Any = ()) -> RunFolder:
    """The run folder of ``sml eval`` (:func:`sml.utils.run_folder.eval_run`): one run at a time, a finished
    run replaced only with ``overwrite``, and only the files its run.json lists are ever removed."""
    return eval_run(out, resume=resume, overwrite=overwrite, expected=expected)


def clear_run(out: Path, keep_partial: bool = False) -> None:
    """Remove the files that ``out/run.json`` lists (its partial state too unless ``keep_partial``); nothing else."""
    with RunFolder(out, "eval", clear=True, keep=PARTIAL if keep_partial else None):
        pass


def _f(v: Any) -> float | None:
    """JSON-friendly float (NaN stays NaN: interface.md reports missing values as NaN)."""
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def metrics_json(dataset: Any, kind: str, frames: list[dict[str, Any]], settings: dict[str, dict[str, Any]],
                 results: dict[str, dict[str, Any]], model: str, stats_path: Any, meta: dict[str, Any] | None,
                 track: str | None, protocol: str = "exact") -> dict[str, Any]:
    """The content of ``metrics.json`` (interface.md schema) from the pooled results of each method.

    ``protocol`` (sml.protocols) is recorded with its notes (and the data set's).
    """
    from sml.protocols import get_protocol

    proto = get_protocol(protocol)
    labelled = [f for f in frames if f.get("pixels")]
    out: dict[str, Any] = {
        "dataset": kind, "frames": len(labelled), "frames_scored": len(frames),
        "pixels": {"anomaly": sum(f["pixels"]["anomaly"] for f in labelled),
                   "inlier": sum(f["pixels"]["inlier"] for f in labelled)},
        "model": model,
        "stats": str(stats_path) if stats_path else None,
        "fpr95_convention": proto.fpr95_convention,
        "methods": {},
    }
    out["protocol"] = proto.name
    out["notes"] = list(dict.fromkeys([*(getattr(dataset, "notes", None) or []), *proto.notes]))
    if (meta or {}).get("label_mapping") is not None:
        out["label_mapping"] = meta["label_mapping"]  # type: ignore[index]
    if (meta or {}).get("inference"):
        out["inference"] = meta["inference"]  # type: ignore[index]  # precision, compile, tf32
    if track is not None:
        out["component_track"] = track
    for m, r in results.items():
        entry: dict[str, Any] = {k: _f(r.get(k)) for k in ("auroc", "ap", "fpr95", "fpr95_threshold",
                                                            "threshold_at_95tpr", "best_f1", "best_f1_threshold")}
        if r.get("fpr95_interpolated") is not None:
            entry["fpr95_interpolated"] = _f(r["fpr95_interpolated"])
        if r.get("reason"):
            entry["reason"] = r["reason"]  # why values are NaN (e.g. no anomaly pixel)
        if "components" in r:
            entry["components"] = r["components"]
        if settings.get(m):
            entry["settings"] = settings[m]
        out["methods"][m] = entry
    return out


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "detach"):  # a torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return obj.astype(np.float64).tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_run(out: Path, metrics: dict[str, Any], frames: list[dict[str, Any]], curves: dict[str, Any],
              stats: Any, stats_path: Any, run_id: str | None = None, files: list[str] | None = None,
              diagnostics: dict[str, Any] | None = None) -> None:
    """Write the run's files; ``metrics.json`` last, so a run that fails leaves nothing that looks complete.

    ``diagnostics`` (``ClassDiagnostics.to_json()``) goes to ``diagnostics.json``. ``run.json`` is
    brought up to date just before ``metrics.json``: by the run folder that ``out`` is entered as
    (:func:`RunLock`), which recorded every file written; outside one, from ``run_id`` and ``files``.
    """
    import csv
    import io

    from sml.utils import atomic

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "frames", "protocol", *CSV_FIELDS])
    for m, r in metrics["methods"].items():
        comp = r.get("components") or {}
        row = [metrics["dataset"], metrics["frames"], metrics.get("protocol", "exact"), m]
        for k in CSV_FIELDS[1:]:
            v = comp.get(k) if k in ("siou", "ppv", "mean_f1") else r.get(k)
            row.append("" if v is None else repr(float(v)))
        w.writerow(row)
    try:
        atomic.write_text(out / METRICS_CSV, buf.getvalue())
        curves = {m: {**_plain(c), "auroc": metrics["methods"][m].get("auroc"),
                      "ap": metrics["methods"][m].get("ap")} for m, c in curves.items()}
        # compact: tens of thousands of floats read by programs; json writes them with its C
        # encoder only without indentation (10x faster than the pretty-printed form)
        atomic.write_json(out / CURVES, curves, indent=None)
        atomic.write_json(out / FRAMES, frames)
        # a stats.json is copied as it is; statistics read from elsewhere (the reference code's .npy
        # pair) are written in stats.json's own format, which is what `sml report` reads
        if stats_path is not None and Path(stats_path).is_file() and Path(stats_path).suffix.lower() == ".json":
            atomic.write_bytes(out / STATS, Path(stats_path).read_bytes())
        elif stats is not None and hasattr(stats, "save"):
            stats.save(out / STATS)
        if diagnostics is not None:
            atomic.write_json(out / DIAGNOSTICS, diagnostics)
        _record_files(out, run_id, files)
        atomic.write_json(out / METRICS, metrics)
    except OSError as exc:
        raise atomic.output_error(Path(getattr(exc, "filename", None) or out), exc, "write") from None


def _record_files(out: Path, run_id: str | None, files: list[str] | None) -> None:
    from sml.utils import run_folder

    folder = run_folder.active(out)
    if folder is not None:
        folder.commit()
    elif run_id is not None:
        top = [n for n in run_folder.RUN_FILES if (out / n).is_file() or n == METRICS]
        run_folder.write_manifest(out, "eval", run_id, [*(files or []), *top])
