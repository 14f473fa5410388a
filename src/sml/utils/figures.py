"""matplotlib figures without pyplot: the one way sml creates a figure and saves it (PNG + SVG).

Used by the report's curves and legend and by the diagnostics figure, so both
write their files the same way (through :mod:`sml.utils.atomic`).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from sml.utils.atomic import write_bytes
from sml.utils.run_folder import SOFTWARE

__all__ = ["new_figure", "save_figure", "PNG_DPI"]

PNG_DPI = 150  # PNG pixels per figure inch; SVG keeps the figure's own size
# Seed of the ids in SVG files: matplotlib draws a random one per file unless it is set, and fixed ids
# (with no date stamp) make the SVG of the same figure byte-identical between runs.
_SVG_HASH_SALT = "sml"


def new_figure(figsize: tuple[float, float], **kwargs: Any):
    """A ``matplotlib.figure.Figure`` (100 dpi) on an Agg canvas: no pyplot global state, no display.

    ``kwargs`` go to ``Figure`` (e.g. ``layout="constrained"``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, stem: str | Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write ``fig`` as ``<stem>.<fmt>`` for each format (PNG at :data:`PNG_DPI`); returns the paths.

    Files are written atomically and carry no date stamp, so the same figure gives the same bytes;
    the creator mark makes them sml's, so a later run may replace them (``run_folder.written_by_sml``).
    """
    import matplotlib

    stem = Path(stem)
    out = []
    for fmt in formats:
        buf = io.BytesIO()
        meta = {"Date": None, "Creator": SOFTWARE} if fmt == "svg" else {"Software": SOFTWARE}
        with matplotlib.rc_context({"svg.hashsalt": _SVG_HASH_SALT}):
            fig.savefig(buf, format=fmt, dpi=PNG_DPI if fmt == "png" else None, metadata=meta)
        path = stem.with_name(f"{stem.name}.{fmt}")
        write_bytes(path, buf.getvalue())
        out.append(path)
    return out
