"""What the report shows, as data: :func:`collect_report` reads a run and draws its figures into a
:class:`ReportData`; ``sml.report.html`` only turns that into the page.

Numbers stay numbers here (NaN when absent, with the reason why); the page
formats them.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from sml.report.curves import colour_legend, plot_curves
from sml.report.gallery import FrameRow, PanelOptions, dataset_ranges, render_frames
from sml.report.rundir import Run
from sml.utils.run_layout import MAP_FOLDERS

__all__ = ["ReportData", "RunSummary", "MetricsTable", "MethodRow", "MetricCell", "MethodSettings",
           "StatsTable", "StatsRow", "DiagnosticsSection", "DiagnosticsRow", "Gallery", "Figure",
           "collect_report", "metrics_table", "as_float"]


def as_float(v: Any) -> float:
    """``float(v)``, NaN for anything that is not a number (None, text)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# ------------------------------------------------------------------ the data the page shows

@dataclass(frozen=True)
class RunSummary:
    """What the run was (shown under the metrics table): data set, model, pixel counts, conventions."""

    dataset: str
    frames: str
    model: str
    stats: str | None
    pixels: tuple[int, int] | None          # anomaly, in-distribution
    fpr95_convention: str
    protocol: str
    frames_scored: str | None             # only when it differs from the evaluated frames
    component_track: str | None
    notes: list[str]
    range_text: str                       # how heatmaps are coloured


@dataclass(frozen=True)
class MetricCell:
    """One number of the metrics table: ``kind`` "pct" (a fraction shown in percent) or "num"; a NaN
    value of a metric column carries its ``reason`` and footnote number."""

    value: float
    kind: str = "pct"
    best: bool = False
    reason: str | None = None
    note: int | None = None


@dataclass(frozen=True)
class MethodRow:
    method: str
    cells: list[MetricCell]
    components: list[MetricCell]


@dataclass(frozen=True)
class MethodSettings:
    """A method's settings (JSON text) and its component-metric settings (display name, value)."""

    method: str
    settings: str | None
    components: list[tuple[str, Any]]


@dataclass(frozen=True)
class MetricsTable:
    columns: list[str]
    component_columns: list[str]
    rows: list[MethodRow]
    notes: list[str]                      # footnotes of the n/a cells, numbered from 1
    settings: list[MethodSettings]


@dataclass(frozen=True)
class StatsRow:
    id: int
    name: str
    count: float
    mean: float
    std: float
    var: float

    @property
    def unused(self) -> bool:
        """Fewer than 2 pixels: SML cannot standardize this class."""
        return not (self.count > 1)


@dataclass(frozen=True)
class StatsTable:
    """stats.json's per-class table, or the sizes that disagree (``mismatch``: classes, mean, var, count)."""

    rows: list[StatsRow]
    source: list[tuple[str, str]]
    mismatch: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class DiagnosticsRow:
    name: str
    anomaly_share: float
    anomaly_pixels: int
    inlier_pixels: int
    train_mean: float
    train_std: float
    inlier_median: float | None           # None: no such pixels
    anomaly_median: float | None
    z: float                              # (anomaly median - training mean) / training std


@dataclass(frozen=True)
class Figure:
    """A figure written under report/img: its PNG and SVG names, and the PNG's display size."""

    png: str
    svg: str | None = None
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class DiagnosticsSection:
    reading: str
    figure: Figure
    rows: list[DiagnosticsRow]


