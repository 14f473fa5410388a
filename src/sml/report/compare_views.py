"""Views of a :class:`sml.report.compare.Comparison`: Markdown, CSV, LaTeX, HTML, and writing them to a folder.

Every function reads the comparison only through its public names (rows, columns,
cells, grid, notes, differing, ...); this module sits below ``sml.report.compare``,
which calls it, and imports nothing from it (not even for annotations).
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Mapping

from sml.errors import InputError

#: a :class:`sml.report.compare.Comparison` and one of its columns, read through their public names only
Comparison = Any
Column = Any

#: (metrics.json key, column label, which value is best)
METRICS: tuple[tuple[str, str, str], ...] = (("auroc", "AUROC %", "max"), ("ap", "AP %", "max"),
                                             ("fpr95", "FPR@95 %", "min"))
ABSENT, NA = "-", "n/a"   # a cell not evaluated; a metric the run could not compute (NaN)
MANIFEST = "compare.json"
WRITER = "sml compare"
TEXT_FILES = ("compare.md", "compare.csv", "compare.tex", "compare.html")
FIGURE_FORMATS = ("png", "svg")
_OWN_NAME = re.compile(r"^compare[A-Za-z0-9._-]*$")  # what a manifest may list: plain names in the folder
_FIXED_CSV = ("run", "network", "method", "variant", "dataset", "frames", "protocol", "column")
E = html.escape


# ----------------------------------------------------------------------------- Markdown

def _md(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _md_table(head: list[str], rows: list[list[str]], left: int) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in head) + " |",
             "|" + "|".join(["---"] * left + ["---:"] * (len(head) - left)) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(c: Comparison) -> str:
    """The table (best per column in bold), its notes and the settings that differ."""
    head = [*c.lead(), *(f"{col.label} {name}" for col in c.columns for _, name, _ in METRICS)]
    rows = [[_md(x) for x in c.lead_cells(r)] + [f"**{t}**" if bold else t for t, bold in cells]
            for r, cells in zip(c.rows, c.grid())]
    parts = [f"# sml compare: {len(c.runs)} run(s)", "", *_md_table(head, rows, len(c.lead())), "", "Notes:", ""]
    parts += [f"{i}. {_md(n)}" for i, n in enumerate(c.notes, 1)]
    parts += ["", "## Settings that differ", ""]
    if c.differing:
        table = [[_md(k), *(_md(c.setting(r, k) or ABSENT) for r in c.runs)] for k in c.differing]
        parts += _md_table(["setting", *(r.name for r in c.runs)], table, len(c.runs) + 1)
    else:
        parts.append("None: " + ("a single run." if len(c.runs) == 1 else "every run used the same settings."))
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- CSV

def _fraction(v: float) -> str:
    return "nan" if math.isnan(v) else repr(v)


def csv_text(c: Comparison) -> str:
    """One line per run and method: metrics as fractions (full precision), then the settings that differ."""
    extra = [k for k in c.differing if k not in _FIXED_CSV]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*_FIXED_CSV, *(k for k, _, _ in METRICS), *extra])
    for row in c.rows:
        for col in c.columns:
            cell = c.cells.get((row, col))
            if cell is None:
                continue
            w.writerow([cell.run.name, row.network, row.method, row.variant, col.dataset,
                        cell.run.metrics.get("frames", ""), col.protocol, col.label,
                        *(_fraction(cell.value(k)) for k, _, _ in METRICS),
                        *(c.setting(cell.run, k, row.method) for k in extra)])
    return buf.getvalue()


# ----------------------------------------------------------------------------- LaTeX

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex(text: Any) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def latex(c: Comparison) -> str:
    """A booktabs tabular: a header row per data set (``\\multicolumn`` + ``\\cmidrule``), then the metrics."""
    lead, n = len(c.lead()), len(METRICS)
    spec = "l" * lead + "r" * (n * len(c.columns))
    groups = [""] * lead + [f"\\multicolumn{{{n}}}{{c}}{{{tex(col.label)}}}" for col in c.columns]
    rules = " ".join(f"\\cmidrule(lr){{{lead + 1 + i * n}-{lead + (i + 1) * n}}}" for i in range(len(c.columns)))
    head = [tex(h) for h in c.lead()] + [tex(name) for _ in c.columns for _, name, _ in METRICS]
    body = [" & ".join([tex(x) for x in c.lead_cells(r)] + [f"\\textbf{{{t}}}" if b else tex(t) for t, b in cells])
            + r" \\" for r, cells in zip(c.rows, c.grid())]
    lines = [f"% written by sml compare from {len(c.runs)} run(s); needs \\usepackage{{booktabs}}",
             *(f"% {i}. {' '.join(note.split())}" for i, note in enumerate(c.notes, 1)),
             f"\\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(groups) + r" \\", rules,
             " & ".join(head) + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- HTML

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px}th,td{padding:3px 9px;border-bottom:1px solid #ddd}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f4f4f4}.muted{color:#666}
figure{margin:12px 0}figure img{max-width:100%}code{font-size:90%}"""


