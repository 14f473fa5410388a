"""The one state pattern of ``AnomalyMetrics``, ``ComponentMetrics`` and ``ClassStatistics``.

Each is built the torchmetrics way: ``update`` adds data, ``merge`` adds another
state of the same kind, ``compute`` gives the result, and ``state_dict()`` /
``load_state_dict()`` turn the state into plain NumPy arrays, numbers, strings
and lists (no objects), which is what resume chunks store (``.npz`` + JSON,
no pickle) and what :meth:`Stateful.sync` sends between processes. The
distributed reduction is written once, here: every rank's ``state_dict()`` is
gathered and merged in rank order, so the result equals one process's.
"""
from __future__ import annotations

import copy
from typing import Any, TypeVar

from sml.errors import InputError

S = TypeVar("S", bound="Stateful")


class Stateful:
    """Mixin: ``from_state_dict``, ``sync``, ``copy`` and pickling from ``state_dict`` / ``load_state_dict`` / ``merge``."""

    #: ``sync()`` may run once (a second call would count every other rank twice)
    _sync_once = True

    def state_dict(self) -> dict[str, Any]:
        """The state as plain arrays, numbers, strings and lists (settings included)."""
        raise NotImplementedError

    def load_state_dict(self: S, state: dict[str, Any]) -> S:
        """Replace this object's state with ``state`` (from :meth:`state_dict`); returns ``self``."""
        raise NotImplementedError

    def merge(self: S, other: S) -> S:
        """Add ``other``'s data to this state (in place); returns ``self``."""
        raise NotImplementedError

    @classmethod
    def from_state_dict(cls: type[S], state: dict[str, Any]) -> S:
        """A new object holding ``state``."""
        obj = cls.__new__(cls)
        return obj.load_state_dict(state)

    def sync(self: S) -> S:
        """Merge every ``torch.distributed`` rank's state in rank order, on every rank (no-op on one process)."""
        from sml.utils import distributed

        if not distributed.is_distributed():
            return self
        if self._sync_once and getattr(self, "_synced", False):
            raise InputError("sync() was already called on this object; call it once, after the last update")
        states = distributed.all_gather_object(self.state_dict())
        total = type(self).from_state_dict(states[0])
        for st in states[1:]:
            total.merge(type(self).from_state_dict(st))
        self.load_state_dict(total.state_dict())
        self._synced = True
        return self

    def __getstate__(self) -> dict[str, Any]:
        return self.state_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state)

    def __copy__(self: S) -> S:
        # a shallow copy would share arrays that both sides may grow or sort in place
        return type(self).from_state_dict(copy.deepcopy(self.state_dict()))
