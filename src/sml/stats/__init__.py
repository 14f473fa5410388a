"""Per-class max-logit statistics (spec 2): ``ClassStatistics``."""
from __future__ import annotations

from sml.stats.class_stats import CITYSCAPES_CLASSES, ClassStatistics

__all__ = ["ClassStatistics", "CITYSCAPES_CLASSES"]