def _html_table(c: Comparison) -> str:
    n = len(METRICS)
    top = "".join(f"<th rowspan=2>{E(h)}</th>" for h in c.lead())
    top += "".join(f"<th colspan={n}>{E(col.label)}</th>" for col in c.columns)
    sub = "".join(f"<th>{E(name)}</th>" for _ in c.columns for _, name, _ in METRICS)
    body = ""
    for r, cells in zip(c.rows, c.grid()):
        lead = "".join(f"<td>{E(x)}</td>" for x in c.lead_cells(r))
        nums = "".join(f'<td class="n">{"<strong>" + E(t) + "</strong>" if b else E(t)}</td>' for t, b in cells)
        body += f"<tr>{lead}{nums}</tr>\n"
    return f'<table id="compare"><thead><tr>{top}</tr><tr>{sub}</tr></thead><tbody>\n{body}</tbody></table>'


def _html_settings(c: Comparison) -> str:
    if not c.differing:
        return '<p class="muted">None: ' + ("a single run." if len(c.runs) == 1 else
                                            "every run used the same settings.") + "</p>"
    head = "<tr><th>setting</th>" + "".join(f"<th>{E(r.name)}</th>" for r in c.runs) + "</tr>"
    rows = "".join(f"<tr><td><code>{E(k)}</code></td>" + "".join(f"<td>{E(c.setting(r, k) or ABSENT)}</td>"
                                                                  for r in c.runs) + "</tr>" for k in c.differing)
    return f'<table id="settings">{head}{rows}</table>'


def _html_figures(c: Comparison, figures: Mapping[Column, tuple[str, str]]) -> str:
    out = []
    for col in c.columns:
        if col not in figures:
            out.append(f'<p class="muted">{E(col.label)}: no curves (its runs have no curves.json).</p>')
            continue
        png, svg = figures[col]
        out.append(f'<figure><img src="{E(png)}" alt="ROC and precision-recall curves, {E(col.label)}">'
                   f'<figcaption>{E(col.label)}: ROC (left) and precision-recall (right) of every network / '
                   f'method; vector version <a href="{E(svg)}">{E(svg)}</a></figcaption></figure>')
    return "\n".join(out)


def html_page(c: Comparison, figures: Mapping[Column, tuple[str, str]]) -> str:
    """One self-contained page (inline CSS, figures by relative file name, opens offline)."""
    runs = "".join(f"<li><code>{E(r.name)}</code>: {E(str(r.root))}</li>" for r in c.runs)
    notes = "".join(f"<li>{E(n)}</li>" for n in c.notes)
    body = (f"<h1>sml compare: {len(c.runs)} run(s)</h1><ul class=\"muted\">{runs}</ul>"
            f"<h2>Metrics</h2>{_html_table(c)}<ol class=\"muted\" id=\"notes\">{notes}</ol>"
            f"<h2>Settings that differ</h2>{_html_settings(c)}"
            f"<h2>Curves (one figure per data set and protocol)</h2>{_html_figures(c, figures)}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>sml compare</title>"
            f"<link rel=\"icon\" href=\"data:,\"><style>{CSS}</style></head><body>{body}</body></html>\n")


