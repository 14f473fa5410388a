"""Every table sml prints on the console: the plain-text layout and each command's table.

A low layer (it imports nothing of sml), so that every part may print through it: ``sml eval``'s
metrics (:func:`metrics_table`), ``sml stats``' per-class statistics (:func:`stats_table`), ``sml
diagnose``'s per-class diagnostics (:func:`class_diagnostics_table`), ``sml models`` (:func:`models_listing`)
and ``sml models check`` (:func:`model_check_table`). Each takes plain values (dicts, objects read
through their attributes) and returns the text; the ``print_*`` functions add what follows the table.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["format_table", "metrics_table", "print_metrics", "RARE_PIXELS", "stats_table", "print_stats",
           "class_diagnostics_table", "model_check_table", "models_listing"]

#: classes with fewer pixels than this get a "rare" warning in the statistics table
RARE_PIXELS = 1000


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None,
                 rule: bool = True) -> str:
    """A plain-text table: columns two spaces apart, the first left-aligned and the rest right-aligned unless
    ``align`` says (one ``l`` / ``r`` per column); a line of dashes under the header when ``rule``."""
    cells = [[str(h) for h in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    align = align or ("l" + "r" * (len(header) - 1))
    lines = []
    for j, r in enumerate(cells):
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)]
        lines.append("  ".join(parts).rstrip())
        if j == 0 and rule:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------- sml eval
def _pct(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.2f}"


def metrics_table(metrics: dict[str, Any]) -> str:
    """The table ``sml eval`` prints from its metrics.json: percent, one row per method."""
    comp = any("components" in r for r in metrics["methods"].values())
    header = ["method", "AUROC %", "AP %", "FPR@95 %"] + (["sIoU %", "PPV %", "mean F1 %"] if comp else [])
    rows = []
    for m, r in metrics["methods"].items():
        row = [m, _pct(r.get("auroc")), _pct(r.get("ap")), _pct(r.get("fpr95"))]
        if comp:
            c = r.get("components") or {}
            row += [_pct(c.get("siou")), _pct(c.get("ppv")), _pct(c.get("mean_f1"))]
        rows.append(row)
    px = metrics["pixels"]
    title = (f"{metrics['dataset']}: {metrics['frames']} labelled frames"
             f"{'' if metrics['frames_scored'] == metrics['frames'] else ' of ' + str(metrics['frames_scored'])}, "
             f"{px['anomaly']:,} anomaly / {px['inlier']:,} inlier pixels, model {metrics['model']}")
    return title + "\n" + format_table(header, rows)


def print_metrics(metrics: dict[str, Any], out: Path, file: Any = None) -> None:
    """Print :func:`metrics_table` and where the results are."""
    file = file or sys.stdout
    print(metrics_table(metrics), file=file)
    print(f"results written to {out}/ (metrics.json, metrics.csv, curves.json, frames.json)", file=file)


# ---------------------------------------------------------------- sml stats
def stats_table(stats: Any, rare: int = RARE_PIXELS) -> tuple[str, list[str]]:
    """Per-class table (pixels, share, mean, std) of class statistics (``count``, ``mean``, ``std``,
    ``class_names``, ``usable``) and the warnings for empty, rare or unusable classes."""
    import numpy as np
    import torch

    count = np.asarray(torch.as_tensor(stats.count).cpu(), dtype=np.float64)
    mean = np.asarray(torch.as_tensor(stats.mean).cpu(), dtype=np.float64)
    std = np.asarray(torch.as_tensor(stats.std).cpu(), dtype=np.float64)
    names = list(getattr(stats, "class_names", None) or [str(c) for c in range(len(count))])
    usable = np.asarray(torch.as_tensor(getattr(stats, "usable", count >= 2)).cpu(), dtype=bool)
    total = max(count.sum(), 1.0)
    rows, warnings = [], []
    for c, name in enumerate(names):
        note = ""
        if count[c] == 0:
            note = "EMPTY"
            warnings.append(f"class {c} ({name}) was never predicted: SML falls back to the pooled "
                            f"mean/std for it")
        elif not usable[c]:
            note = "UNUSABLE"
            warnings.append(f"class {c} ({name}) has {int(count[c])} pixels and no usable std: SML falls "
                            f"back to the pooled mean/std for it")
        elif count[c] < rare:
            note = "rare"
            warnings.append(f"class {c} ({name}) has only {int(count[c])} pixels: its mean/std are noisy")
        fmt = (lambda v: f"{v:.4f}" if np.isfinite(v) else "-")
        rows.append([c, name, f"{int(count[c]):,}", f"{100 * count[c] / total:.2f}", fmt(mean[c]), fmt(std[c]), note])
    table = format_table(["id", "class", "pixels", "%", "mean", "std", ""], rows, align="llrrrrl")
    return table, warnings


def print_stats(stats: Any, frames: int, path: Any, file: Any = None) -> None:
    """Print the table and warnings of a finished ``sml stats`` run."""
    file = file or sys.stdout
    table, warnings = stats_table(stats)
    print(table, file=file)
    for w in warnings:
        print(f"warning: {w}", file=file)
    print(f"statistics of {frames} frames written to {Path(path)}", file=file)


# ---------------------------------------------------------------- sml diagnose
def _f(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _box(b: dict[str, Any]) -> str:
    if not b["pixels"]:
        return "-"
    return f"{_f(b['median']):.1f} [{_f(b['q1']):.1f},{_f(b['q3']):.1f}]"


def class_diagnostics_table(classes: Sequence[dict[str, Any]]) -> str:
    """One row per class of diagnostics.json (in the order given): anomaly share and pixels, inlier pixels,
    training mean ± std, the median [quartiles] max logit of inlier and anomaly pixels, z of the anomalies'."""
    header = ("class", "anomaly %", "anomaly px", "inlier px", "train mean±std", "inlier median [q1,q3]",
              "anomaly median [q1,q3]", "z(anomaly)")
    rows = []
    for c in classes:
        mu, sd = _f(c["train_mean"]), _f(c["train_std"])
        med = _f(c["max_logit"]["anomaly"]["median"])
        z = (med - mu) / sd if math.isfinite(mu) and math.isfinite(sd) and sd > 0 and math.isfinite(med) else math.nan
        rows.append((c["name"], f"{100 * _f(c['anomaly_share']):.1f}" if math.isfinite(_f(c["anomaly_share"])) else "n/a",
                     f"{c['anomaly_pixels']:,}", f"{c['inlier_pixels']:,}",
                     f"{mu:.2f}±{sd:.2f}" if math.isfinite(mu) else "n/a",
                     _box(c["max_logit"]["inlier"]), _box(c["max_logit"]["anomaly"]),
                     f"{z:+.2f}" if math.isfinite(z) else "-"))
    return format_table(header, rows, rule=False)


