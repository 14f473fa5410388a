"""`build_report`: one self-contained static HTML page for a run directory.

The page works from the file system (no server, no CDN): CSS and JS are
inline, figures live in ``report/img/`` and are linked relatively, so the
whole ``report/`` folder can be copied or zipped.
"""
from __future__ import annotations

import html
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
from PIL import Image

from sml.errors import InputError
from sml.report.curves import colour_legend, plot_curves
from sml.report.images import frame_panel, robust_range
from sml.report.rundir import Run, frame_numbers, load_run, read_eval_labels, slug
from sml.utils.atomic import write_bytes, write_text
from sml.utils.progress import progress

THUMB_COL_WIDTH = 130   # thumbnail pixels per panel column (4 columns -> 520 px)
THUMB_MAX_WIDTH = 520
RANGE_SAMPLES = 20000   # map values sampled per frame for the data-set colour range

E = html.escape
NO_MAPS = "no saved anomaly maps (run `sml eval` with --save-maps or --report)"  # a note, not an error
MAX_LISTED = 12  # problems listed in the error message of build_report


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _pct(v: Any, digits: int = 2) -> str:
    x = _num(v)
    return f"{100 * x:.{digits}f}" if math.isfinite(x) else "n/a"


def _g(v: Any) -> str:
    x = _num(v)
    return f"{x:.4g}" if math.isfinite(x) else "n/a"


def _nan_reason(run: Run, method: str, key: str) -> str:
    """Why a metric is NaN: the run's own reason when it states one, else what the pixel counts imply."""
    m = run.metrics["methods"].get(method, {})
    reasons = m.get("reasons") if isinstance(m.get("reasons"), dict) else {}
    for r in (reasons.get(key), m.get(f"{key}_reason"), m.get("reason"), run.metrics.get("reason")):
        if r:
            return str(r)
    px = run.metrics.get("pixels", {}) or {}
    if _num(px.get("anomaly")) == 0:
        return "no anomaly pixels in the evaluated frames"
    if _num(px.get("inlier")) == 0:
        return "no in-distribution pixels in the evaluated frames"
    if key in ("threshold_at_95tpr", "best_f1_threshold"):
        return "not written by this run"
    return "not computed by this run"


# ------------------------------------------------------------------ sections

_METRIC_COLUMNS = [
    # key, heading, kind, better
    ("auroc", "AUROC %", "pct", "max"),
    ("ap", "AP %", "pct", "max"),
    ("fpr95", "FPR@95 % (interpolated)", "pct", "min"),
    ("fpr95_threshold", "FPR@95 % (threshold)", "pct", "min"),
    ("threshold_at_95tpr", "threshold at 95% TPR (score)", "num", None),
    ("best_f1_threshold", "best-F1 threshold (score)", "num", None),
]


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


def _component_keys(run: Run) -> list[tuple[str, str]]:
    present = {k for m in run.metrics["methods"] for k in _components(run, m)}
    return [(k, h) for k, h in _COMPONENT_COLUMNS if k in present]


