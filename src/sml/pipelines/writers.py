"""Per-frame output files in the formats other tools read (datasets.md, "Outputs").

Every file goes through :mod:`sml.utils.atomic`, so an interrupted run never
leaves a half-written map behind; a file that exists is complete.

Formats (``--save-maps``):

``hdf5``
    SegmentMeIfYouCan: ``<out>/anomaly_p/<method>/<dataset>/<frame-id>.hdf5``,
    key ``value``, float16, gzip.
``fishyscapes``
    ``<out>/fishyscapes/<method>/<frame-id>_anomaly.npy`` (float32 score) and
    ``<frame-id>_segmentation.npy`` (uint8 train ids of the prediction).
``npy``
    ``<out>/npy/<method>/<frame-id>.npy``, float32.
``npy16``
    ``<out>/maps/<method>/<frame-id>.npy``, float16: the maps ``sml report`` reads.
``png16``
    ``<out>/png16/<method>/<frame-id>.png``, 16-bit grey PNG. Each frame is scaled
    linearly from its own minimum (0) to its maximum (65535); the two ends are
    stored in the PNG text chunks ``sml_min`` and ``sml_max`` so that
    ``score = sml_min + v / 65535 * (sml_max - sml_min)`` (see :func:`read_png16`).
    The order of the scores within a frame is kept (up to 16-bit rounding).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from sml.errors import InputError
from sml.utils import atomic
# Where each format puts a frame's map, and the one file-name sanitiser, are the run layout's
# (sml.utils.run_layout); the names stay importable from here.
from sml.utils.run_layout import MAP_FORMATS, map_files, map_path, safe_name  # noqa: F401
from sml.utils.run_layout import segmentation_path as _segmentation_path

FORMATS = MAP_FORMATS


def parse_formats(values: Iterable[str] | None) -> list[str]:
    """Validate ``--save-maps`` values (comma-separated or repeated); keeps order, drops repeats."""
    out: list[str] = []
    for value in values or []:
        for fmt in str(value).split(","):
            fmt = fmt.strip().lower()
            if not fmt:
                continue
            if fmt not in FORMATS:
                raise InputError(f"unknown map format {fmt!r} in --save-maps; choose from {', '.join(FORMATS)}")
            if fmt not in out:
                out.append(fmt)
    return out


def write_hdf5(path: Path, anomaly: np.ndarray) -> None:
    """SegmentMeIfYouCan HDF5: dataset ``value``, float16, gzip (built in memory, then written atomically)."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        h5.create_dataset("value", data=np.asarray(anomaly, dtype=np.float16), compression="gzip")
    atomic.write_bytes(path, buf.getvalue())


def write_png16(path: Path, anomaly: np.ndarray) -> None:
    """16-bit PNG scaled per frame from min to max; the range is kept in text chunks."""
    from PIL import Image, PngImagePlugin

    a = np.asarray(anomaly, dtype=np.float64)
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    scale = 65535.0 / (hi - lo) if hi > lo else 0.0
    v = np.clip(np.rint((np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo) - lo) * scale), 0, 65535)
    info = PngImagePlugin.PngInfo()
    info.add_text("sml_min", repr(lo))
    info.add_text("sml_max", repr(hi))
    buf = io.BytesIO()
    Image.fromarray(v.astype(np.uint16)).save(buf, format="PNG", pnginfo=info)
    atomic.write_bytes(path, buf.getvalue())


def read_png16(path: str | os.PathLike) -> np.ndarray:
    """Read a map written by :func:`write_png16` back to float32 scores."""
    from PIL import Image

    with Image.open(path) as im:
        v = np.asarray(im, dtype=np.float64)
        lo, hi = float(im.text.get("sml_min", 0.0)), float(im.text.get("sml_max", 65535.0))
    return (lo + v / 65535.0 * (hi - lo)).astype(np.float32)


def _refuse_non_finite(anomaly: np.ndarray, dtype: type, path: Path, method: str, frame_id: str) -> None:
    """A benchmark submission takes finite scores only: refuse a map that is not finite in its stored dtype."""
    with np.errstate(over="ignore", invalid="ignore"):
        bad = int(np.count_nonzero(~np.isfinite(anomaly.astype(dtype, copy=False))))
    if bad:
        why = " (float16 overflows above 65504)" if dtype == np.float16 else ""
        raise InputError(f"{path}: the {method} map of frame {frame_id!r} has {bad} NaN or infinite value(s) as "
                         f"{np.dtype(dtype).name}{why}; it would enter a benchmark submission, so it is not "
                         "written. Check the model output and the method's settings.")


def write_map(out: str | os.PathLike, fmt: str, method: str, dataset: str, frame_id: str,
              anomaly: np.ndarray, prediction: np.ndarray | None = None) -> Path:
    """Write one frame's anomaly map (``H x W``) in ``fmt``; returns the path of the score file."""
    anomaly = np.asarray(anomaly)
    if anomaly.ndim != 2:
        raise InputError(f"anomaly map of frame {frame_id!r} must be H x W, got shape {anomaly.shape}")
    path = map_path(out, fmt, method, dataset, frame_id)
    if fmt in ("hdf5", "fishyscapes"):
        _refuse_non_finite(anomaly, np.float16 if fmt == "hdf5" else np.float32, path, method, frame_id)
    if fmt == "hdf5":
        write_hdf5(path, anomaly)
    elif fmt == "fishyscapes":
        atomic.save_npy(path, anomaly.astype(np.float32))
        if prediction is not None:
            atomic.save_npy(_segmentation_path(path), np.asarray(prediction).astype(np.uint8))
    elif fmt == "npy":
        atomic.save_npy(path, anomaly.astype(np.float32))
    elif fmt == "npy16":
        atomic.save_npy(path, anomaly.astype(np.float16))
    elif fmt == "png16":
        write_png16(path, anomaly)
    return path

