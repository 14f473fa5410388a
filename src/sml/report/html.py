"""`build_report`: one self-contained static HTML page for a run directory.

The page works from the file system (no server, no CDN): the style sheet and
script (``sml/report/static/report.css``, ``report.js``) are inlined into the
page, figures live in ``report/img/`` and are linked relatively, so the whole
``report/`` folder can be copied or zipped. :func:`sml.report.content.collect_report`
gathers what to show; the functions here only write it as HTML, one per section.
"""
from __future__ import annotations

import functools
import html
import math
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from sml.errors import InputError
from sml.report.content import (DiagnosticsRow, DiagnosticsSection, Figure, Gallery, MethodRow, MetricCell,
                                MetricsTable, ReportData, RunSummary, StatsTable, as_float, collect_report)
from sml.report.gallery import NO_MAPS, FrameRow, PanelOptions, dataset_ranges
from sml.report.rundir import load_run
from sml.utils.atomic import write_text
from sml.utils.run_layout import DIAGNOSTICS, REPORT, REPORT_INDEX

__all__ = ["build_report", "render_page", "dataset_ranges"]

E = html.escape
MAX_LISTED = 12  # problems listed in the error message of build_report


@functools.lru_cache(maxsize=None)
def static_text(name: str) -> str:
    """A file of ``sml/report/static`` (the page's CSS and JS), read from the installed package."""
    return resources.files("sml.report").joinpath("static", name).read_text(encoding="utf-8")


def _pct(v: Any, digits: int = 2) -> str:
    x = as_float(v)
    return f"{100 * x:.{digits}f}" if math.isfinite(x) else "n/a"


def _g(v: Any) -> str:
    x = as_float(v)
    return f"{x:.4g}" if math.isfinite(x) else "n/a"


def _f1(v: Any, digits: int = 1) -> str:
    x = as_float(v)
    return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"


# ------------------------------------------------------------------ the page

def render_page(data: ReportData, seconds: float) -> str:
    """The whole ``index.html``: CSS and JS inline; ``seconds`` is the build time it states."""
    parts = [f"<h1>{E(data.title)}</h1>",
             f'<p class="muted">Run directory <code>{E(data.run_root)}</code>; '
             f"{data.method_count} method(s); generated {data.generated}.</p>",
             '<nav><a href="#sec-metrics">metrics</a><a href="#sec-curves">curves</a>'
             + ('<a href="#sec-diagnostics">per-class diagnostics</a>' if data.diagnostics is not None else "")
             + '<a href="#sec-stats">class statistics</a><a href="#sec-gallery">gallery</a></nav>',
             '<h2 id="sec-metrics">Metrics</h2>', metrics_html(data.metrics), conventions_html(data.summary),
             '<h2 id="sec-curves">Curves</h2><div id="curves">' + curves_html(data.curves) + "</div>"]
    if data.diagnostics is not None:
        parts.append('<h2 id="sec-diagnostics">Per-class diagnostics: where the anomalies go</h2>'
                     '<div id="diag">' + diagnostics_html(data.diagnostics) + "</div>")
    parts += ['<h2 id="sec-stats">Per-class statistics</h2>', stats_html(data.stats),
              '<h2 id="sec-gallery">Gallery</h2>', gallery_html(data.gallery)]
    if data.warnings:
        parts.append('<h2>Notes</h2><ul class="muted">' +
                     "".join(f"<li>{E(w)}</li>" for w in data.warnings) + "</ul>")
    parts.append(f'<p class="muted">Written by <code>sml report</code> in {seconds:.1f} s.</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{E(data.title)}</title><link rel=\"icon\" href=\"data:,\">"
            f"<style>\n{static_text('report.css')}</style></head><body>"
            + "\n".join(parts)
            + '<div id="lightbox"><div class="cap"></div></div>'
            + f"<script>\n{static_text('report.js')}</script></body></html>\n")


# ------------------------------------------------------------------ metrics

def metrics_html(t: MetricsTable) -> str:
    """The metrics table, the folded method settings and the footnotes of the n/a cells."""
    head = "".join(f"<th>{E(h)}</th>" for h in t.columns)
    head += "".join(f'<th class="comp">{E(h)}</th>' for h in t.component_columns)
    rows = "".join(_method_row(r) for r in t.rows)
    out = (f'<div class="scroll"><table id="metrics" class="data"><thead><tr><th>method</th>{head}</tr></thead>'
           f"<tbody>{rows}</tbody></table></div>{_settings_html(t)}")
    if t.notes:
        out += '\n<ol class="muted" id="notes">' + "".join(f"<li>{E(n)}</li>" for n in t.notes) + "</ol>"
    return out