def _metrics_section(run: Run, notes: list[str]) -> str:
    methods = list(run.metrics["methods"])
    comp_keys = _component_keys(run)
    cols = [c for c in _METRIC_COLUMNS
            if any(c[0] in run.metrics["methods"][m] for m in methods) or c[0] in ("auroc", "ap", "fpr95")]
    head = "".join(f"<th>{E(h)}</th>" for _, h, _, _ in cols)
    head += "".join(f'<th class="comp">{E(h)}</th>' for _, h in comp_keys)
    best: dict[str, float] = {}
    for key, _, kind, better in cols:
        vals = [_num(run.metrics["methods"][m].get(key)) for m in methods]
        vals = [v for v in vals if math.isfinite(v)]
        if better and len(vals) > 1:
            best[key] = (max if better == "max" else min)(vals)
    rows = []
    for m in methods:
        d = run.metrics["methods"][m]
        cells = [f'<th scope="row">{E(m)}</th>']
        for key, _, kind, _ in cols:
            v = _num(d.get(key))
            if not math.isfinite(v):
                reason = _nan_reason(run, m, key)
                note_no = _note(notes, f"{m}, {key}: {reason}")
                cells.append(f'<td class="na" title="{E(reason)}">n/a<sup>{note_no}</sup></td>')
                continue
            text = _pct(v) if kind == "pct" else _g(v)
            cls = ' class="best"' if key in best and v == best[key] else ""
            cells.append(f"<td{cls}>{text}</td>")
        comp = _components(run, m)
        for k, _ in comp_keys:
            v = _num(comp.get(k))
            cells.append(f"<td>{_pct(v)}</td>" if math.isfinite(v) else '<td class="na">n/a</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    settings = []
    for m in methods:
        s = run.metrics["methods"][m].get("settings")
        extra = {_COMPONENT_NAMES.get(k, k): v for k, v in _components(run, m).items()
                 if k not in dict(_COMPONENT_COLUMNS) and isinstance(v, (int, float, str)) and v is not None}
        parts = []
        if s:
            parts.append(f"<code>{E(json.dumps(s, sort_keys=True))}</code>")
        if extra:
            parts.append("components: " + ", ".join(f"{E(k)} {E(_g(v) if not isinstance(v, str) else v)}"
                                                     for k, v in extra.items()))
        if parts:
            settings.append(f"<li><b>{E(m)}</b>: {'; '.join(parts)}</li>")
    settings_html = (f'<details id="settings"><summary>method settings</summary><ul>{"".join(settings)}</ul>'
                     "</details>") if settings else ""
    return (f'<div class="scroll"><table id="metrics" class="data"><thead><tr><th>method</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>{settings_html}")


def _note(notes: list[str], text: str) -> int:
    if text not in notes:
        notes.append(text)
    return notes.index(text) + 1


def _conventions(run: Run, range_text: str) -> str:
    m = run.metrics
    px = m.get("pixels", {}) or {}
    conv = m.get("fpr95_convention", "interpolated")
    items = [
        f"Data set <b>{E(str(m.get('dataset', '?')))}</b>, {E(str(m.get('frames', '?')))} frames, "
        f"model <b>{E(str(m.get('model', '?')))}</b>"
        + (f", statistics <code>{E(str(m['stats']))}</code>" if m.get("stats") else "") + ".",
        "Pixels of all frames are pooled into one set (not averaged per frame); label 1 = anomaly "
        "(positive), 0 = in-distribution, 255 = void, excluded"
        + (f"; {int(_num(px.get('anomaly'))):,} anomaly and {int(_num(px.get('inlier'))):,} "
           "in-distribution pixels" if math.isfinite(_num(px.get("anomaly"))) and
           math.isfinite(_num(px.get("inlier"))) else "") + ".",
        "AUROC and AP as scikit-learn's <code>roc_auc_score</code> / <code>average_precision_score</code> "
        "(ties as one threshold, AP without interpolation). Values in percent; best value per column in bold.",
        f"FPR@95: the headline convention of this run is <b>{E(str(conv))}</b>. <i>interpolated</i> = "
        "linear interpolation of the ROC curve's FPR at TPR = 0.95 (reference SML evaluation); "
        "<i>threshold</i> = FPR at the highest threshold whose TPR is at least 0.95 (SegmentMeIfYouCan).",
        f"Protocol <b>{E(str(m.get('protocol', 'exact')))}</b>: whose numbers these are (docs/protocols.md; "
        "<code>sml eval --protocol</code>). <i>exact</i> = scikit-learn on the float32 maps.",
        "Detections in the gallery: pixels with score &ge; the method's threshold at 95% TPR on this data "
        "set. Per-frame AP uses the frame's own pixels; FP area = share of the frame's in-distribution "
        "pixels detected.",
        f"Heatmap colours: {range_text}",
    ]
    scored = m.get("frames_scored")
    if scored is not None and scored != m.get("frames"):
        items.insert(1, f"{E(str(scored))} frames scored, {E(str(m.get('frames')))} of them labelled and "
                        "evaluated (frames without labels never enter a metric).")
    if m.get("component_track"):
        items.append(f"Component metrics (SegmentMeIfYouCan, {E(str(m['component_track']))} track) at the "
                     "best-F1 pixel threshold.")
    for note in m.get("notes") or []:
        items.append(f"Note: {E(str(note))}")
    return "<ul class=\"conv\">" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _stats_section(stats: Mapping[str, Any]) -> str:
    mean = np.asarray(stats.get("mean", []), dtype=np.float64)
    n = int(stats.get("num_classes", mean.size))
    var = np.asarray(stats.get("var", [math.nan] * n), dtype=np.float64)
    count = np.asarray(stats.get("count", [math.nan] * n), dtype=np.float64)
    names = list(stats.get("class_names") or [])
    names += [f"class {i}" for i in range(len(names), n)]
    if not (mean.size == var.size == count.size == n):
        return (f'<p class="warn">stats.json lists {n} classes but mean/var/count have '
                f"{mean.size}/{var.size}/{count.size} entries; table skipped.</p>")
    rows = []
    for i in range(n):
        unused = not (count[i] > 1)
        std = math.sqrt(var[i]) if var[i] >= 0 else math.nan
        cnt = f"{int(count[i]):,}" if math.isfinite(count[i]) else "n/a"
        cls = ' class="unused" title="fewer than 2 pixels: this class cannot be standardized"' if unused else ""
        rows.append(f"<tr{cls}><td>{i}</td><td class=\"txt\">{E(str(names[i]))}</td><td>{cnt}</td>"
                    f"<td>{_g(mean[i])}</td><td>{_g(std)}</td><td>{_g(var[i])}</td></tr>")
    src = ", ".join(f"{k}: {E(str(stats[k]))}" for k in ("model", "data", "created") if stats.get(k))
    return (f'<p class="muted">Per-class statistics of the maximum logit over pixels predicted as that '
            f"class (SML standardizes with them). {src}</p>"
            '<table id="stats" class="data"><thead><tr><th>id</th><th>class</th><th>pixels</th>'
            "<th>mean</th><th>std</th><th>var</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _f1(v: Any, digits: int = 1) -> str:
    x = _num(v)
    return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"


def _diagnostics_section(diag: Any, img_dir: Path) -> str:
    """The per-class diagnostics: the figure, the plain-language reading and the top classes' numbers."""
    from sml.diagnostics import explain, plot_diagnostics, ranked_classes

    summary = diag.compute()
    png, svg = plot_diagnostics(summary, img_dir / "diagnostics", top=10)
    with Image.open(png) as im:  # drawn at 150 dpi: shown at 100 dpi, so text matches the page's size
        w, h = round(im.width / 1.5), round(im.height / 1.5)
    rows = []
    for c in ranked_classes(summary, 10):
        a, i = c["max_logit"]["anomaly"], c["max_logit"]["inlier"]
        mu, sd = _num(c["train_mean"]), _num(c["train_std"])
        z = (_num(a["median"]) - mu) / sd if a["pixels"] and math.isfinite(mu) and sd > 0 else math.nan
        rows.append(f'<tr><td class="txt">{E(c["name"])}</td><td>{_pct(c["anomaly_share"], 1)}</td>'
                    f'<td>{c["anomaly_pixels"]:,}</td><td>{c["inlier_pixels"]:,}</td>'
                    f"<td>{_f1(mu, 2)} &plusmn; {_f1(sd, 2)}</td>"
                    f'<td>{_f1(i["median"]) if i["pixels"] else "&ndash;"}</td>'
                    f'<td>{_f1(a["median"]) if a["pixels"] else "&ndash;"}</td>'
                    f'<td>{f"{z:+.2f}" if math.isfinite(z) else "&ndash;"}</td></tr>')
    return (f'<p id="diag-reading">{E(explain(summary))}</p>'
            f'<img id="diagnostics-img" src="img/{png.name}" width="{w}" height="{h}" alt="max logit per '
            'predicted class, inlier vs anomaly pixels, with the training mean and standard deviation">'
            f'<p class="muted">Vector version: <a href="img/{svg.name}">{svg.name}</a>. Per predicted class '
            "(largest share of anomaly pixels first): the max logit of in-distribution (blue) and anomaly "
            "(orange) pixels of this run, against the class's training mean &plusmn; std (SML subtracts that "
            "mean and divides by that std). Anomalies SML can find sit below their class's band; max logit "
            "needs them below the in-distribution pixels of every class. Numbers from "
            "<code>diagnostics.json</code> (exact pixel counts; quantiles to one histogram bin, 0.1).</p>"
            '<div class="scroll"><table id="diagnostics" class="data"><thead><tr><th>predicted class</th>'
            "<th>share of anomaly px %</th><th>anomaly px</th><th>in-distribution px</th>"
            "<th>training mean &plusmn; std</th><th>in-distribution median</th><th>anomaly median</th>"
            "<th title=\"(anomaly median - training mean) / training std\">z of anomaly median</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


# ------------------------------------------------------------------ frames

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


def _render_frames(run: Run, frames: list[dict[str, Any]], methods: list[str], ranges, cmap: str,
                   tile_width: int, img_dir: Path, show_progress: bool,
                   panel_format: str = "png") -> list[dict[str, Any]]:
    rows = []
    thresholds = {m: run.threshold(m) for m in methods}
    used: set[str] = set()
    it = progress(frames, total=len(frames), desc="report", disable=None if show_progress else True)
    for i, f in enumerate(it):
        fid = str(f["id"])
        name = slug(fid)
        if name in used:  # two ids that slug alike must not overwrite each other's panel
            name = f"{name}_{i}"
        used.add(name)
        row: dict[str, Any] = {"id": fid, "index": i, "numbers": {}, "problems": []}
        try:
            maps = {}
            for m in methods:
                p = run.own_map(m, fid)
                if p is not None:
                    maps[m] = _load_map(p)
            labels = None
            lpath = run.resolve(f.get("eval_labels") or f.get("labels"))
            if lpath is not None:
                if lpath.is_file():
                    try:
                        labels = read_eval_labels(lpath, run.label_table())
                    except InputError as exc:
                        row["problems"].append(str(exc))
                else:
                    row["problems"].append(f"labels {lpath} not found")
            ipath = run.resolve(f.get("image"))
            shape = next(iter(maps.values())).shape if maps else (labels.shape if labels is not None else None)
            if ipath is not None and ipath.is_file():
                image = _read_rgb(ipath)
            else:
                row["problems"].append(f"image {ipath} not found" if ipath else "frames.json gives no image")
                hw = shape or (360, 640)
                image = np.full((*hw, 3), 200, np.uint8)
            if labels is not None and maps and labels.shape != next(iter(maps.values())).shape:
                row["problems"].append(f"labels {lpath} ({labels.shape[1]}x{labels.shape[0]}) and the maps "
                                       f"({next(iter(maps.values())).shape[1]}x{next(iter(maps.values())).shape[0]})"
                                       " differ in size: labels not shown")
                labels = None
            if not maps and labels is not None and labels.shape != image.shape[:2]:
                labels = None
            if not maps:
                row["problems"].append(NO_MAPS)
            given = f.get("methods", {}) or {}
            numbers: dict[str, dict[str, float]] = {}
            for m in methods:
                nums = dict(given.get(m, {}) or {})
                if m in maps and labels is not None and ("ap" not in nums or "fp_area" not in nums):
                    computed = frame_numbers(maps[m], labels, thresholds.get(m))
                    for k, v in computed.items():
                        nums.setdefault(k, v)
                numbers[m] = nums
            row["numbers"] = numbers
            panel = frame_panel(image, labels, maps, thresholds, ranges, cmap=cmap, tile_width=tile_width,
                                title=fid, numbers=numbers, method_order=[m for m in methods if m in maps])
            full = f"img/panels/{name}.{'png' if panel_format == 'png' else 'jpg'}"
            thumb = f"img/thumbs/{name}.jpg"
            # PNG level 1: the noisy heatmaps barely compress better at higher levels, which cost 2-3x.
            write_bytes(img_dir.parent / full, _encode(panel, "PNG", compress_level=1) if panel_format == "png"
                        else _encode(panel, "JPEG", quality=92))
            t = _thumb(panel, 1 + len(maps))
            write_bytes(img_dir.parent / thumb, _encode(t, "JPEG", quality=85))
            row.update(full=full, thumb=thumb, thumb_size=(t.shape[1], t.shape[0]))
        except (InputError, OSError, ValueError) as exc:
            row["problems"].append(f"panel not drawn: {exc}")
        rows.append(row)
    return rows


def _sort_value(v: Any) -> str:
    x = _num(v)
    return repr(x) if math.isfinite(x) else ""


def _gallery_section(rows: list[dict[str, Any]], methods: list[str], total: int) -> str:
    heads = ['<th data-key="index" data-type="num" data-first="asc" class="sortable">#</th>',
             '<th data-key="id" data-type="str" data-first="asc" class="sortable">frame</th>',
             "<th>panel (click for full size)</th>"]
    for j, m in enumerate(methods):
        heads.append(f'<th data-key="ap{j}" data-type="num" data-first="asc" class="sortable" '
                     f'title="per-frame average precision of {E(m)}; first click: worst first">'
                     f"{E(m)}<br>AP %</th>")
        heads.append(f'<th data-key="fp{j}" data-type="num" data-first="desc" class="sortable" '
                     f'title="share of in-distribution pixels detected at the 95%-TPR threshold; '
                     f'first click: worst first">{E(m)}<br>FP area %</th>')
    body = []
    for r in rows:
        attrs = [f'data-index="{r["index"]}"', f'data-id="{E(r["id"])}"']
        cells = [f'<td>{r["index"] + 1}</td>', f'<td class="fid">{E(r["id"])}</td>']
        if "thumb" in r:
            tw, th = r["thumb_size"]
            cells.append(f'<td><a class="full" href="{E(r["full"])}" data-id="{E(r["id"])}">'
                         f'<img class="thumb" loading="lazy" src="{E(r["thumb"])}" width="{tw}" '
                         f'height="{th}" alt="panel of {E(r["id"])}"></a></td>')
        else:
            cells.append('<td class="na">no panel</td>')
        if r["problems"]:
            cells[-1] = cells[-1][:-5] + "".join(f'<div class="warn">{E(p)}</div>' for p in r["problems"]) \
                + "</td>"
        for j, m in enumerate(methods):
            nums = r["numbers"].get(m, {})
            for key, short in (("ap", "ap"), ("fp_area", "fp")):
                v = nums.get(key)
                attrs.append(f'data-{short}{j}="{_sort_value(v)}"')
                shown = _pct(v, 1)
                cells.append(f'<td class="{"na" if shown == "n/a" else "num"}">{shown}</td>')
        body.append(f'<tr {" ".join(attrs)}>' + "".join(cells) + "</tr>")
    shown = f"{len(rows)} of {total} frames" if len(rows) < total else f"{total} frames"
    return (f'<p class="muted">{shown}. Click a column heading to sort (click again to reverse); frames '
            "without a value sort last. Click a panel for full size; &larr; / &rarr; step through frames in "
            "the current order, Esc closes.</p>"
            f'<div class="scroll"><table id="gallery" class="data"><thead><tr>{"".join(heads)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;
padding:0 20px 40px;color:#1c1c1c}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.muted{color:#666}.warn{color:#a33;font-size:12px;overflow-wrap:anywhere;max-width:520px}code{font-size:12px}
#gallery td.fid{max-width:220px;overflow-wrap:anywhere}#gallery td.num{width:4.5em}
#legend img{width:600px}
table.data{border-collapse:collapse;margin:6px 0}
table.data th,table.data td{border:1px solid #ddd;padding:3px 8px;text-align:right;vertical-align:middle}
table.data th{background:#f4f4f6}table.data th[scope=row],table.data td.fid,table.data td.txt,#gallery thead th:nth-child(-n+3){text-align:left}
td.best{font-weight:700}td.na{color:#999}tr.unused td{color:#b55}
ul.conv{padding-left:18px;color:#333}ul.conv li{margin:2px 0}
th.sortable{cursor:pointer;user-select:none}th.sortable:hover{background:#e6e8ef}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
img.thumb{display:block;max-width:100%;height:auto;background:#eee}
#curves img{width:1100px;max-width:100%;height:auto}#legend img{max-width:100%;height:auto}
#lightbox{position:fixed;inset:0;background:rgba(0,0,0,.85);display:none;align-items:center;
justify-content:center;z-index:10;cursor:zoom-out;flex-direction:column}
#lightbox.open{display:flex}#lightbox img{max-width:96vw;max-height:90vh;background:#fff}
#lightbox .cap{color:#eee;margin-top:6px}
nav a{margin-right:14px}
code{overflow-wrap:anywhere}.scroll{max-width:100%;overflow-x:auto}
#diagnostics-img{max-width:100%;height:auto}#diag-reading{max-width:60em}
details#settings li{overflow-wrap:anywhere}
"""

JS = """
(function(){
  var table=document.getElementById('gallery'); if(!table) return;
  var tbody=table.tBodies[0];
  function val(tr,key,type){var v=tr.getAttribute('data-'+key);
    if(type==='num'){return v===''||v===null?null:parseFloat(v);} return v||'';}
  table.querySelectorAll('th.sortable').forEach(function(th){
    th.addEventListener('click',function(){
      var key=th.dataset.key,type=th.dataset.type;
      var dir=th.classList.contains('sorted-'+th.dataset.first)?
        (th.dataset.first==='asc'?'desc':'asc'):th.dataset.first;
      table.querySelectorAll('th.sortable').forEach(function(h){h.classList.remove('sorted-asc','sorted-desc');});
      th.classList.add('sorted-'+dir);
      var rows=Array.prototype.slice.call(tbody.rows),s=dir==='asc'?1:-1;
      rows.sort(function(a,b){var x=val(a,key,type),y=val(b,key,type);
        if(x===null&&y===null) return 0; if(x===null) return 1; if(y===null) return -1;
        if(type==='num') return s*(x-y)||(+a.dataset.index-b.dataset.index);
        return s*x.localeCompare(y);});
      rows.forEach(function(r){tbody.appendChild(r);});
    });
  });
  var box=document.getElementById('lightbox'),cur=null;
  function links(){return Array.prototype.slice.call(tbody.querySelectorAll('a.full'));}
  function show(a){cur=a;var img=box.querySelector('img');
    if(!img){img=document.createElement('img');img.alt='full-size panel';box.insertBefore(img,box.firstChild);}
    img.src=a.getAttribute('href');box.querySelector('.cap').textContent=a.dataset.id;box.classList.add('open');}
  tbody.addEventListener('click',function(e){var a=e.target.closest('a.full');
    if(a){e.preventDefault();show(a);}});
  box.addEventListener('click',function(){box.classList.remove('open');});
  document.addEventListener('keydown',function(e){if(!box.classList.contains('open')) return;
    if(e.key==='Escape'){box.classList.remove('open');return;}
    var l=links(),i=l.indexOf(cur);
    if(e.key==='ArrowRight'&&i<l.length-1) show(l[i+1]);
    if(e.key==='ArrowLeft'&&i>0) show(l[i-1]);});
})();
"""


def build_report(run_dir: str | Path, max_frames: int | None = None, *, ranges: str = "dataset",
                 cmap: str = "inferno", tile_width: int = 400, panel_format: str = "png",
                 show_progress: bool = True, on_note: Callable[[str], None] | None = None) -> Path:
    """Write ``RUN_DIR/report/index.html`` (+ ``report/img/``) for a run directory; returns its path.

    ``max_frames`` limits the gallery to the first frames of frames.json.
    ``ranges``: ``"dataset"`` colours every frame of a method with one range,
    the 1st-99th percentile of its saved maps over the data set (comparable
    across frames); ``"image"`` uses each map's own 1st-99th percentile.
    ``panel_format``: ``"png"`` (lossless, for papers) or ``"jpeg"`` (~3x smaller,
    encoded ~100x faster: for quick looks at large sets).

    A file that cannot be read (a truncated map or image, missing labels) is an
    :class:`InputError` naming it, raised after the page is written (the page
    marks the frames); ``on_note`` receives the notes about optional parts that
    are absent (no curves.json, ...). ``RUN_DIR/diagnostics.json`` (written by
    ``sml eval``) adds the per-class diagnostics section.
    """
    t0 = time.perf_counter()
    if ranges not in ("dataset", "image"):
        raise InputError(f"ranges must be 'dataset' or 'image', got {ranges!r}")
    if panel_format not in ("png", "jpeg"):
        raise InputError(f"panel_format must be 'png' or 'jpeg', got {panel_format!r}")
    if max_frames is not None and max_frames < 0:
        raise InputError(f"max_frames must be >= 0, got {max_frames}")
    root = Path(run_dir)
    if not root.is_dir():
        raise InputError(f"run directory {root} does not exist; create one with `sml eval ... --out {root}` "
                         "(or `sml demo --out DIR`)")
    run = load_run(root)
    diag = None
    if run.owns("diagnostics.json"):  # read before the long work: a bad file stops us early
        from sml.diagnostics import ClassDiagnostics

        diag = ClassDiagnostics.load(run.root / "diagnostics.json")
    out = run.root / "report"
    img_dir = out / "img"
    methods = run.methods
    m = run.metrics
    dataset = str(m.get("dataset", run.root.name))
    notes: list[str] = []
    parts: list[str] = []

    # Curves
    curves_html = '<p class="muted">No curves.json in this run.</p>'
    if run.curves:
        px = m.get("pixels", {}) or {}
        a_, i_ = _num(px.get("anomaly")), _num(px.get("inlier"))
        pos = a_ / (a_ + i_) if math.isfinite(a_) and math.isfinite(i_) and a_ + i_ > 0 else None
        png, svg = plot_curves(run.curves, img_dir / "curves", title=f"{dataset} ({m.get('frames', '?')} frames)",
                               positive_fraction=pos)
        curves_html = (f'<img id="curves-img" src="img/{png.name}" alt="ROC and precision-recall curves">'
                       f'<p class="muted">Vector version for papers: <a href="img/{svg.name}">{svg.name}</a>. '
                       "The ROC plot marks 95% TPR; the dotted line of the PR plot is the anomaly share "
                       "of evaluated pixels (chance level).</p>")

    # Frames + colour ranges
    frames = list(run.frames or [])
    total = len(frames)
    chosen = frames if max_frames is None else frames[:max_frames]
    map_methods = [mm for mm in methods if (run.root / "maps" / mm).is_dir()]
    if ranges == "dataset":
        rng: Any = dataset_ranges(run, map_methods, frames)
        range_text = ("one fixed range per method, the 1st-99th percentile of its scores over all "
                      f"{total} frames (so frames are comparable); the legend shows each range, values "
                      "outside it are clipped.")
    else:
        rng = "image"
        range_text = ("each heatmap uses its own frame's 1st-99th percentile (printed under it): compare "
                      "shapes, not brightness, across frames.")
    legend_html = ""
    if ranges == "dataset" and rng:
        (legend_png,) = colour_legend(rng, img_dir / "legend", cmap=cmap,
                                      note="colour range per method: 1st-99th percentile over the data set")
        legend_html = f'<div id="legend"><img src="img/{legend_png.name}" alt="colour legend"></div>'
    rows = _render_frames(run, chosen, map_methods, rng if ranges == "dataset" else "image", cmap,
                          tile_width, img_dir, show_progress, panel_format) if chosen else []

    title = f"sml report: {dataset}"
    parts.append(f"<h1>{E(title)}</h1>")
    parts.append(f'<p class="muted">Run directory <code>{E(str(run.root.resolve()))}</code>; '
                 f"{len(methods)} method(s); generated {time.strftime('%Y-%m-%d %H:%M')}.</p>")
    parts.append('<nav><a href="#sec-metrics">metrics</a><a href="#sec-curves">curves</a>'
                 + ('<a href="#sec-diagnostics">per-class diagnostics</a>' if diag is not None else "")
                 + '<a href="#sec-stats">class statistics</a><a href="#sec-gallery">gallery</a></nav>')
    parts.append('<h2 id="sec-metrics">Metrics</h2>')
    parts.append(_metrics_section(run, notes))
    notes_at = len(parts)
    parts.append(_conventions(run, range_text))
    parts.append('<h2 id="sec-curves">Curves</h2><div id="curves">' + curves_html + "</div>")
    if diag is not None:
        parts.append('<h2 id="sec-diagnostics">Per-class diagnostics: where the anomalies go</h2>'
                     '<div id="diag">' + _diagnostics_section(diag, img_dir) + "</div>")
    parts.append('<h2 id="sec-stats">Per-class statistics</h2>')
    parts.append(_stats_section(run.stats) if run.stats else
                 '<p class="muted">No stats.json in this run (no method needed class statistics).</p>')
    parts.append('<h2 id="sec-gallery">Gallery</h2>')
    if rows:
        parts.append(legend_html)
        parts.append(_gallery_section(rows, map_methods, total))
    else:
        parts.append('<p class="muted">No frames to show' +
                     (" (frames.json is missing)" if run.frames is None else "") + ".</p>")
    if notes:
        parts.insert(notes_at, '<ol class="muted" id="notes">' + "".join(f"<li>{E(n)}</li>" for n in notes) + "</ol>")
    if run.warnings:
        parts.append('<h2>Notes</h2><ul class="muted">' +
                     "".join(f"<li>{E(w)}</li>" for w in run.warnings) + "</ul>")
    parts.append(f'<p class="muted">Written by <code>sml report</code> in {time.perf_counter() - t0:.1f} s.</p>')
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{E(title)}</title><link rel=\"icon\" href=\"data:,\"><style>{CSS}</style></head><body>"
            + "\n".join(parts)
            + '<div id="lightbox"><div class="cap"></div></div>'
            + f"<script>{JS}</script></body></html>\n")
    index = out / "index.html"
    write_text(index, page)
    if on_note is not None:
        for w in run.warnings:
            on_note(w)
    errors = [f"frame {r['id']}: {p}" for r in rows for p in r["problems"] if p != NO_MAPS]
    if errors:
        listed = errors[:MAX_LISTED] + ([f"... and {len(errors) - MAX_LISTED} more"]
                                        if len(errors) > MAX_LISTED else [])
        raise InputError(f"{len(errors)} problem(s) reading the files of {run.root} (the report {index} was "
                         "written with those frames marked):\n" + "\n".join(f"  {e}" for e in listed) +
                         "\nFix or re-create those files (`sml eval --out RUN_DIR --report` writes them all) and "
                         "run `sml report` again.")
    return index
