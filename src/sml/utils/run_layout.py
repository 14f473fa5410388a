"""The run folder's layout: every name sml gives a file or folder in a run folder, and the one
file-name sanitiser (names made from frame ids, file stems and labels).

A leaf (names and paths only; nothing is read or written here): :mod:`sml.utils.run_folder`
(run.json, the lock, the journal), the map writers of :mod:`sml.pipelines`, :mod:`sml.report`
and the data loaders all take their names from here. The layout (docs/design.md, "Run directory")::

    RUN_DIR/
      metrics.json  metrics.csv  curves.json  frames.json  stats.json  diagnostics.json
      run.json                         every file sml wrote here (run_folder)
      .sml-run.lock  .sml-run.r<rank>.journal   while a command writes the folder
      maps/<method>/<safe-id>.npy                   --save-maps npy16 (what `sml report` reads)
      anomaly_p/<method>/<folder>/<safe-id>.hdf5    --save-maps hdf5 (SegmentMeIfYouCan)
      fishyscapes/<method>/<safe-id>_anomaly.npy, <safe-id>_segmentation.npy
      npy/<method>/<safe-id>.npy   png16/<method>/<safe-id>.png
      report/index.html            `sml report` / --report
      .partial/                    resume state and temporary maps while a run is unfinished
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from sml.errors import InputError

__all__ = ["MANIFEST", "LOCK", "JOURNAL", "journal_name", "METRICS", "METRICS_CSV", "CURVES", "FRAMES", "STATS",
           "DIAGNOSTICS", "RUN_FILES", "PARTIAL", "REPORT", "REPORT_INDEX", "MAP_FOLDERS", "MAP_FORMATS",
           "RUN_FOLDERS", "safe_name", "map_path", "map_files", "segmentation_path"]

#: the run's record of every file sml wrote into the folder (:mod:`sml.utils.run_folder`)
MANIFEST = "run.json"
#: held (flock) while a command writes the folder
LOCK = ".sml-run.lock"
#: the names rank ``r`` is about to write, folded into run.json when the command ends
JOURNAL = re.compile(r"^\.sml-run\.r(\d+)\.journal$")

METRICS = "metrics.json"
METRICS_CSV = "metrics.csv"
CURVES = "curves.json"
FRAMES = "frames.json"
STATS = "stats.json"
DIAGNOSTICS = "diagnostics.json"
#: the files ``sml eval`` writes at the top of its run folder, in the order written (``metrics.json`` last:
#: a folder without it holds no finished run)
RUN_FILES = (METRICS_CSV, CURVES, FRAMES, STATS, DIAGNOSTICS, METRICS)
#: the run's partial state (resume chunks, temporary float32 maps), inside the run folder
PARTIAL = ".partial"
#: the HTML report's folder and page
REPORT = "report"
REPORT_INDEX = "index.html"
#: ``--save-maps`` format -> its folder in the run
MAP_FOLDERS = {"hdf5": "anomaly_p", "fishyscapes": "fishyscapes", "npy": "npy", "npy16": "maps", "png16": "png16"}
MAP_FORMATS = tuple(MAP_FOLDERS)
#: the folders of per-frame outputs and of the report
RUN_FOLDERS = (*MAP_FOLDERS.values(), REPORT)

_OUTSIDE = re.compile(r"[^A-Za-z0-9._-]+")


def journal_name(rank: int) -> str:
    """The journal file of rank ``rank``."""
    return f".sml-run.r{rank}.journal"


def safe_name(text: str, max_len: int | None = None) -> str:
    """The file name of ``text`` (a frame id, a file stem, a label): each run of characters outside
    ``[A-Za-z0-9._-]`` becomes one ``_``, except at either end, where such runs and dots are dropped;
    then at most ``max_len`` characters.

    A name already of that form is its own file name: every frame id a data set gives, so the maps
    of existing runs keep their names. ``InputError`` when nothing is left.
    """
    name = _OUTSIDE.sub(" ", str(text)).strip(" .").replace(" ", "_")
    if not name:
        raise InputError(f"frame id {text!r} gives an empty file name; rename the frame")
    return name[:max_len]


def map_path(out: str | os.PathLike, fmt: str, method: str, dataset: str, frame_id: str) -> Path:
    """Where ``fmt`` puts the score of ``frame_id`` (for fishyscapes: the ``_anomaly.npy`` file); ``dataset``:
    the folder of the hdf5 maps (the SegmentMeIfYouCan tool's name of the split, else the kind)."""
    name = safe_name(frame_id)
    if fmt not in MAP_FOLDERS:
        raise InputError(f"unknown map format {fmt!r}; choose from {', '.join(MAP_FORMATS)}")
    folder = Path(out) / MAP_FOLDERS[fmt] / method
    if fmt == "hdf5":
        return folder / dataset / f"{name}.hdf5"
    if fmt == "fishyscapes":
        return folder / f"{name}_anomaly.npy"
    return folder / f"{name}.png" if fmt == "png16" else folder / f"{name}.npy"


def segmentation_path(anomaly_path: Path) -> Path:
    """The fishyscapes segmentation file beside its ``_anomaly.npy`` score file."""
    return anomaly_path.with_name(anomaly_path.name[: -len("_anomaly.npy")] + "_segmentation.npy")


def map_files(out: str | os.PathLike, fmt: str, method: str, dataset: str, frame_id: str) -> list[Path]:
    """Every file written for one frame's map in ``fmt`` (fishyscapes: the score and the segmentation)."""
    path = map_path(out, fmt, method, dataset, frame_id)
    return [path, segmentation_path(path)] if fmt == "fishyscapes" else [path]
