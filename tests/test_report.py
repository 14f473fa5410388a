"""sml.report: heatmaps, overlays, panels, curves and the HTML report.

References are independent: matplotlib's own colormap + Normalize for the
heatmap colours, scikit-learn for per-frame AP and the curves, literal NumPy
for overlays and FP area. The run directory is built here from real Road
Anomaly frames (raw 0/2 labels, as `sml eval` records them) with synthetic maps.
"""
from __future__ import annotations

import json
import math
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sml.errors import InputError
from sml.report import build_report, frame_numbers, frame_panel, heatmap, overlay, plot_curves
from sml.report.images import FN_COLOUR, FP_COLOUR, TP_COLOUR, detection_tile
from sml.utils.atomic import save_npy, write_json

RA = Path("data/road_anomaly/RoadAnomaly_jpg")
METHODS = {"sml": 3.0, "max_logit": 6.0, "msp": 12.0}  # noise level: sml best, msp worst


# ------------------------------------------------------------------ run-dir builder (shared with the browser test)

def _smooth(mask: np.ndarray, k: int = 41) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    return uniform_filter(mask.astype(np.float32), size=k)


def make_run(shared: Path, root: Path, n_frames: int = 5, unlabelled: int = 1,
             with_stats: bool = True, frame_numbers_given: bool = True) -> Path:
    """A run directory like `sml eval --report` writes, from real Road Anomaly frames.

    The first ``n_frames`` frames of frame_list.json, labels referenced as the
    raw release files (0 normal / 2 anomaly); one more frame listed with no
    labels; float16 synthetic maps; metrics/curves from scikit-learn.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    from sml.pipelines.writers import safe_name

    ra = shared / RA
    names = json.loads((ra / "frame_list.json").read_text())[: n_frames + unlabelled]
    rng = np.random.default_rng(0)
    frames, pooled = [], {m: ([], []) for m in METHODS}
    for k, name in enumerate(names):
        stem = name.rsplit(".", 1)[0]
        lab_path = ra / "frames" / f"{stem}.labels" / "labels_semantic.png"
        raw = np.asarray(Image.open(lab_path))
        gt = (raw == 2).astype(np.float32)
        labelled = k < n_frames
        entry = {"id": stem, "image": str(ra / "frames" / name),
                 "labels": str(lab_path) if labelled else None, "methods": {}}
        for m, noise in METHODS.items():
            amap = 3.0 * _smooth(gt) + noise * rng.standard_normal(gt.shape).astype(np.float32)
            amap = _smooth(amap, 9) * 4 - 1
            save_npy(root / "maps" / m / f"{safe_name(stem)}.npy", amap.astype(np.float16))
            entry["methods"][m] = {}
            if labelled:
                a16 = amap.astype(np.float16).astype(np.float32)
                pooled[m][0].append(a16.ravel()[::7])
                pooled[m][1].append((raw == 2).ravel()[::7])
        frames.append(entry)
    metrics = {"dataset": "road-anomaly", "frames": n_frames, "pixels": {}, "model": "synthetic",
               "stats": "stats.json" if with_stats else None, "fpr95_convention": "interpolated", "methods": {}}
    curves = {}
    for m in METHODS:
        s = np.concatenate(pooled[m][0]).astype(np.float64)
        y = np.concatenate(pooled[m][1])
        fpr, tpr, thr = roc_curve(y, s)
        prec, rec, _ = precision_recall_curve(y, s)
        i95 = int(np.searchsorted(tpr, 0.95, side="left"))
        metrics["pixels"] = {"anomaly": int(y.sum()), "inlier": int(y.size - y.sum())}
        metrics["methods"][m] = {
            "auroc": roc_auc_score(y, s), "ap": average_precision_score(y, s),
            "fpr95": float(np.interp(0.95, tpr, fpr)), "fpr95_threshold": float(fpr[i95]),
            "threshold_at_95tpr": float(thr[i95]), "best_f1_threshold": float(np.median(s)),
            "settings": {"noise": METHODS[m]}}
        step = max(1, fpr.size // 400)
        curves[m] = {"roc": {"fpr": fpr[::step].tolist() + [1.0], "tpr": tpr[::step].tolist() + [1.0]},
                     "pr": {"precision": prec[::step].tolist(), "recall": rec[::step].tolist()},
                     "auroc": metrics["methods"][m]["auroc"], "ap": metrics["methods"][m]["ap"]}
    # A method that could not compute one number, with the run's stated reason.
    metrics["methods"]["msp"]["fpr95_threshold"] = math.nan
    metrics["methods"]["msp"]["reasons"] = {"fpr95_threshold": "threshold convention disabled in this run"}
    if frame_numbers_given:  # eval fills these; leave "msp" empty so the report computes them
        for f in frames:
            if f["labels"]:
                raw = np.asarray(Image.open(f["labels"]))
                lab = np.where(raw == 2, 1, 0).astype(np.uint8)
                for m in ("sml", "max_logit"):
                    a = np.load(root / "maps" / m / f"{safe_name(f['id'])}.npy").astype(np.float32)
                    nums = frame_numbers(a, lab, metrics["methods"][m]["threshold_at_95tpr"])
                    f["methods"][m] = {"ap": nums["ap"], "fp_area": nums["fp_area"]}
    write_json(root / "metrics.json", metrics)
    write_json(root / "curves.json", curves)
    write_json(root / "frames.json", frames)
    if with_stats:
        names19 = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                   "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                   "motorcycle", "bicycle"]
        count = rng.integers(1000, 10**7, 19).astype(float)
        count[16] = 0  # a class never predicted: flagged in the table
        write_json(root / "stats.json", {"num_classes": 19, "class_names": names19, "count": count.tolist(),
                                         "mean": rng.uniform(5, 15, 19).tolist(),
                                         "var": rng.uniform(1, 4, 19).tolist(), "model": "synthetic"})
    return root


# ------------------------------------------------------------------ heatmap / overlay

def test_heatmap_equals_matplotlib_colormap():
    import matplotlib
    from matplotlib.colors import Normalize

    rng = np.random.default_rng(1)
    a = rng.normal(size=(37, 53)).astype(np.float32)
    a[0, :5] = [-10, 10, -0.5, 0.5, 0.0]  # clipped ends and exact edges
    for cmap in ("inferno", "viridis"):
        got = heatmap(a, -0.5, 0.5, cmap=cmap)
        ref = np.round(matplotlib.colormaps[cmap](Normalize(-0.5, 0.5, clip=True)(a))[..., :3] * 255)
        assert got.dtype == np.uint8 and got.shape == (37, 53, 3)
        np.testing.assert_array_equal(got, ref.astype(np.uint8))


def test_heatmap_default_range_is_per_image_percentiles_and_nan_is_grey():
    a = np.linspace(0, 1, 10001, dtype=np.float32).reshape(1, -1).repeat(3, 0)
    a[1, 7] = np.nan
    got = heatmap(a)
    lo, hi = np.nanpercentile(a, [1, 99])
    np.testing.assert_array_equal(got[0], heatmap(a, lo, hi)[0])
    assert tuple(got[1, 7]) == (128, 128, 128)
    # an all-constant map draws (darkest colour), it does not divide by zero
    assert heatmap(np.ones((4, 4)))[0, 0].tolist() == heatmap(np.zeros((4, 4)), 0, 1)[0, 0].tolist()


@pytest.mark.parametrize("bad, kw, match", [
    (np.zeros((2, 3, 4)), {}, "H x W"),
    (np.zeros((4, 4)), {"vmin": 1.0, "vmax": 0.0}, "reversed"),
    (np.zeros((4, 4)), {"cmap": "no-such-map"}, "colormap"),
    (np.zeros((4, 4)), {"vmin": float("nan"), "vmax": 1.0}, "finite"),
])
def test_heatmap_rejects_bad_input(bad, kw, match):
    with pytest.raises(InputError, match=match):
        heatmap(bad, **kw)


def test_overlay_literal_blend():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    a = rng.uniform(-1, 2, (20, 30)).astype(np.float32)
    hm = heatmap(a, 0, 1).astype(np.float64)
    w = 0.7 * np.clip(a, 0, 1)[..., None]
    ref = np.clip(img * (1 - w) + hm * w + 0.5, 0, 255).astype(np.uint8)
    got = overlay(img, a, alpha=0.7, vmin=0, vmax=1)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
    # scores at or below vmin leave the photo untouched
    low = a <= 0
    np.testing.assert_array_equal(got[low], img[low])
    flat = overlay(img, a, alpha=1.0, vmin=0, vmax=1, weighted=False)
    np.testing.assert_array_equal(flat, heatmap(a, 0, 1))
    with pytest.raises(InputError, match="differ in size"):
        overlay(img, a[:10])


# ------------------------------------------------------------------ per-frame numbers

def test_frame_numbers_match_sklearn_with_ties_and_void():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(3)
    labels = (rng.uniform(size=(60, 80)) < 0.1).astype(np.uint8)
    labels[:5] = 255
    a = np.round(rng.normal(size=(60, 80)) + 2 * labels * (labels == 1), 1).astype(np.float32)  # ties
    valid = labels != 255
    got = frame_numbers(a, labels, threshold=1.0)
    assert got["ap"] == pytest.approx(average_precision_score(labels[valid] == 1, a[valid]), abs=1e-12)
    inl = labels == 0
    assert got["fp_area"] == pytest.approx(np.mean(a[inl] >= 1.0), abs=1e-15)
    assert got["anomaly_pixels"] == int((labels == 1).sum()) and got["inlier_pixels"] == int(inl.sum())
    none = frame_numbers(a, np.zeros_like(labels))
    assert math.isnan(none["ap"]) and math.isnan(none["fp_area"])


# ------------------------------------------------------------------ panels

def test_detection_tile_colours_tp_fp_fn_and_void():
    img = np.full((40, 40, 3), 128, np.uint8)
    labels = np.zeros((40, 40), np.uint8)
    labels[10:20, 10:20] = 1
    labels[:, 35:] = 255
    a = np.zeros((40, 40), np.float32)
    a[10:20, 10:15] = 5   # detected part of the anomaly: TP
    a[30:34, 0:4] = 5     # detected in-distribution: FP
    a[:, 36:] = 5         # detected on void: not coloured as FP
    t = detection_tile(img, a, 1.0, labels, (40, 40)).astype(int)

    def nearest(px):
        cols = {"tp": TP_COLOUR, "fp": FP_COLOUR, "fn": FN_COLOUR}
        return min(cols, key=lambda k: np.abs(np.array(cols[k]) - px).sum())
    assert nearest(t[12, 12]) == "tp" and nearest(t[12, 17]) == "fn" and nearest(t[31, 1]) == "fp"
    void = t[:, 36:].reshape(-1, 3)
    assert np.all(np.abs(void[:, 0] - void[:, 1]) < 20)  # grey stripes, no red / green
    assert len(np.unique(void[:, 0])) == 2


def test_frame_panel_layout_and_input_checks():
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    labels = np.zeros((90, 160), np.uint8)
    labels[40:60, 70:90] = 1
    maps = {"a": rng.normal(size=(90, 160)).astype(np.float32), "b": rng.normal(size=(90, 160))}
    p = frame_panel(img, labels, maps, {"a": 0.5, "b": None}, ranges={"a": (-2, 2)}, tile_width=120, title="x")
    assert p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3
    assert p.shape[1] == 6 + 3 * (120 + 6)  # image/GT column + one column per method
    # no labels, a photo at another resolution: still draws
    p2 = frame_panel(rng.integers(0, 256, (180, 320, 3), dtype=np.uint8), None, maps, tile_width=64)
    assert p2.shape[1] == 6 + 3 * (64 + 6)
    with pytest.raises(InputError, match="share one H x W"):
        frame_panel(img, labels[:10], maps)
    with pytest.raises(InputError, match="uint8 RGB"):
        frame_panel(img.astype(np.float32), labels, maps)


# ------------------------------------------------------------------ curves

def test_plot_curves_png_svg_and_legend(tmp_path):
    curves = {"good": {"roc": {"fpr": [0, 0.1, 1], "tpr": [0, 0.9, 1]},
                       "pr": {"precision": [1, 0.8, 0.1], "recall": [0, 0.9, 1]}, "auroc": 0.95, "ap": 0.8},
              "broken": {"roc": {"fpr": [0, 1], "tpr": [0, 1]}, "pr": {"precision": [0.1], "recall": [1]},
                         "auroc": float("nan"), "ap": None}}
    png, svg = plot_curves(curves, tmp_path / "c", title="t")
    assert png.suffix == ".png" and svg.suffix == ".svg"
    assert Image.open(png).size[0] > 800
    text = svg.read_text()
    assert "AUROC 95.00%" in text and "AP 80.00%" in text and "n/a" in text
    with pytest.raises(InputError, match="no 'tpr'"):
        plot_curves({"x": {"roc": {"fpr": [0, 1]}}}, tmp_path / "d")
    # the same curves give the same bytes (no date stamp, no random SVG ids): a report re-run changes nothing
    png2, svg2 = plot_curves(curves, tmp_path / "again", title="t")
    assert png2.read_bytes() == png.read_bytes() and svg2.read_bytes() == svg.read_bytes()


def test_render_page_from_report_data_alone():
    """The view needs no run: a hand-made ReportData gives the page, with the packaged CSS and JS inline."""
    from importlib import resources

    from sml.report.content import (Figure, Gallery, MethodRow, MethodSettings, MetricCell, MetricsTable,
                                    ReportData, RunSummary, StatsRow, StatsTable)
    from sml.report.gallery import FrameRow
    from sml.report.html import render_page

    nan = math.nan
    table = MetricsTable(
        ["AUROC %", "threshold at 95% TPR (score)"], ["sIoU %"],
        [MethodRow("sml", [MetricCell(0.91234, best=True), MetricCell(1.23456, "num")], [MetricCell(0.5)]),
         MethodRow("msp<x>", [MetricCell(0.8), MetricCell(nan, "num", reason="no <threshold>", note=1)],
                   [MetricCell(nan)])],
        ["msp<x>, threshold_at_95tpr: no <threshold>"],
        [MethodSettings("sml", '{"a": 1}', [("component threshold (score)", 1.25)])])
    summary = RunSummary("road-anomaly", "2", "erfnet", None, (10, 990), "interpolated", "exact", None, None,
                         ["hand-made"], "per image.")
    row = FrameRow("f<1>", 0, {"sml": {"ap": 0.5, "fp_area": None}}, ["labels x not found"],
                   "img/panels/f1.png", "img/thumbs/f1.jpg", (130, 40))
    data = ReportData("sml report: t", "/runs/t", 2, "2024-01-01 00:00", summary, table,
                      Figure("curves.png", "curves.svg"), None,
                      StatsTable([StatsRow(0, "road", 1.0, 5.0, 1.0, 1.0)], [("model", "erfnet")]),
                      Gallery([row], ["sml"], 3, None, False), [])
    page = render_page(data, 1.25)
    static = resources.files("sml.report") / "static"
    css, js = (static / "report.css").read_text(), (static / "report.js").read_text()
    assert "sortable" in css and "lightbox" in js  # the real files, not empty stand-ins
    assert f"<style>\n{css}</style>" in page and f"<script>\n{js}</script>" in page
    assert "stylesheet" not in page and "<script src" not in page
    metrics = re.search(r'<table id="metrics".*?</table>', page, re.S).group(0)
    assert '<td class="best">91.23</td>' in metrics and "<td>1.235</td>" in metrics and "<td>50.00</td>" in metrics
    assert '<td class="na" title="no &lt;threshold&gt;">n/a<sup>1</sup></td>' in metrics
    assert '<td class="na">n/a</td>' in metrics and "msp&lt;x&gt;" in metrics
    assert '<li>msp&lt;x&gt;, threshold_at_95tpr: no &lt;threshold&gt;</li>' in page
    assert "component threshold (score) 1.25" in page and "10 anomaly and 990 in-distribution" in page
    assert 'class="unused"' in page and "sec-diagnostics" not in page  # 1 pixel of road; no diagnostics
    gallery = re.search(r'<table id="gallery".*?</table>', page, re.S).group(0)
    assert 'data-id="f&lt;1&gt;"' in gallery and 'data-ap0="0.5"' in gallery and 'data-fp0=""' in gallery
    assert '<div class="warn">labels x not found</div></td>' in gallery and "1 of 3 frames" in page
    assert "in 1.2 s.</p>" in page  # 1.25 printed with one decimal


# ------------------------------------------------------------------ the report

class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids, self.tags = [], set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if "id" in a:
            self.ids.add(a["id"])
        for k in ("src", "href"):
            if a.get(k) and not a[k].startswith(("#", "data:")):
                self.links.append(a[k])


@pytest.mark.slow
def test_build_report_on_road_anomaly(shared, tmp_path):
    run = make_run(shared, tmp_path / "run")
    t0 = time.perf_counter()
    index = build_report(run, show_progress=False)
    seconds = time.perf_counter() - t0
    assert index == run / "report" / "index.html"
    page = index.read_text()
    doc = _Collect()
    doc.feed(page)
    assert {"metrics", "stats", "gallery", "curves-img"} <= doc.ids
    # self-contained: every link relative, inside report/, and present
    for link in doc.links:
        assert not re.match(r"^[a-z]+:", link) and not link.startswith("/"), link
        assert (index.parent / link).is_file(), link
    assert "<script src" not in page and "stylesheet" not in page
    assert 'class="warn"' not in page  # every frame's image, labels and maps were read
    # metrics table: every method, AUROC in percent, the NaN with its reason
    metrics = json.loads((run / "metrics.json").read_text())
    for m, d in metrics["methods"].items():
        assert f">{m}</th>" in page
        assert f"{100 * d['auroc']:.2f}" in page
    assert "threshold convention disabled in this run" in page
    # gallery: 6 frames, lazy thumbnails linking to full-size PNG panels
    thumbs = [a for t, a in doc.tags if t == "img" and "thumb" in a.get("class", "")]
    assert len(thumbs) == 6 and all(a.get("loading") == "lazy" for a in thumbs)
    full = [a["href"] for t, a in doc.tags if t == "a" and "full" in a.get("class", "")]
    assert len(full) == 6 and all(h.endswith(".png") for h in full)
    assert Image.open(index.parent / full[0]).size[0] == 6 + 4 * 406
    # per-frame numbers the report computed itself (msp) equal the reference
    frames = json.loads((run / "frames.json").read_text())
    f0 = frames[0]
    raw = np.asarray(Image.open(f0["labels"]))
    from sml.pipelines.writers import safe_name
    a = np.load(run / "maps" / "msp" / f"{safe_name(f0['id'])}.npy").astype(np.float32)
    ref = frame_numbers(a, (raw == 2).astype(np.uint8), metrics["methods"]["msp"]["threshold_at_95tpr"])
    row = re.search(rf'<tr data-index="0"[^>]*>', page).group(0)
    assert f'data-ap2="{ref["ap"]!r}"' in row and f'data-fp2="{ref["fp_area"]!r}"' in row
    # the unlabelled frame: no AP, sorts last (empty sort key), ground truth cell says so
    last = re.search(rf'<tr data-index="5"[^>]*>', page).group(0)
    assert 'data-ap0=""' in last
    # class statistics with the never-predicted class flagged
    assert page.count('class="unused"') == 1 and ">train</td>" in page
    print(f"report of 6 frames x 3 methods: {seconds:.2f} s")


def test_build_report_handles_missing_parts(shared, tmp_path):
    run = make_run(shared, tmp_path / "run", n_frames=1, unlabelled=0, with_stats=False,
                   frame_numbers_given=False)
    (run / "curves.json").unlink()
    for m in METHODS:  # a baseline-only run that kept no maps for one method
        if m != "sml":
            for p in (run / "maps" / m).iterdir():
                p.unlink()
            (run / "maps" / m).rmdir()
    page = build_report(run, ranges="image", show_progress=False).read_text()
    assert "No stats.json" in page and "No curves.json" in page
    assert page.count('loading="lazy"') == 1
    assert build_report(run, max_frames=0, show_progress=False).is_file()


def test_build_report_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        build_report(tmp_path / "nope")
    with pytest.raises(InputError, match="metrics.json is missing"):
        build_report(tmp_path)
    (tmp_path / "metrics.json").write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        build_report(tmp_path)
    (tmp_path / "metrics.json").write_text('{"methods": {}}')
    with pytest.raises(InputError, match="ranges"):
        build_report(tmp_path, ranges="global")


def test_cli_report(shared, tmp_path, capsys):
    from sml.cli.main import main

    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    run = make_run(shared, tmp_path / "run", n_frames=1, unlabelled=0)
    assert main(["report", str(run), "--max-frames", "1", "--range", "image", "--tile-width", "200",
                 "--panel-format", "jpeg"]) == 0
    assert "index.html" in capsys.readouterr().out
    assert len(list((run / "report" / "img" / "panels").glob("*.jpg"))) == 1


# ------------------------------------------------------------------ paper-ready table, errors on the command line

def _with_components(run: Path) -> None:
    m = json.loads((run / "metrics.json").read_text())
    for k, name in enumerate(m["methods"]):
        m["methods"][name]["components"] = {"siou": 0.1 + 0.1 * k, "ppv": 0.5, "mean_f1": math.nan,
                                            "siou_pred": 0.3, "threshold": 1.25, "frames": 3,
                                            "min_pred_size": 500, "reason": None}
    write_json(run / "metrics.json", m)


def test_metrics_table_in_percent_with_component_names(shared, tmp_path):
    run = make_run(shared, tmp_path / "run", n_frames=1, unlabelled=0)
    _with_components(run)
    page = build_report(run, show_progress=False).read_text()
    table = re.search(r'<table id="metrics".*?</table>', page, re.S).group(0)
    heads = re.findall(r"<th[^>]*>([^<]*)</th>", table.split("<tbody>")[0])
    assert heads[:4] == ["method", "AUROC %", "AP %", "FPR@95 % (interpolated)"]
    assert heads[-3:] == ["sIoU %", "PPV %", "mean F1 %"]
    assert all(not re.fullmatch(r"[a-z_0-9]+", h) or h == "method" for h in heads)  # no raw keys
    assert "<td>10.00</td>" in table and "<td>50.00</td>" in table and 'class="na">n/a</td>' in table
    # everything else is folded away
    details = re.search(r'<details id="settings">.*?</details>', page, re.S).group(0)
    assert "component threshold (score) 1.25" in details and "noise" in details
    assert "min_pred_size" not in page and "min. predicted component size (px) 500" in details


def test_cli_report_errors_name_the_file(shared, tmp_path, capsys):
    from sml.cli.main import main

    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert err.startswith("sml: error: run directory") and str(tmp_path / "missing") in err and "{root}" not in err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "metrics.json is missing" in " ".join(capsys.readouterr().err.split())  # wrapped at spaces only
    run = make_run(shared, tmp_path / "run", n_frames=2, unlabelled=0)
    from sml.pipelines.writers import safe_name

    frames = json.loads((run / "frames.json").read_text())
    bad = run / "maps" / "max_logit" / f"{safe_name(frames[1]['id'])}.npy"
    bad.write_bytes(bad.read_bytes()[:2000])  # truncated
    for extra in ([], ["--range", "image"]):
        assert main(["report", str(run), *extra]) == 2
        err = capsys.readouterr().err.replace("\n", "")  # the CLI wraps long lines (also at hyphens)
        assert "sml: error:" in err and str(bad) in err and "truncated" in err, err
    assert (run / "report" / "index.html").is_file()  # with --range image the page is written, frame marked
    assert str(bad) in (run / "report" / "index.html").read_text()
    (run / "curves.json").unlink()
    bad.unlink()
    assert main(["report", str(run)]) == 0
    assert "sml: note: curves.json is missing" in capsys.readouterr().err


def test_report_diagnostics_section(shared, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_diagnostics import _person_case

    run = make_run(shared, tmp_path / "run", n_frames=1, unlabelled=0)
    page = build_report(run, show_progress=False).read_text()
    assert "sec-diagnostics" not in page  # no diagnostics.json: no section
    _person_case(True, sml=True).save(run / "diagnostics.json")
    page = build_report(run, show_progress=False).read_text()
    assert 'id="sec-diagnostics"' in page and 'src="img/diagnostics.png"' in page
    assert (run / "report" / "img" / "diagnostics.png").is_file() and (run / "report" / "img" / "diagnostics.svg").is_file()
    reading = re.search(r'<p id="diag-reading">(.*?)</p>', page, re.S).group(1)
    assert "predicted as person" in reading and "SML trails max logit here" in reading
    rows = re.findall(r'<tr><td class="txt">([^<]+)</td><td>([^<]+)</td>', page)
    assert rows[0] == ("person", "90.0")
    (run / "diagnostics.json").write_text("{}")
    with pytest.raises(InputError, match="not a diagnostics file"):
        build_report(run, show_progress=False)


def test_heatmap_and_overlay_colour_bar():
    from sml.report.images import MIN_BAR_WIDTH, colormap_lut, colour_bar_strip, robust_range

    rng = np.random.default_rng(3)
    a = rng.normal(size=(90, 400)).astype(np.float32)
    img = rng.integers(0, 256, (90, 400, 3), dtype=np.uint8)
    plain = heatmap(a)
    assert plain.shape == (90, 400, 3)  # the default is unchanged: no bar
    bar = heatmap(a, colour_bar=True, label="sml")
    assert bar.shape[0] > 90 and bar.shape[1] == 400
    np.testing.assert_array_equal(bar[:90], plain)  # the map itself as without the bar, same range
    strip = bar[90:]
    lo, hi = robust_range(a)
    np.testing.assert_array_equal(strip, colour_bar_strip(400, lo, hi, label="sml"))
    lut = colormap_lut("inferno")
    row = strip[strip.shape[0] // 2]
    # the bar runs through the colormap from its darkest to its brightest colour
    assert (row == lut[0]).all(axis=1).any() and (row == lut[255]).all(axis=1).any()
    assert (strip[:, :40] < 128).any()  # the label is written at the left
    ov = overlay(img, a, vmin=-1.0, vmax=2.0, colour_bar=True, label="max_logit")
    np.testing.assert_array_equal(ov[:90], overlay(img, a, vmin=-1.0, vmax=2.0))
    np.testing.assert_array_equal(ov[90:], colour_bar_strip(400, -1.0, 2.0, label="max_logit"))
    assert not np.array_equal(colour_bar_strip(400, -1.0, 2.0, label="sml"),
                              colour_bar_strip(400, -1.0, 3.0, label="sml"))  # the range is printed
    with pytest.raises(InputError, match="64 pixels"):
        colour_bar_strip(30, -1.0, 2.0)
    # a narrow map is widened (background on the right) so that its bar shows the colour scale
    narrow = heatmap(a[:, :30], -1.0, 2.0, colour_bar=True, label="sml")
    assert narrow.shape[1] == MIN_BAR_WIDTH and narrow.shape[0] > 90
    np.testing.assert_array_equal(narrow[:90, :30], heatmap(a[:, :30], -1.0, 2.0))
    assert (narrow[:90, 30:] == 255).all()
    low_end = (np.abs(narrow[90:].reshape(-1, 3).astype(int) - lut[0]).sum(1) == 0).any()
    assert low_end and (np.abs(narrow[90:].reshape(-1, 3).astype(int) - lut[255]).sum(1) == 0).any()
