"""Visualization: colour heatmaps, overlays, per-frame panels, ROC / PR figures, the HTML report.

Panels are composed with Pillow (fast for hundreds of frames); matplotlib draws
only the curves and the colour legend. ``build_report(run_dir)`` reads a run
directory (docs/design.md, "Run directory") and writes ``report/index.html``.
"""
import functools
from pathlib import Path
from typing import Any

from sml.report import html as _html
from sml.report.curves import colour_legend, plot_curves
from sml.report.html import dataset_ranges
from sml.report.images import colormap_lut, colour_bar_strip, frame_panel, heatmap, overlay, robust_range
from sml.report.rundir import Run, frame_numbers, load_run
from sml.utils.run_layout import METRICS, REPORT, REPORT_INDEX

__all__ = ["heatmap", "overlay", "frame_panel", "plot_curves", "colour_legend", "build_report",
           "frame_numbers", "load_run", "Run", "dataset_ranges", "robust_range", "colormap_lut", "colour_bar_strip"]


@functools.wraps(_html.build_report)
def build_report(run_dir: Any, *args: Any, **kwargs: Any) -> Path:
    # Inside the run folder (sml.utils.run_folder): report/ files are replaced only when this run wrote them,
    # never through a link, and every file written is listed in run.json.
    from sml.utils.run_folder import join_run

    if not (Path(run_dir) / METRICS).is_file():
        return _html.build_report(run_dir, *args, **kwargs)   # refused there, naming what is missing
    with join_run(run_dir, expected=[f"{REPORT}/{REPORT_INDEX}"]):
        return _html.build_report(run_dir, *args, **kwargs)
