"""ROC / precision-recall figures and colour legends (matplotlib, Agg backend)."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sml.errors import InputError
from sml.utils.atomic import write_bytes
from sml.utils.run_folder import SOFTWARE


def _figure(figsize: tuple[float, float]):
    # The object-oriented API with an Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, stem: Path, formats: Sequence[str]) -> list[Path]:
    out = []
    for fmt in formats:
        buf = io.BytesIO()
        # Fixed metadata keep the SVG byte-identical between runs (no date stamp); the creator marks the
        # figure as sml's, so a later run may replace it (sml.utils.run_folder.written_by_sml)
        meta = {"Date": None, "Creator": SOFTWARE} if fmt == "svg" else {"Software": SOFTWARE}
        fig.savefig(buf, format=fmt, dpi=150 if fmt == "png" else None, metadata=meta)
        path = stem.with_name(f"{stem.name}.{fmt}")
        write_bytes(path, buf.getvalue())
        out.append(path)
    return out


def _label(method: str, key: str, value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    shown = f"{100 * v:.2f}%" if math.isfinite(v) else "n/a"
    return f"{method} ({key} {shown})"


def _xy(curve: Mapping[str, Any], xk: str, yk: str, method: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        x = np.asarray(curve[xk], dtype=np.float64)
        y = np.asarray(curve[yk], dtype=np.float64)
    except KeyError as exc:
        raise InputError(f"curves of {method!r}: the {kind} curve has no {exc.args[0]!r} list "
                         f"(expected keys {xk!r} and {yk!r}); rewrite curves.json with sml eval") from None
    if x.shape != y.shape or x.ndim != 1:
        raise InputError(f"curves of {method!r}: {kind} {xk!r} and {yk!r} must be lists of equal "
                         f"length, got {x.shape} and {y.shape}")
    return x, y


def plot_curves(curves: Mapping[str, Mapping[str, Any]], out_stem: str | Path, title: str = "",
                positive_fraction: float | None = None,
                formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """ROC (left) and precision-recall (right) of every method on one figure; returns [png, svg].

    ``curves`` is curves.json: ``{method: {"roc": {"fpr", "tpr"}, "pr":
    {"precision", "recall"}, "auroc", "ap"}}``; the legends show AUROC / AP
    ("n/a" when NaN). Files are ``<out_stem>.png`` and ``<out_stem>.svg``.
    ``positive_fraction`` (anomaly share of evaluated pixels) draws the chance
    level of precision.
    """
    if not curves:
        raise InputError("plot_curves needs at least one method's curves")
    stem = Path(out_stem)
    fig = _figure((11.0, 4.6))
    ax_roc, ax_pr = fig.subplots(1, 2)
    import matplotlib

    colours = matplotlib.colormaps["tab10"].colors
    for i, (method, c) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        if "roc" in c:
            fpr, tpr = _xy(c["roc"], "fpr", "tpr", method, "roc")
            ax_roc.plot(fpr, tpr, color=colour, lw=1.6, label=_label(method, "AUROC", c.get("auroc")))
        if "pr" in c:
            rec_p = c["pr"]
            prec, rec = _xy(rec_p, "precision", "recall", method, "pr")
            # drawstyle "steps-post" matches AP's rectangle sum (no interpolation).
            order = np.argsort(rec, kind="stable")
            ax_pr.plot(rec[order], prec[order], color=colour, lw=1.6, drawstyle="steps-post",
                       label=_label(method, "AP", c.get("ap")))
    ax_roc.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
    ax_roc.axhline(0.95, color="0.5", lw=0.8, ls="--")
    ax_roc.text(0.99, 0.935, "95% TPR", ha="right", va="top", fontsize=8, color="0.4")
    ax_roc.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate",
               ylabel="true-positive rate", title="ROC")
    if positive_fraction is not None and math.isfinite(positive_fraction):
        ax_pr.axhline(positive_fraction, color="0.7", lw=0.8, ls=":")
    ax_pr.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision",
              title="precision-recall")
    for ax in (ax_roc, ax_pr):
        ax.grid(True, color="0.92")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right" if ax is ax_roc else "upper right", fontsize=8, framealpha=0.9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, stem, formats)


def colour_legend(ranges: Mapping[str, tuple[float, float]], out_stem: str | Path,
                  cmap: str = "inferno", note: str = "",
                  formats: Sequence[str] = ("png",)) -> list[Path]:
    """One labelled horizontal colour bar per method for its (vmin, vmax) range; returns the files."""
    if not ranges:
        raise InputError("colour_legend needs at least one method's range")
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from sml.report.images import colormap_lut

    colormap_lut(cmap)  # clear InputError for an unknown name
    n = len(ranges)
    fig = _figure((6.0, 0.25 + 0.62 * n))
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, (method, (lo, hi)) in zip(axes, ranges.items()):
        fig.colorbar(ScalarMappable(Normalize(lo, hi), cmap=cmap), cax=ax, orientation="horizontal")
        ax.set_title(f"{method}", fontsize=9, loc="left", pad=2)
        ax.tick_params(labelsize=8)
    if note:
        fig.text(0.01, 0.005, note, fontsize=7, color="0.35", va="bottom")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    return _save(fig, Path(out_stem), formats)
