"""The table ``sml stats`` prints (and ``sml demo`` on request): per class pixels, share, mean, std, warnings."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

#: classes with fewer pixels than this get a "rare" warning in the table
RARE_PIXELS = 1000


def stats_table(stats: Any, rare: int = RARE_PIXELS) -> tuple[str, list[str]]:
    """Per-class table (pixels, share, mean, std) and the warnings for empty, rare or unusable classes."""
    import numpy as np
    import torch

    from sml.pipelines.common import format_table

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


def print_report(stats: Any, frames: int, path: str | os.PathLike, file: Any = None) -> None:
    """Print the table and warnings of a finished ``sml stats`` run."""
    file = file or sys.stdout
    table, warnings = stats_table(stats)
    print(table, file=file)
    for w in warnings:
        print(f"warning: {w}", file=file)
    print(f"statistics of {frames} frames written to {Path(path)}", file=file)