# ----------------------------------------------------------------------------- writing

def owned_files(out: Path) -> list[str]:
    """The files of ``out`` that an earlier ``sml compare`` wrote (its compare.json); [] without one."""
    path = out / MANIFEST
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        data = None
    files = data.get("files") if isinstance(data, dict) and data.get("written_by") == WRITER else None
    if not isinstance(files, list) or not all(isinstance(f, str) and _OWN_NAME.match(f) for f in files):
        raise InputError(f"{path} was not written by `sml compare` (or is damaged), so sml cannot tell which files "
                         f"of {out} are its own; move that file away or choose another --out folder")
    return [f for f in files if f != MANIFEST]


def _refuse_foreign(out: Path, names: list[str], owned: list[str]) -> None:
    for name in names:
        p = out / name
        if (p.exists() or p.is_symlink()) and name not in owned:
            raise InputError(f"{p} exists and was not written by `sml compare` (no {MANIFEST} of sml compare "
                             f"lists it); sml never replaces it: move it away or choose another --out folder")


def _manifest(out: Path, c: Comparison, names: list[str]) -> None:
    from sml import __version__
    from sml.utils import atomic

    atomic.write_json(out / MANIFEST, {"written_by": WRITER, "sml_version": __version__,
                                       "runs": [str(r.root) for r in c.runs], "files": names})


def _positive_fraction(c: Comparison, col: Column) -> float | None:
    run = next(cell.run for (_, k), cell in c.cells.items() if k == col)
    px = run.metrics.get("pixels") or {}
    try:
        a, i = float(px["anomaly"]), float(px["inlier"])
    except (KeyError, TypeError, ValueError):
        return None
    return a / (a + i) if a + i > 0 else None


def plot(c: Comparison, out: Path, stems: Mapping[Column, str]) -> dict[Column, tuple[str, str]]:
    """Each column's ROC / PR figure (every row's curve overlaid); file names relative to ``out``."""
    from sml.report.curves import plot_curves

    figures = {}
    for col, stem in stems.items():
        cells = [(r, c.cells.get((r, col))) for r in c.rows]
        curves = {r.label: cell.curve() for r, cell in cells if cell is not None and cell.curve()}
        png, svg = plot_curves(curves, out / stem, title=col.label, positive_fraction=_positive_fraction(c, col),
                               formats=FIGURE_FORMATS)
        figures[col] = (png.name, svg.name)
    return figures


def write(c: Comparison, out: Path) -> list[Path]:
    """Write the views and figures to ``out``, replacing only files an earlier ``sml compare`` listed."""
    from sml.utils import atomic

    stems = c.figure_stems()
    names = [*TEXT_FILES, *(f"{s}.{fmt}" for s in stems.values() for fmt in FIGURE_FORMATS)]
    owned = owned_files(out)
    _refuse_foreign(out, names, owned)  # before anything is written
    atomic.check_writable(out)
    # the manifest names every file first: one left by a crash below is still ours next time
    _manifest(out, c, sorted(set(owned) | set(names)))
    figures = plot(c, out, stems)
    texts = {"compare.md": markdown(c), "compare.csv": csv_text(c), "compare.tex": latex(c),
             "compare.html": html_page(c, figures)}
    for name, text in texts.items():
        atomic.write_text(out / name, text)
    _manifest(out, c, names)
    for stale in sorted(set(owned) - set(names)):
        (out / stale).unlink(missing_ok=True)
    return [out / n for n in names] + [out / MANIFEST]
