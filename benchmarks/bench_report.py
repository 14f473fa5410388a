"""Per-frame panel cost: Pillow composition (sml.report.frame_panel + PNG) vs the same figure in matplotlib;
per-frame cost of the per-class diagnostics (sml.diagnostics) with the scaled-floor binning vs a binary search.

Both variants run side by side in one process on a real Road Anomaly frame
(1280x720, three synthetic maps); the table reports medians of several
repeats and their ratio, which is what stays meaningful on a busy machine.
Run: .venv/bin/python benchmarks/bench_report.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from sml.report import frame_panel, heatmap
from sml.report.images import detection_tile, label_tile

SHARED = Path(os.environ.get("SML_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def load_frame():
    ra = SHARED / "data/road_anomaly/RoadAnomaly_jpg"
    name = json.loads((ra / "frame_list.json").read_text())[0].rsplit(".", 1)[0]
    image = np.asarray(Image.open(ra / "frames" / f"{name}.jpg").convert("RGB"))
    labels = (np.asarray(Image.open(ra / "frames" / f"{name}.labels" / "labels_semantic.png")) == 2).astype(np.uint8)
    rng = np.random.default_rng(0)
    maps = {m: (labels * 3 + s * rng.standard_normal(labels.shape)).astype(np.float32)
            for m, s in (("sml", 0.5), ("max_logit", 1.0), ("msp", 2.0))}
    return image, labels, maps


def pillow_panel(image, labels, maps, thresholds, fmt: str = "PNG") -> bytes:
    panel = frame_panel(image, labels, maps, thresholds, ranges={m: (-1.0, 4.0) for m in maps}, title="frame")
    buf = io.BytesIO()
    Image.fromarray(panel).save(buf, format=fmt, **({"compress_level": 1} if fmt == "PNG" else {"quality": 92}))
    return buf.getvalue()


def pillow_panel_jpeg(image, labels, maps, thresholds) -> bytes:
    return pillow_panel(image, labels, maps, thresholds, "JPEG")


def matplotlib_panel(image, labels, maps, thresholds) -> bytes:
    # The straightforward matplotlib version of the same 2 x (1 + methods) figure, at a
    # similar pixel size (1630 x 640), with colour bars; tiles reuse sml's overlay colours.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = 1 + len(maps)
    fig = Figure(figsize=(16.3, 6.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, n)
    size = (400, 225)
    small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("image")
    axes[1, 0].imshow(label_tile(small, labels, size))
    axes[1, 0].set_title("ground truth")
    for j, (m, a) in enumerate(maps.items(), start=1):
        im = axes[0, j].imshow(a, cmap="inferno", vmin=-1.0, vmax=4.0)
        fig.colorbar(im, ax=axes[0, j], orientation="horizontal", fraction=0.05)
        axes[0, j].set_title(f"{m}: score")
        axes[1, j].imshow(detection_tile(small, a, thresholds[m], labels, size))
        axes[1, j].set_title(f"{m}: detections")
    for ax in axes.ravel():
        ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def heatmap_only(image, labels, maps, thresholds) -> bytes:
    return heatmap(maps["sml"], -1.0, 4.0).tobytes()[:1]


def timed(fn, args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    image, labels, maps = load_frame()
    thresholds = {m: 1.5 for m in maps}
    data = (image, labels, maps, thresholds)
    rows = []
    # interleave the variants so load changes on a shared machine hit both alike
    fns = {"Pillow frame_panel + PNG (sml.report)": pillow_panel,
           "Pillow frame_panel + JPEG (--panel-format jpeg)": pillow_panel_jpeg,
           "matplotlib figure + PNG (same content)": matplotlib_panel,
           "heatmap() of one 1280x720 map": heatmap_only}
    for fn in fns.values():
        fn(*data)  # warm-up: imports, font and colormap caches
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn, data))
    base = statistics.median(times["Pillow frame_panel + PNG (sml.report)"])
    for k in fns:
        t = statistics.median(times[k])
        rows.append((k, t, t / base))
    print(f"panel of one 1280x720 frame, 3 methods; median of {args.repeats} repeats")
    print(f"| {'variant':<48} | {'seconds':>8} | {'x Pillow':>8} |")
    print(f"| {'-' * 48} | {'-' * 8} | {'-' * 8} |")
    for name, t, r in rows:
        print(f"| {name:<48} | {t:8.3f} | {r:8.2f} |")


def bench_diagnostics(repeats: int) -> None:
    """ClassDiagnostics.update_from_predictions on one 1280x720 frame: Bins.index (scaled floor + one edge
    comparison, as NumPy's uniform histogram) vs np.searchsorted over the edges (same slots)."""
    from sml.diagnostics import MAX_LOGIT_BINS, ClassDiagnostics
    from sml.diagnostics.core import Bins

    image, labels, maps = load_frame()
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 19, labels.shape).astype(np.uint8)
    ml = (8 + 3 * rng.standard_normal(labels.shape)).astype(np.float32)
    score = maps["sml"]
    fast = Bins.index

    def search(self, values):
        return np.searchsorted(self.edges, np.asarray(values, dtype=np.float64), side="right")

    assert np.array_equal(fast(MAX_LOGIT_BINS, ml), search(MAX_LOGIT_BINS, ml))
    times: dict[str, list[float]] = {"scaled floor (sml)": [], "searchsorted": []}
    for _ in range(repeats + 1):
        for name, fn in (("scaled floor (sml)", fast), ("searchsorted", search)):
            Bins.index = fn
            try:
                d = ClassDiagnostics(19)
                times[name].append(timed(d.update_from_predictions, (pred, ml, labels, score)))
            finally:
                Bins.index = fast
    base = statistics.median(times["scaled floor (sml)"][1:])
    print(f"\nper-class diagnostics update, one 1280x720 frame; median of {repeats} repeats")
    print(f"| {'binning':<48} | {'seconds':>8} | {'x sml':>8} |")
    print(f"| {'-' * 48} | {'-' * 8} | {'-' * 8} |")
    for k, ts in times.items():
        t = statistics.median(ts[1:])
        print(f"| {k:<48} | {t:8.3f} | {t / base:8.2f} |")


if __name__ == "__main__":
    main()
    bench_diagnostics(5)
