"""Statistics and network, checked to belong together before the first forward pass.

Class statistics are per class of one network: its class order, its max logits.
:func:`check_pairing` compares them with the network in use, where `sml eval`,
`sml predict` and their Python functions meet both:

- class names: equal, in order, or refused (no option overrides this);
- the network: the statistics' ``model`` identity (name and sha256 of the
  weights or network file, :attr:`sml.models.SegmentationModel.identity`, which
  `sml stats` records) must be the network's; another network is refused unless
  the user says so (``--stats-from-other-network``), and the run records it;
- statistics that name no network (stats.json written before sml recorded it,
  statistics built in Python without ``model``, the reference code's ``.npy``
  files other than the published ones) cannot be checked: refused unless the
  user says so, recorded as unverified;
- the published statistics of ``deeplabv3plus_r101_os8`` (the zoo entry's, or
  the reference ``.npy`` files with exactly those values) carry the zoo entry's
  identity; the publisher gives no checksum of its weights, so they pair with
  that architecture run with the weights file of the published name.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from sml.errors import InputError

__all__ = ["check_pairing", "network_identity", "stats_identity", "OVERRIDE"]

#: the option that accepts statistics of another (or an unknown) network
OVERRIDE = "--stats-from-other-network"
_OVERRIDE_TEXT = f"{OVERRIDE} (Python: stats_from_other_network=True)"


def network_identity(model: Any) -> dict[str, Any] | None:
    """The network's identity (``{"name", "sha256", "file"}``), or None for objects that carry none."""
    ident = getattr(model, "identity", None)
    return dict(ident) if isinstance(ident, dict) else None


def _published(stats: Any) -> dict[str, Any] | None:
    """The zoo entry whose published statistics these are (same means and variances, no counts), or None."""
    if stats.has_counts:
        return None
    from sml.models.registry import get_config, list_pretrained

    for name in list_pretrained():
        cfg = get_config(name)
        if (cfg.stats_mean is not None and len(cfg.stats_mean) == stats.num_classes
                and np.array_equal(stats.mean, np.asarray(cfg.stats_mean, dtype=np.float64))
                and np.array_equal(stats.var, np.asarray(cfg.stats_var, dtype=np.float64))):
            return {"name": cfg.arch, "sha256": cfg.sha256, "file": cfg.filename, "published": cfg.name}
    return None


def stats_identity(stats: Any) -> dict[str, Any] | None:
    """The identity of the network the statistics came from, or None when they name none that can be checked."""
    model = getattr(stats, "model", None)
    if isinstance(model, dict) and isinstance(model.get("name"), str) and isinstance(model.get("sha256"), str):
        return dict(model)
    return _published(stats)


def _show(ident: dict[str, Any] | None) -> str:
    if ident is None:
        return "an unnamed network"
    file = f", {ident['file']}" if ident.get("file") else ""
    sha = f"sha256 {ident['sha256'][:12]}..." if ident.get("sha256") else "no published checksum"
    return f"'{ident.get('name')}'{file} ({sha})"


def _where(stats: Any, stats_path: Any) -> str:
    return f"the statistics {stats_path}" if stats_path else "the statistics given"


def _check_classes(model: Any, stats: Any, where: str, net: str) -> None:
    from sml.pipelines import common

    names = common.class_names(model)
    if names is None:  # the contract's defaults, as SegmentationModel and ClassStatistics use them
        from sml.stats import CITYSCAPES_CLASSES

        n = common.num_classes(model)
        names = list(CITYSCAPES_CLASSES) if n == len(CITYSCAPES_CLASSES) else [f"class_{i}" for i in range(n)]
    theirs = list(stats.class_names)
    if theirs == names:
        return
    if len(theirs) != len(names):
        what = f"they have {len(theirs)} classes, the network {len(names)}"
    else:
        diff = [i for i, (a, b) in enumerate(zip(theirs, names)) if a != b]
        shown = "; ".join(f"class {i} is '{theirs[i]}' in the statistics but '{names[i]}' in the network"
                          for i in diff[:3])
        what = f"{len(diff)} of {len(names)} classes differ ({shown}{'; ...' if len(diff) > 3 else ''})"
    raise InputError(
        f"{where} do not have the class names of the network {net}: {what}. Statistics: "
        f"[{', '.join(theirs)}]; network: [{', '.join(names)}]. Each class's statistics standardize the pixels "
        f"predicted as that class, so the names must be equal and in the same order. Compute statistics for "
        f"this network with `sml stats` (it records the network's classes), or give the network the "
        f"statistics were computed with.")