def _method_row(r: MethodRow) -> str:
    cells = [f'<th scope="row">{E(r.method)}</th>'] + [_cell(c) for c in r.cells + r.components]
    return "<tr>" + "".join(cells) + "</tr>"


def _cell(c: MetricCell) -> str:
    if c.note is not None:
        return f'<td class="na" title="{E(c.reason or "")}">n/a<sup>{c.note}</sup></td>'
    if not math.isfinite(c.value):
        return '<td class="na">n/a</td>'
    text = _g(c.value) if c.kind == "num" else _pct(c.value)
    return f'<td class="best">{text}</td>' if c.best else f"<td>{text}</td>"


def _settings_html(t: MetricsTable) -> str:
    items = []
    for s in t.settings:
        parts = []
        if s.settings:
            parts.append(f"<code>{E(s.settings)}</code>")
        if s.components:
            parts.append("components: " + ", ".join(f"{E(k)} {E(v if isinstance(v, str) else _g(v))}"
                                                     for k, v in s.components))
        items.append(f"<li><b>{E(s.method)}</b>: {'; '.join(parts)}</li>")
    if not items:
        return ""
    return f'<details id="settings"><summary>method settings</summary><ul>{"".join(items)}</ul></details>'


def conventions_html(s: RunSummary) -> str:
    """What the numbers mean: data, pixel pooling, metric definitions, FPR@95 convention, protocol."""
    items = [
        f"Data set <b>{E(s.dataset)}</b>, {E(s.frames)} frames, model <b>{E(s.model)}</b>"
        + (f", statistics <code>{E(s.stats)}</code>" if s.stats else "") + ".",
        "Pixels of all frames are pooled into one set (not averaged per frame); label 1 = anomaly "
        "(positive), 0 = in-distribution, 255 = void, excluded"
        + (f"; {s.pixels[0]:,} anomaly and {s.pixels[1]:,} in-distribution pixels" if s.pixels else "") + ".",
        "AUROC and AP as scikit-learn's <code>roc_auc_score</code> / <code>average_precision_score</code> "
        "(ties as one threshold, AP without interpolation). Values in percent; best value per column in bold.",
        f"FPR@95: the headline convention of this run is <b>{E(s.fpr95_convention)}</b>. <i>interpolated</i> = "
        "linear interpolation of the ROC curve's FPR at TPR = 0.95 (reference SML evaluation); "
        "<i>threshold</i> = FPR at the highest threshold whose TPR is at least 0.95 (SegmentMeIfYouCan).",
        f"Protocol <b>{E(s.protocol)}</b>: whose numbers these are (docs/protocols.md; "
        "<code>sml eval --protocol</code>). <i>exact</i> = scikit-learn on the float32 maps.",
        "Detections in the gallery: pixels with score &ge; the method's threshold at 95% TPR on this data "
        "set. Per-frame AP uses the frame's own pixels; FP area = share of the frame's in-distribution "
        "pixels detected.",
        f"Heatmap colours: {s.range_text}",
    ]
    if s.frames_scored is not None:
        items.insert(1, f"{E(s.frames_scored)} frames scored, {E(s.frames)} of them labelled and "
                        "evaluated (frames without labels never enter a metric).")
    if s.component_track:
        items.append(f"Component metrics (SegmentMeIfYouCan, {E(s.component_track)} track) at the "
                     "best-F1 pixel threshold.")
    items += [f"Note: {E(note)}" for note in s.notes]
    return "<ul class=\"conv\">" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


# ------------------------------------------------------------------ figures, statistics, diagnostics

def curves_html(f: Figure | None) -> str:
    if f is None:
        return '<p class="muted">No curves.json in this run.</p>'
    return (f'<img id="curves-img" src="img/{f.png}" alt="ROC and precision-recall curves">'
            f'<p class="muted">Vector version for papers: <a href="img/{f.svg}">{f.svg}</a>. '
            "The ROC plot marks 95% TPR; the dotted line of the PR plot is the anomaly share "
            "of evaluated pixels (chance level).</p>")


