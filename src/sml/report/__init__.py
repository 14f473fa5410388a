"""Visualization: colour heatmaps, overlays, per-frame panels, ROC / PR figures, the HTML report.

Panels are composed with Pillow (fast for hundreds of frames); matplotlib draws
only the curves and the colour legend. ``build_report(run_dir)`` reads a run
directory (docs/design.md, "Run directory") and writes ``report/index.html``.
"""
from sml.report.curves import colour_legend, plot_curves
from sml.report.html import build_report, dataset_ranges
from sml.report.images import colormap_lut, colour_bar_strip, frame_panel, heatmap, overlay, robust_range
from sml.report.rundir import Run, frame_numbers, load_run

__all__ = ["heatmap", "overlay", "frame_panel", "plot_curves", "colour_legend", "build_report",
           "frame_numbers", "load_run", "Run", "dataset_ranges", "robust_range", "colormap_lut", "colour_bar_strip"]