# ---------------------------------------------------------------- sml models
def model_check_table(model: Any, data: str, result: Any) -> str:
    """The numbers of ``sml models check`` (``result``: a :class:`sml.models.check.CheckResult`) as a short table."""
    lines = [f"{model.name} on {result.frames} labelled frames of {data} ({result.pixels} pixels):",
             f"  pixel accuracy {result.pixel_accuracy:.1%}   mIoU {result.miou:.1%}   "
             f"(chance: {result.chance_accuracy:.1%} / {result.chance_miou:.1%})"]
    if result.swapped_miou is not None:
        other = "BGR" if result.channel_order == "RGB" else "RGB"
        also = " (mean/std reversed too)" if model.mean is not None else ""
        lines.append(f"  with channels as {other}{also}: pixel accuracy {result.swapped_accuracy:.1%}   "
                     f"mIoU {result.swapped_miou:.1%}")
    if result.nonfinite_frames or result.swapped_nonfinite_frames:
        lines.append(f"  NaN or infinite logits on {result.nonfinite_frames} frames (other order: "
                     f"{result.swapped_nonfinite_frames})")
    lines += [f"    {cls:<14} IoU {iou:.1%}" for cls, iou in result.per_class_iou.items()]
    lines.append(f"  ({result.miou_definition})")
    return "\n".join(lines)


def models_listing(rows: Sequence[dict[str, Any]], verbose: bool = False) -> str:
    """The table ``sml models`` prints from its rows (one dict per architecture and published configuration);
    ``verbose``: where each cached file is, then each configuration's weights file, sha256, URLs and licence."""
    header = ("NAME", "KIND", "INPUT (HxW)", "CLASSES", "NORM", "WEIGHTS")
    lines = []
    for r in rows:
        size = "x".join(map(str, r["input_size"])) if r["input_size"] else "native"
        weights = r["weights"] if verbose or not r["weights"].startswith("cached") else "cached"
        lines.append((r["name"], r["kind"], size, str(r["classes"]), r["normalization"], weights))
    out = [format_table(header, lines, align="l" * len(header), rule=False)]
    if verbose:
        for r in rows:
            if r["kind"] == "pretrained" and r["filename"]:
                out.append(f"\n{r['name']}: {r['description']}")
                out.append(f"  file {r['filename']}  sha256 {r['sha256'] or 'unknown (not published)'}")
                out += [f"  url  {url}" for url in r["urls"] or ["(no direct URL; see the note above)"]]
                out.append(f"  home {r['homepage']}  licence {r['licence']}")
                if r["reference_statistics"]:
                    out.append("  ships the published class statistics")
    return "\n".join(out)
