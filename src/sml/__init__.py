"""Standardized Max Logits: anomaly segmentation on top of any segmentation network.

The top-level names are the public interface (see ``docs/design.md``); they are
imported lazily so that ``import sml`` and ``sml --help`` stay fast.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ClassStatistics": ("sml.stats", "ClassStatistics"),
    "SML": ("sml.scores", "SML"),
    "GEN": ("sml.scores", "GEN"),
    "RbA": ("sml.scores", "RbA"),
    "EAM": ("sml.scores", "EAM"),
    "MaskClassificationOutput": ("sml.scores", "MaskClassificationOutput"),
    "AnomalyMetrics": ("sml.metrics", "AnomalyMetrics"),
    "SMLError": ("sml.errors", "SMLError"),
    "scores": ("sml.scores", None),
    "models": ("sml.models", None),
    "metrics": ("sml.metrics", None),
    "data": ("sml.data", None),
    "stats": ("sml.stats", None),
    "report": ("sml.report", None),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'sml' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
