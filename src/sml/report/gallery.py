"""The report's gallery: per frame, read the image, labels and saved maps, draw and write its panel.

:func:`render_frames` returns one :class:`FrameRow` per frame (what the page
shows: the per-frame numbers, the panel and thumbnail paths, the problems
met); a file that cannot be read marks its frame instead of stopping the others.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image

from sml.errors import InputError
from sml.report.images import RangeSpec, frame_panel, robust_range
from sml.report.rundir import Run, frame_numbers, read_eval_labels
from sml.utils.atomic import write_bytes
from sml.utils.progress import progress
from sml.utils.run_layout import safe_name

__all__ = ["FrameRow", "PanelOptions", "render_frames", "dataset_ranges", "NO_MAPS"]

THUMB_COL_WIDTH = 130   # thumbnail pixels per panel column (4 columns -> 520 px)
THUMB_MAX_WIDTH = 520
PANEL_NAME_LENGTH = 80  # characters of a frame id kept in its panel's file name
RANGE_SAMPLES = 20000   # map values sampled per frame for the data-set colour range

NO_MAPS = "no saved anomaly maps (run `sml eval` with --save-maps or --report)"  # a note, not an error


@dataclass
class FrameRow:
    """One gallery row: the frame, its per-method numbers (``ap``, ``fp_area``), its panel (paths
    relative to report/, absent when it could not be drawn) and the problems met reading its files."""

    id: str
    index: int
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    full: str | None = None
    thumb: str | None = None
    thumb_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class PanelOptions:
    """How panels are drawn: colour ``ranges`` (``"image"`` or per method), colormap, tile width and
    the full-size format (``"png"`` or ``"jpeg"``)."""

    ranges: RangeSpec = "image"
    cmap: str = "inferno"
    tile_width: int = 400
    panel_format: str = "png"


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise InputError(f"image {path} cannot be read ({exc}); is it truncated?") from None


def _unreadable_map(path: Path, exc: Exception) -> InputError:
    return InputError(f"anomaly map {path} cannot be read ({type(exc).__name__}: {exc}); it is truncated or "
                      "not a NumPy .npy file: delete it and write the maps again with `sml eval ... "
                      "--save-maps npy16` (or --report)")


def _load_map(path: Path) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
        return np.asarray(a, dtype=np.float32).squeeze()
    except (OSError, ValueError, EOFError) as exc:
        raise _unreadable_map(path, exc) from None


def dataset_ranges(run: Run, methods: Iterable[str], frames: list[dict[str, Any]],
                   low: float = 1.0, high: float = 99.0) -> dict[str, tuple[float, float]]:
    """Colour range per method: ``low``-``high`` percentiles of its saved maps over the data set.

    Each map contributes an evenly strided sample of about RANGE_SAMPLES values
    (memory-mapped reads), so the cost stays small for hundreds of frames.
    """
    out = {}
    for m in methods:
        parts = []
        for f in frames:
            p = run.own_map(m, f["id"])
            if p is not None:
                try:
                    a = np.load(p, mmap_mode="r", allow_pickle=False).reshape(-1)
                    step = max(1, a.size // RANGE_SAMPLES)
                    parts.append(np.asarray(a[::step], dtype=np.float32))
                except (OSError, ValueError, EOFError) as exc:
                    raise _unreadable_map(p, exc) from None
        if parts:
            out[m] = robust_range(np.concatenate(parts), low, high)
    return out


def _encode(img: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _thumb(panel: np.ndarray, cols: int) -> np.ndarray:
    w = min(THUMB_MAX_WIDTH, THUMB_COL_WIDTH * cols, panel.shape[1])
    h = max(1, round(panel.shape[0] * w / panel.shape[1]))
    return np.asarray(Image.fromarray(panel).resize((w, h), Image.LANCZOS, reducing_gap=2.0))


def _panel_names(frames: list[dict[str, Any]]) -> list[str]:
    """File names of the panels: the safe name of each id (at most 80 characters), made unique (two ids
    whose names are alike must not overwrite each other's panel)."""
    used: set[str] = set()
    names = []
    for i, f in enumerate(frames):
        name = safe_name(str(f["id"]), PANEL_NAME_LENGTH)
        if name in used:
            name = f"{name}_{i}"
        used.add(name)
        names.append(name)
    return names


def render_frames(run: Run, frames: list[dict[str, Any]], methods: list[str], options: PanelOptions,
                  img_dir: Path, show_progress: bool = True) -> list[FrameRow]:
    """Draw and write the panel and thumbnail of each frame (``img_dir/panels``, ``img_dir/thumbs``)."""
    rows = []
    thresholds = {m: run.threshold(m) for m in methods}
    names = _panel_names(frames)
    it = progress(frames, total=len(frames), desc="report", disable=None if show_progress else True)
    for i, f in enumerate(it):
        row = FrameRow(id=str(f["id"]), index=i)
        try:
            _draw_frame(run, f, row, names[i], methods, thresholds, options, img_dir)
        except (InputError, OSError, ValueError) as exc:
            row.problems.append(f"panel not drawn: {exc}")
        rows.append(row)
    return rows


def _draw_frame(run: Run, f: dict[str, Any], row: FrameRow, name: str, methods: list[str],
                thresholds: Mapping[str, float | None], options: PanelOptions, img_dir: Path) -> None:
    maps = {}
    for m in methods:
        p = run.own_map(m, row.id)
        if p is not None:
            maps[m] = _load_map(p)
    labels, lpath = _frame_labels(run, f, row.problems)
    image = _frame_image(run, f, maps, labels, row.problems)
    if labels is not None and maps and labels.shape != next(iter(maps.values())).shape:
        shape = next(iter(maps.values())).shape
        row.problems.append(f"labels {lpath} ({labels.shape[1]}x{labels.shape[0]}) and the maps "
                            f"({shape[1]}x{shape[0]}) differ in size: labels not shown")
        labels = None
    if not maps and labels is not None and labels.shape != image.shape[:2]:
        labels = None
    if not maps:
        row.problems.append(NO_MAPS)
    row.numbers = _frame_numbers(f, methods, maps, labels, thresholds)
    panel = frame_panel(image, labels, maps, thresholds, options.ranges, cmap=options.cmap,
                        tile_width=options.tile_width, title=row.id, numbers=row.numbers,
                        method_order=[m for m in methods if m in maps])
    _write_panel(row, panel, name, 1 + len(maps), options.panel_format, img_dir.parent)


def _frame_labels(run: Run, f: dict[str, Any], problems: list[str]) -> tuple[np.ndarray | None, Path | None]:
    """The frame's labels in the evaluation convention, or None (a problem noted when listed but unusable)."""
    lpath = run.resolve(f.get("eval_labels") or f.get("labels"))
    if lpath is None:
        return None, None
    if not lpath.is_file():
        problems.append(f"labels {lpath} not found")
        return None, lpath
    try:
        return read_eval_labels(lpath, run.label_table()), lpath
    except InputError as exc:
        problems.append(str(exc))
        return None, lpath


def _frame_image(run: Run, f: dict[str, Any], maps: Mapping[str, np.ndarray], labels: np.ndarray | None,
                 problems: list[str]) -> np.ndarray:
    """The frame's photo; a grey stand-in of the maps' (or labels') size when it is missing."""
    ipath = run.resolve(f.get("image"))
    if ipath is not None and ipath.is_file():
        return _read_rgb(ipath)
    problems.append(f"image {ipath} not found" if ipath else "frames.json gives no image")
    shape = next(iter(maps.values())).shape if maps else (labels.shape if labels is not None else None)
    return np.full((*(shape or (360, 640)), 3), 200, np.uint8)


def _frame_numbers(f: dict[str, Any], methods: list[str], maps: Mapping[str, np.ndarray],
                   labels: np.ndarray | None, thresholds: Mapping[str, float | None]) -> dict[str, dict[str, Any]]:
    """Per method the frame's ``ap`` / ``fp_area``: frames.json's values, the missing ones computed."""
    given = f.get("methods", {}) or {}
    numbers: dict[str, dict[str, Any]] = {}
    for m in methods:
        nums = dict(given.get(m, {}) or {})
        if m in maps and labels is not None and ("ap" not in nums or "fp_area" not in nums):
            for k, v in frame_numbers(maps[m], labels, thresholds.get(m)).items():
                nums.setdefault(k, v)
        numbers[m] = nums
    return numbers


def _write_panel(row: FrameRow, panel: np.ndarray, name: str, cols: int, panel_format: str,
                 report_dir: Path) -> None:
    full = f"img/panels/{name}.{'png' if panel_format == 'png' else 'jpg'}"
    thumb = f"img/thumbs/{name}.jpg"
    # PNG level 1: the noisy heatmaps barely compress better at higher levels, which cost 2-3x.
    write_bytes(report_dir / full, _encode(panel, "PNG", compress_level=1) if panel_format == "png"
                else _encode(panel, "JPEG", quality=92))
    t = _thumb(panel, cols)
    write_bytes(report_dir / thumb, _encode(t, "JPEG", quality=85))
    row.full, row.thumb, row.thumb_size = full, thumb, (t.shape[1], t.shape[0])
