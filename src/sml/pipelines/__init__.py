"""What ``sml stats``, ``sml eval`` and ``sml predict`` do, on one process or many, and their output writers.

Public entry points: :func:`compute_statistics`, :func:`evaluate`, :func:`predict_files`.
Sub-modules are imported lazily so that ``sml --help`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "compute_statistics": "sml.pipelines.stats",
    "StatsRun": "sml.pipelines.stats",
    "evaluate": "sml.pipelines.evaluate",
    "EvalConfig": "sml.pipelines.evaluate",
    "EvalRun": "sml.pipelines.evaluate",
    "predict_files": "sml.pipelines.predict",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'sml.pipelines' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