def check_pairing(model: Any, stats: Any, stats_path: Any = None,
                  stats_from_other_network: bool = False) -> dict[str, Any] | None:
    """Refuse ``stats`` that do not belong to ``model``; return what the run records about the pairing.

    The record: ``network`` and ``stats_network`` (identities; the latter None
    when the statistics name no checkable network, ``stats_model`` then holds
    what they say), ``verdict``: ``same-network``, ``published`` (the zoo's
    statistics, weights matched by file name), ``other-network`` or
    ``unverified`` (the last two only with ``stats_from_other_network``).
    None when no statistics are given.
    """
    if stats is None:
        return None
    where = _where(stats, stats_path)
    net = network_identity(model)
    _check_classes(model, stats, where, _show(net))
    theirs = stats_identity(stats)
    record: dict[str, Any] = {"network": net, "stats_network": theirs}
    if theirs is None:
        said = getattr(stats, "model", None)   # what they say instead, as JSON can hold it
        record["stats_model"] = said if isinstance(said, (str, dict, type(None))) else repr(said)
    verdict = _verdict(net, theirs)
    if verdict in ("same-network", "published"):
        return {**record, "verdict": verdict}
    if stats_from_other_network:
        import warnings

        from sml.utils import distributed

        said = _show(theirs) if theirs is not None else "a network they do not name"
        if distributed.is_main():  # once per run, not once per process
            warnings.warn(f"{where}, computed with {said}, are used with the network {_show(net)} as "
                          f"{OVERRIDE} asks; the results record it", UserWarning, stacklevel=3)
        return {**record, "verdict": verdict, "override": OVERRIDE}
    fix = (f"Compute statistics for this network with `sml stats --model ... -o stats.json`, or, if you mean "
           f"to use these anyway, add {_OVERRIDE_TEXT}; the run then records the pairing in its results.")
    if verdict == "unverified" and theirs is None:
        said = getattr(stats, "model", None)
        said_text = f" (they name only {said!r})" if said not in (None, "", {}) else ""
        raise InputError(
            f"{where} do not say which network they were computed with{said_text}: they carry no network name "
            f"and sha256 (statistics written by an older sml, built in Python without `model`, or the reference "
            f"code's .npy files other than the published ones), so they cannot be checked against the network "
            f"in use, {_show(net)}. {fix}")
    if verdict == "unverified":
        raise InputError(
            f"the network in use ({type(model).__name__}) does not say which network it is (it has no "
            f"`identity`: load it with sml.models.load or put it under the contract with sml.models.wrap), so "
            f"{where}, computed with {_show(theirs)}, cannot be checked against it. {fix}")
    if theirs.get("sha256") is None:
        detail = (f"the published statistics of {theirs['name']} belong to its weights file {theirs['file']} "
                  f"(the publisher gives no checksum, so the file name is what is compared)")
    else:
        detail = f"they were computed with {_show(theirs)}"
        if _earlier_mask_scores(net, theirs):
            detail = (f"they were computed with this network, {_show(theirs)}, by an earlier sml, which formed a "
                      f"mask-classification network's class scores as transformers' post-processing does (the "
                      f"sigmoid at the masks' resolution), not as sml-algorithm.md section 8 says")
    raise InputError(f"{where} come from another network: {detail}, but the network in use is {_show(net)}. "
                     f"Another network's max logits have other per-class means and spreads, so SML would "
                     f"standardize them wrongly. {fix}")


def _earlier_mask_scores(net: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """True for statistics of a transformers mask-classification network written before its identity carried
    its card: their class scores were formed by transformers' convention, not by section 8's."""
    card = net.get("card") if isinstance(net.get("card"), dict) else {}
    return (card.get("format") == "transformers" and (card.get("output") or {}).get("kind") == "mask-classification"
            and "card" not in theirs)


def _verdict(net: dict[str, Any] | None, theirs: dict[str, Any] | None) -> str:
    if theirs is None or net is None:
        return "unverified"
    if theirs.get("sha256") is None:  # published statistics: architecture and weights file name
        same = theirs.get("name") == net.get("name") and theirs.get("file") == net.get("file")
        return "published" if same else "other-network"
    same = theirs.get("name") == net.get("name") and theirs.get("sha256") == net.get("sha256")
    return "same-network" if same and not _earlier_mask_scores(net, theirs) else "other-network"
