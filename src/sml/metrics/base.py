"""The one interface of the pooled pixel metrics, so that callers never ask which one they hold.

:class:`~sml.metrics.AnomalyMetrics` (exact, spec 5) and
:class:`~sml.metrics.SmiycPixelMetric` (the SegmentMeIfYouCan tool's binned
metric, spec 7) both derive from :class:`PixelMetric`: the same ``update``
signature and return convention, ``compute``, ``curves``, ``summary``,
``best_f1_threshold`` and the :class:`~sml.utils.state.Stateful` state methods.
"""
from __future__ import annotations

import abc
from typing import Any

import numpy as np

from sml.errors import InputError
from sml.utils.state import Stateful

__all__ = ["PixelMetric"]


class PixelMetric(Stateful, abc.ABC):
    """A pooled pixel metric of anomaly maps, fed one image (or batch) at a time.

    ``state_dict()`` / ``load_state_dict()`` / ``merge`` / ``sync`` follow
    :class:`~sml.utils.state.Stateful`; ``load_state_dict`` refuses a state whose
    counts do not add up (:class:`~sml.errors.InputError`).
    """

    ignore_index: int

    @abc.abstractmethod
    def update(self, anomaly: Any, labels: Any, *, frame_ap: bool = False) -> float | None:
        """Add an ``H x W`` map (or a ``B x H x W`` batch) and its labels (1 anomaly, 0 inlier, ``ignore_index``).

        ``labels`` may be a prepared :class:`~sml.metrics.FrameLabels` (one
        image). With ``frame_ap=True`` (one image) returns that image's own AP
        where the metric defines one (NaN without anomaly or inlier pixels),
        else None.
        """

    @abc.abstractmethod
    def compute(self) -> dict[str, Any]:
        """The pooled numbers: ``auroc``, ``ap``, ``fpr95``, ``fpr95_convention``, ``threshold_at_95tpr``,
        ``best_f1``, ``best_f1_threshold``, ``pixels``, ``ignored``, ``images``, ``reason`` (None or why NaN)."""

    @abc.abstractmethod
    def curves(self, max_points: int = 2000) -> dict[str, dict[str, np.ndarray]]:
        """``{"roc": {fpr, tpr, threshold}, "pr": {precision, recall, threshold}}``, at most ``max_points`` each.

        Raises :class:`~sml.errors.InputError` when a class is missing.
        """

    @abc.abstractmethod
    def best_f1_threshold(self) -> float:
        """The score threshold of the pooled best pixel F1 (what the component metrics use); NaN without anomaly pixels."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget every pixel added so far (settings are kept)."""

    @abc.abstractmethod
    def totals(self) -> dict[str, int]:
        """What was counted, without computing anything: ``anomaly``, ``inlier``, ``ignored`` pixels and ``images``."""

    @property
    @abc.abstractmethod
    def nbytes(self) -> int:
        """Bytes held by the state."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The state as plain arrays, numbers and strings (settings included)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> Any:
        """Replace the state with ``state`` (from :meth:`state_dict`), refusing inconsistent counts; returns ``self``."""

    @abc.abstractmethod
    def merge(self, other: Any) -> Any:
        """Add ``other``'s pixels (a metric of the same kind and settings) to this one; returns ``self``."""

    def summary(self, max_points: int = 2000) -> tuple[dict[str, Any], Any]:
        """``(compute(), curves(max_points))``; the curves are None where a class is missing."""
        try:
            cur = self.curves(max_points)
        except InputError:  # no positives or no negatives: compute() says why
            cur = None
        return self.compute(), cur

    def _check_mergeable(self, other: Any) -> None:
        """Refuse to merge a metric of another kind, with another ``ignore_index``, or this one itself."""
        if not isinstance(other, type(self)):
            raise InputError(f"can only merge another {type(self).__name__}, got {type(other).__name__}")
        if other.ignore_index != self.ignore_index:
            raise InputError(f"cannot merge metrics with ignore_index {other.ignore_index} into one with "
                             f"{self.ignore_index}")
        if other is self:
            raise InputError("cannot merge a metric into itself (that would count every pixel twice)")