@dataclass(frozen=True)
class Gallery:
    rows: list[FrameRow]
    methods: list[str]                    # methods with saved maps, in table order
    total: int                            # frames in frames.json
    legend: Figure | None
    frames_json_missing: bool


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows, built by :func:`collect_report`."""

    title: str
    run_root: str
    method_count: int
    generated: str
    summary: RunSummary
    metrics: MetricsTable
    curves: Figure | None
    diagnostics: DiagnosticsSection | None
    stats: StatsTable | None
    gallery: Gallery
    warnings: list[str]


# ------------------------------------------------------------------ building it from a run

def collect_report(run: Run, img_dir: Path, *, ranges: str = "dataset", options: PanelOptions = PanelOptions(),
                   max_frames: int | None = None, diag: Any = None, show_progress: bool = True) -> ReportData:
    """Read ``run``, write its figures and panels under ``img_dir`` and return what the page shows.

    ``ranges``: ``"dataset"`` or ``"image"`` (``options.ranges`` is filled in
    from it); ``diag``: the run's ``ClassDiagnostics`` or None.
    """
    m = run.metrics
    dataset = str(m.get("dataset", run.root.name))
    curves = _curves(run, img_dir, dataset)
    gallery, range_text = _gallery(run, img_dir, ranges, options, max_frames, show_progress)
    return ReportData(
        title=f"sml report: {dataset}", run_root=str(run.root.resolve()), method_count=len(run.methods),
        generated=time.strftime("%Y-%m-%d %H:%M"), summary=run_summary(m, range_text),
        metrics=metrics_table(run), curves=curves,
        diagnostics=_diagnostics(diag, img_dir) if diag is not None else None,
        stats=stats_table(run.stats) if run.stats else None, gallery=gallery, warnings=list(run.warnings))


def _curves(run: Run, img_dir: Path, dataset: str) -> Figure | None:
    if not run.curves:
        return None
    m = run.metrics
    px = m.get("pixels", {}) or {}
    a_, i_ = as_float(px.get("anomaly")), as_float(px.get("inlier"))
    pos = a_ / (a_ + i_) if math.isfinite(a_) and math.isfinite(i_) and a_ + i_ > 0 else None
    png, svg = plot_curves(run.curves, img_dir / "curves", title=f"{dataset} ({m.get('frames', '?')} frames)",
                           positive_fraction=pos)
    return Figure(png.name, svg.name)


def _gallery(run: Run, img_dir: Path, ranges: str, options: PanelOptions, max_frames: int | None,
             show_progress: bool) -> tuple[Gallery, str]:
    """Colour ranges, the legend and the panels; also the sentence saying how heatmaps are coloured."""
    frames = list(run.frames or [])
    total = len(frames)
    chosen = frames if max_frames is None else frames[:max_frames]
    map_methods = [mm for mm in run.methods if (run.root / MAP_FOLDERS["npy16"] / mm).is_dir()]
    legend = None
    if ranges == "dataset":
        rng = dataset_ranges(run, map_methods, frames)
        range_text = ("one fixed range per method, the 1st-99th percentile of its scores over all "
                      f"{total} frames (so frames are comparable); the legend shows each range, values "
                      "outside it are clipped.")
        if rng:
            (png,) = colour_legend(rng, img_dir / "legend", cmap=options.cmap,
                                   note="colour range per method: 1st-99th percentile over the data set")
            legend = Figure(png.name)
        options = PanelOptions(rng, options.cmap, options.tile_width, options.panel_format)
    else:
        range_text = ("each heatmap uses its own frame's 1st-99th percentile (printed under it): compare "
                      "shapes, not brightness, across frames.")
        options = PanelOptions("image", options.cmap, options.tile_width, options.panel_format)
    rows = render_frames(run, chosen, map_methods, options, img_dir, show_progress) if chosen else []
    return Gallery(rows, map_methods, total, legend, run.frames is None), range_text


def run_summary(m: Mapping[str, Any], range_text: str) -> RunSummary:
    """The facts of metrics.json the page states beside the table."""
    px = m.get("pixels", {}) or {}
    a_, i_ = as_float(px.get("anomaly")), as_float(px.get("inlier"))
    scored = m.get("frames_scored")
    return RunSummary(
        dataset=str(m.get("dataset", "?")), frames=str(m.get("frames", "?")), model=str(m.get("model", "?")),
        stats=str(m["stats"]) if m.get("stats") else None,
        pixels=(int(a_), int(i_)) if math.isfinite(a_) and math.isfinite(i_) else None,
        fpr95_convention=str(m.get("fpr95_convention", "interpolated")),
        protocol=str(m.get("protocol", "exact")),
        frames_scored=str(scored) if scored is not None and scored != m.get("frames") else None,
        component_track=str(m["component_track"]) if m.get("component_track") else None,
        notes=[str(n) for n in m.get("notes") or []], range_text=range_text)


# ------------------------------------------------------------------ metrics table

_METRIC_COLUMNS = [
    # key, heading, kind, better
    ("auroc", "AUROC %", "pct", "max"),
    ("ap", "AP %", "pct", "max"),
    ("fpr95", "FPR@95 % (interpolated)", "pct", "min"),
    ("fpr95_threshold", "FPR@95 % (threshold)", "pct", "min"),
    ("threshold_at_95tpr", "threshold at 95% TPR (score)", "num", None),
    ("best_f1_threshold", "best-F1 threshold (score)", "num", None),
]
_ALWAYS_SHOWN = ("auroc", "ap", "fpr95")

# SegmentMeIfYouCan component metrics (sml.metrics.ComponentMetrics keys) shown as table columns, in percent;
# every other numeric component entry (thresholds, sizes, counts) goes to the folded settings.
_COMPONENT_COLUMNS = [("siou", "sIoU %"), ("ppv", "PPV %"), ("mean_f1", "mean F1 %")]
_COMPONENT_NAMES = {"siou_pred": "sIoU of predicted components", "threshold": "component threshold (score)",
                    "frames": "frames", "min_pred_size": "min. predicted component size (px)",
                    "min_gt_size": "min. ground-truth component size (px)"}


def _components(run: Run, m: str) -> dict[str, Any]:
    d = run.metrics["methods"].get(m)
    comp = d.get("components") if isinstance(d, dict) else None
    return comp if isinstance(comp, dict) else {}


def nan_reason(run: Run, method: str, key: str) -> str:
    """Why a metric is NaN: the run's own reason when it states one, else what the pixel counts imply."""
    m = run.metrics["methods"].get(method, {})
    reasons = m.get("reasons") if isinstance(m.get("reasons"), dict) else {}
    for r in (reasons.get(key), m.get(f"{key}_reason"), m.get("reason"), run.metrics.get("reason")):
        if r:
            return str(r)
    px = run.metrics.get("pixels", {}) or {}
    if as_float(px.get("anomaly")) == 0:
        return "no anomaly pixels in the evaluated frames"
    if as_float(px.get("inlier")) == 0:
        return "no in-distribution pixels in the evaluated frames"
    if key in ("threshold_at_95tpr", "best_f1_threshold"):
        return "not written by this run"
    return "not computed by this run"