def stats_html(t: StatsTable | None) -> str:
    """The per-class statistics table; unusable classes (fewer than 2 pixels) flagged."""
    if t is None:
        return '<p class="muted">No stats.json in this run (no method needed class statistics).</p>'
    if t.mismatch:
        n, nm, nv, nc = t.mismatch
        return (f'<p class="warn">stats.json lists {n} classes but mean/var/count have '
                f"{nm}/{nv}/{nc} entries; table skipped.</p>")
    rows = []
    for r in t.rows:
        cnt = f"{int(r.count):,}" if math.isfinite(r.count) else "n/a"
        cls = ' class="unused" title="fewer than 2 pixels: this class cannot be standardized"' if r.unused else ""
        rows.append(f"<tr{cls}><td>{r.id}</td><td class=\"txt\">{E(r.name)}</td><td>{cnt}</td>"
                    f"<td>{_g(r.mean)}</td><td>{_g(r.std)}</td><td>{_g(r.var)}</td></tr>")
    src = ", ".join(f"{k}: {E(v)}" for k, v in t.source)
    return (f'<p class="muted">Per-class statistics of the maximum logit over pixels predicted as that '
            f"class (SML standardizes with them). {src}</p>"
            '<table id="stats" class="data"><thead><tr><th>id</th><th>class</th><th>pixels</th>'
            "<th>mean</th><th>std</th><th>var</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def diagnostics_html(d: DiagnosticsSection) -> str:
    """The per-class diagnostics: the reading, the figure and the top classes' numbers."""
    w, h = d.figure.size or (0, 0)
    png, svg = d.figure.png, d.figure.svg
    return (f'<p id="diag-reading">{E(d.reading)}</p>'
            f'<img id="diagnostics-img" src="img/{png}" width="{w}" height="{h}" alt="max logit per '
            'predicted class, inlier vs anomaly pixels, with the training mean and standard deviation">'
            f'<p class="muted">Vector version: <a href="img/{svg}">{svg}</a>. Per predicted class '
            "(largest share of anomaly pixels first): the max logit of in-distribution (blue) and anomaly "
            "(orange) pixels of this run, against the class's training mean &plusmn; std (SML subtracts that "
            "mean and divides by that std). Anomalies SML can find sit below their class's band; max logit "
            "needs them below the in-distribution pixels of every class. Numbers from "
            "<code>diagnostics.json</code> (exact pixel counts; quantiles to one histogram bin, 0.1).</p>"
            '<div class="scroll"><table id="diagnostics" class="data"><thead><tr><th>predicted class</th>'
            "<th>share of anomaly px %</th><th>anomaly px</th><th>in-distribution px</th>"
            "<th>training mean &plusmn; std</th><th>in-distribution median</th><th>anomaly median</th>"
            "<th title=\"(anomaly median - training mean) / training std\">z of anomaly median</th></tr></thead>"
            "<tbody>" + "".join(_diagnostics_row(r) for r in d.rows) + "</tbody></table></div>")


def _diagnostics_row(r: DiagnosticsRow) -> str:
    def median(v: Any) -> str:
        return "&ndash;" if v is None else _f1(v)

    return (f'<tr><td class="txt">{E(r.name)}</td><td>{_pct(r.anomaly_share, 1)}</td>'
            f"<td>{r.anomaly_pixels:,}</td><td>{r.inlier_pixels:,}</td>"
            f"<td>{_f1(r.train_mean, 2)} &plusmn; {_f1(r.train_std, 2)}</td>"
            f"<td>{median(r.inlier_median)}</td><td>{median(r.anomaly_median)}</td>"
            f'<td>{f"{r.z:+.2f}" if math.isfinite(r.z) else "&ndash;"}</td></tr>')


# ------------------------------------------------------------------ gallery

def gallery_html(g: Gallery) -> str:
    """The colour legend and the sortable table of frames (thumbnails open the full-size panels)."""
    if not g.rows:
        return ('<p class="muted">No frames to show' +
                (" (frames.json is missing)" if g.frames_json_missing else "") + ".</p>")
    legend = f'<div id="legend"><img src="img/{g.legend.png}" alt="colour legend"></div>' if g.legend else ""
    heads = "".join(_gallery_heads(g.methods))
    body = "".join(_gallery_row(r, g.methods) for r in g.rows)
    shown = f"{len(g.rows)} of {g.total} frames" if len(g.rows) < g.total else f"{g.total} frames"
    return (legend + "\n" +
            f'<p class="muted">{shown}. Click a column heading to sort (click again to reverse); frames '
            "without a value sort last. Click a panel for full size; &larr; / &rarr; step through frames in "
            "the current order, Esc closes.</p>"
            f'<div class="scroll"><table id="gallery" class="data"><thead><tr>{heads}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _gallery_heads(methods: list[str]) -> list[str]:
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
    return heads


def _sort_value(v: Any) -> str:
    x = as_float(v)
    return repr(x) if math.isfinite(x) else ""


def _gallery_row(r: FrameRow, methods: list[str]) -> str:
    """One frame: its sort keys as data- attributes, the thumbnail (and problems), the numbers."""
    attrs = [f'data-index="{r.index}"', f'data-id="{E(r.id)}"']
    warnings = "".join(f'<div class="warn">{E(p)}</div>' for p in r.problems)
    if r.thumb is not None and r.full is not None and r.thumb_size is not None:
        tw, th = r.thumb_size
        panel = (f'<td><a class="full" href="{E(r.full)}" data-id="{E(r.id)}">'
                 f'<img class="thumb" loading="lazy" src="{E(r.thumb)}" width="{tw}" '
                 f'height="{th}" alt="panel of {E(r.id)}"></a>{warnings}</td>')
    else:
        panel = f'<td class="na">no panel{warnings}</td>'
    cells = [f"<td>{r.index + 1}</td>", f'<td class="fid">{E(r.id)}</td>', panel]
    for j, m in enumerate(methods):
        nums = r.numbers.get(m, {})
        for key, short in (("ap", "ap"), ("fp_area", "fp")):
            v = nums.get(key)
            attrs.append(f'data-{short}{j}="{_sort_value(v)}"')
            shown = _pct(v, 1)
            cells.append(f'<td class="{"na" if shown == "n/a" else "num"}">{shown}</td>')
    return f'<tr {" ".join(attrs)}>' + "".join(cells) + "</tr>"


# ------------------------------------------------------------------ the entry point

def _check_options(ranges: str, panel_format: str, max_frames: int | None, root: Path) -> None:
    if ranges not in ("dataset", "image"):
        raise InputError(f"ranges must be 'dataset' or 'image', got {ranges!r}")
    if panel_format not in ("png", "jpeg"):
        raise InputError(f"panel_format must be 'png' or 'jpeg', got {panel_format!r}")
    if max_frames is not None and max_frames < 0:
        raise InputError(f"max_frames must be >= 0, got {max_frames}")
    if not root.is_dir():
        raise InputError(f"run directory {root} does not exist; create one with `sml eval ... --out {root}` "
                         "(or `sml demo --out DIR`)")


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
    root = Path(run_dir)
    _check_options(ranges, panel_format, max_frames, root)
    run = load_run(root)
    diag = None
    if run.owns(DIAGNOSTICS):  # read before the long work: a bad file stops us early
        from sml.diagnostics import ClassDiagnostics

        diag = ClassDiagnostics.load(run.root / DIAGNOSTICS)
    out = run.root / REPORT
    data = collect_report(run, out / "img", ranges=ranges, max_frames=max_frames, diag=diag,
                          options=PanelOptions(cmap=cmap, tile_width=tile_width, panel_format=panel_format),
                          show_progress=show_progress)
    index = out / REPORT_INDEX
    write_text(index, render_page(data, time.perf_counter() - t0))
    if on_note is not None:
        for w in run.warnings:
            on_note(w)
    _raise_frame_problems(data.gallery.rows, run.root, index)
    return index


def _raise_frame_problems(rows: list[FrameRow], root: Path, index: Path) -> None:
    errors = [f"frame {r.id}: {p}" for r in rows for p in r.problems if p != NO_MAPS]
    if not errors:
        return
    listed = errors[:MAX_LISTED] + ([f"... and {len(errors) - MAX_LISTED} more"]
                                    if len(errors) > MAX_LISTED else [])
    raise InputError(f"{len(errors)} problem(s) reading the files of {root} (the report {index} was "
                     "written with those frames marked):\n" + "\n".join(f"  {e}" for e in listed) +
                     "\nFix or re-create those files (`sml eval --out RUN_DIR --report` writes them all) and "
                     "run `sml report` again.")
