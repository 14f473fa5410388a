"""The method registry's names (no torch import, so the CLI can list its choices cheaply).

:data:`METHODS` is every method in the order ``sml eval`` reports them; the scorer
classes behind the names are ``sml.scores.SCORERS``. :func:`canonical_method` is
the one place that forgives case, ``-`` and the aliases.
"""
from __future__ import annotations

from sml.errors import InputError

#: every method, in the order ``sml eval`` reports them by default (the CLI's choices)
METHODS: tuple[str, ...] = ("sml", "max_logit", "msp", "entropy", "energy")

ALIASES = {"maxlogit": "max_logit", "ml": "max_logit", "max_softmax": "msp", "standardized_max_logits": "sml"}


def canonical_method(name: str) -> str:
    """The registered name of method ``name`` (case, ``-`` and the aliases forgiven); unknown names raise."""
    key = str(name).strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in METHODS:
        raise InputError(f"unknown scoring method {name!r}; choose from {', '.join(METHODS)} "
                         f"(comma-separated on the command line, e.g. --method sml,max_logit)")
    return key