def metrics_table(run: Run) -> MetricsTable:
    """One row per method: the metric columns any method has (AUROC, AP, FPR@95 always), the best value
    per column marked, each NaN with its reason as a footnote; then the component metrics."""
    methods = run.metrics["methods"]
    present = {k for m in methods for k in _components(run, m)}
    comp_cols = [(k, h) for k, h in _COMPONENT_COLUMNS if k in present]
    cols = [c for c in _METRIC_COLUMNS if any(c[0] in methods[m] for m in methods) or c[0] in _ALWAYS_SHOWN]
    best = _best_values(methods, cols)
    notes: list[str] = []
    rows = []
    for m, d in methods.items():
        cells = []
        for key, _, kind, _ in cols:
            v = as_float(d.get(key))
            if math.isfinite(v):
                cells.append(MetricCell(v, kind, best=key in best and v == best[key]))
            else:
                reason = nan_reason(run, m, key)
                cells.append(MetricCell(v, kind, reason=reason, note=_note(notes, f"{m}, {key}: {reason}")))
        comp = _components(run, m)
        rows.append(MethodRow(m, cells, [MetricCell(as_float(comp.get(k))) for k, _ in comp_cols]))
    return MetricsTable([h for _, h, _, _ in cols], [h for _, h in comp_cols], rows, notes,
                        _method_settings(run))


def _best_values(methods: Mapping[str, Any], cols: list[tuple[str, str, str, str | None]]) -> dict[str, float]:
    """Per column that has a better direction, its best finite value, when at least two methods have one."""
    best: dict[str, float] = {}
    for key, _, _, better in cols:
        vals = [as_float(d.get(key)) for d in methods.values()]
        vals = [v for v in vals if math.isfinite(v)]
        if better and len(vals) > 1:
            best[key] = (max if better == "max" else min)(vals)
    return best


def _note(notes: list[str], text: str) -> int:
    if text not in notes:
        notes.append(text)
    return notes.index(text) + 1


def _method_settings(run: Run) -> list[MethodSettings]:
    out = []
    for m, d in run.metrics["methods"].items():
        s = d.get("settings")
        extra = {_COMPONENT_NAMES.get(k, k): v for k, v in _components(run, m).items()
                 if k not in dict(_COMPONENT_COLUMNS) and isinstance(v, (int, float, str)) and v is not None}
        if s or extra:
            out.append(MethodSettings(m, json.dumps(s, sort_keys=True) if s else None, list(extra.items())))
    return out


# ------------------------------------------------------------------ class statistics, diagnostics

def stats_table(stats: Mapping[str, Any]) -> StatsTable:
    """stats.json as table rows (std from the variance; count NaN when absent)."""
    mean = np.asarray(stats.get("mean", []), dtype=np.float64)
    n = int(stats.get("num_classes", mean.size))
    var = np.asarray(stats.get("var", [math.nan] * n), dtype=np.float64)
    count = np.asarray(stats.get("count", [math.nan] * n), dtype=np.float64)
    names = list(stats.get("class_names") or [])
    names += [f"class {i}" for i in range(len(names), n)]
    source = [(k, str(stats[k])) for k in ("model", "data", "created") if stats.get(k)]
    if not (mean.size == var.size == count.size == n):
        return StatsTable([], source, (n, mean.size, var.size, count.size))
    rows = [StatsRow(i, str(names[i]), float(count[i]), float(mean[i]),
                     math.sqrt(var[i]) if var[i] >= 0 else math.nan, float(var[i])) for i in range(n)]
    return StatsTable(rows, source)


def _diagnostics(diag: Any, img_dir: Path) -> DiagnosticsSection:
    """Draw the per-class diagnostics figure; the reading and the top classes' numbers."""
    from sml.diagnostics import explain, plot_diagnostics, ranked_classes

    summary = diag.compute()
    png, svg = plot_diagnostics(summary, img_dir / "diagnostics", top=10)
    with Image.open(png) as im:  # drawn at 150 dpi: shown at 100 dpi, so text matches the page's size
        size = (round(im.width / 1.5), round(im.height / 1.5))
    rows = []
    for c in ranked_classes(summary, 10):
        a, i = c["max_logit"]["anomaly"], c["max_logit"]["inlier"]
        mu, sd = as_float(c["train_mean"]), as_float(c["train_std"])
        z = (as_float(a["median"]) - mu) / sd if a["pixels"] and math.isfinite(mu) and sd > 0 else math.nan
        rows.append(DiagnosticsRow(c["name"], c["anomaly_share"], c["anomaly_pixels"], c["inlier_pixels"], mu, sd,
                                   i["median"] if i["pixels"] else None, a["median"] if a["pixels"] else None, z))
    return DiagnosticsSection(explain(summary), Figure(png.name, svg.name, size), rows)
