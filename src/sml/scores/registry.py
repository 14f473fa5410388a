"""The method registry's names (no torch import, so the CLI can list and check its choices cheaply).

:data:`METHODS` is every method in the order ``sml eval`` reports them; the scorer
classes behind the names are ``sml.scores.SCORERS``. :func:`canonical_method` is
the one place that forgives case, ``-`` and the aliases. :data:`APPLIES_TO` says
which network outputs each method reads (sml-algorithm.md section 8), and
:func:`check_methods_apply` refuses the others before anything runs.
"""
from __future__ import annotations

from typing import Iterable

from sml.errors import InputError

#: every method, in the order ``sml eval`` reports them (the CLI's choices)
METHODS: tuple[str, ...] = ("sml", "max_logit", "msp", "entropy", "energy", "gen", "rba", "eam")

#: what ``sml eval`` runs when no method is given
DEFAULT_METHODS: tuple[str, ...] = ("sml", "max_logit", "msp", "entropy", "energy")

ALIASES = {"maxlogit": "max_logit", "ml": "max_logit", "max_softmax": "msp", "standardized_max_logits": "sml",
           "generalized_entropy": "gen", "rejected_by_all": "rba"}

#: a network's output kinds (model card ``output.kind``)
OUTPUT_KINDS: tuple[str, ...] = ("logits", "mask-classification")

_ANY = OUTPUT_KINDS
#: the output kinds each method applies to; a mask-classification network's methods read its per-pixel class
#: scores S, except eam, which reads the per-query class and mask logits (:data:`PER_QUERY`)
APPLIES_TO: dict[str, tuple[str, ...]] = {
    "sml": _ANY, "max_logit": _ANY, "msp": _ANY, "entropy": _ANY, "energy": _ANY,
    "gen": ("logits",), "rba": ("mask-classification",), "eam": ("mask-classification",),
}

#: methods that need the per-query outputs of a mask-classification network, not only its class scores
PER_QUERY: tuple[str, ...] = ("eam",)

_KIND_WORDS = {"logits": "per-pixel class logits (output.kind: logits)",
               "mask-classification": "a mask-classification network's class and mask logits per query "
                                       "(Mask2Former, MaskFormer; output.kind: mask-classification)"}


def canonical_method(name: str) -> str:
    """The registered name of method ``name`` (case, ``-`` and the aliases forgiven); unknown names raise."""
    key = str(name).strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in METHODS:
        raise InputError(f"unknown scoring method {name!r}; choose from {', '.join(METHODS)} "
                         f"(comma-separated on the command line, e.g. --method sml,max_logit)")
    return key


def check_methods_apply(methods: Iterable[str], output_kind: str) -> None:
    """Raise :class:`InputError` naming every method of ``methods`` that does not apply to a network whose
    output kind is ``output_kind`` (:data:`OUTPUT_KINDS`), with the output each of them needs."""
    if output_kind not in OUTPUT_KINDS:
        raise InputError(f"unknown network output kind {output_kind!r}; choose from {', '.join(OUTPUT_KINDS)}")
    keys = dict.fromkeys(canonical_method(m) for m in methods)
    wrong = [m for m in keys if output_kind not in APPLIES_TO[m]]
    if not wrong:
        return
    groups: dict[tuple[str, ...], list[str]] = {}
    for m in wrong:
        groups.setdefault(APPLIES_TO[m], []).append(m)
    needs = "; ".join(f"{' and '.join(ms)} need{'s' if len(ms) == 1 else ''} "
                      f"{' or '.join(_KIND_WORDS[k] for k in kinds)}" for kinds, ms in groups.items())
    raise InputError(f"{', '.join(wrong)}: not applicable to this network, whose output kind is {output_kind}; "
                     f"{needs}. Leave {', '.join(wrong)} out of --method, or use a network with that output")
