"""``open_dataset("KIND:PATH")``: the one entry point the pipelines and the CLI use."""
from __future__ import annotations

import difflib
import os

import numpy as np
from pathlib import Path
from typing import Any, Mapping

from sml.errors import InputError
from sml.data.base import Dataset
from sml.data.benchmarks import RoadAnomaly, SMIYCAnomaly, SMIYCObstacle
from sml.data.cityscapes import Cityscapes, FishyscapesLAF, FishyscapesStatic, LostAndFound
from sml.data.folder import Folder, parse_mapping

#: data-set kind -> loader class (each has a one-line ``description`` for --help)
DATASETS: dict[str, type[Dataset]] = {
    cls.kind: cls
    for cls in (
        Cityscapes,
        FishyscapesLAF,
        FishyscapesStatic,
        RoadAnomaly,
        SMIYCAnomaly,
        SMIYCObstacle,
        LostAndFound,
        Folder,
    )
}

# spellings people use for the same data sets
_ALIASES = {
    "fs-laf": "fishyscapes-laf",
    "fishyscapes-lostandfound": "fishyscapes-laf",
    "fishyscapes-lost-and-found": "fishyscapes-laf",
    "fs-static": "fishyscapes-static",
    "roadanomaly": "road-anomaly",
    "smiyc-roadanomaly21": "smiyc-anomaly",
    "smiyc-roadobstacle21": "smiyc-obstacle",
    "lostandfound": "lost-and-found",
    "laf": "lost-and-found",
}


def canonical_kind(kind: str) -> str:
    """Normalise a data-set kind (case, ``_`` for ``-``, known aliases); unknown kinds raise InputError."""
    k = kind.strip().lower().replace("_", "-")
    k = _ALIASES.get(k, k)
    if k not in DATASETS:
        close = difflib.get_close_matches(k, list(DATASETS), n=1)
        did = f" Did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown data set kind {kind!r}.{did} Known kinds: {', '.join(DATASETS)}.")
    return k


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"KIND:PATH"`` (or bare ``"KIND"``) into kind and path; PATH may itself contain ':'."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"data set must be given as KIND:PATH (e.g. road-anomaly:/data/RoadAnomaly_jpg), got {spec!r}")
    kind, sep, path = spec.partition(":")
    if not sep:
        return canonical_kind(kind), None
    if not path:
        raise InputError(f"--data {spec!r} names no folder; write {kind}:PATH")
    return canonical_kind(kind), path


def label_table(kind: str, mapping: Mapping | str | None = None) -> np.ndarray:
    """The kind's raw label value -> target value table (256 uint8 entries; values the kind
    does not expect map to 255), built without a data-set root. Cityscapes: the label-id table.
    ``folder`` needs its ``mapping`` (None: masks already 0/1/255)."""
    cls = DATASETS[canonical_kind(kind)]
    obj = cls.__new__(cls)  # the tables depend on the class (and the folder mapping), not on files
    if cls is Folder:
        obj._mapping = parse_mapping(mapping)
    elif mapping is not None:
        raise InputError(f"a label mapping applies to the folder kind only; {kind} uses its published labels")
    lut, known = obj._label_table()
    return np.where(known, lut, 255).astype(np.uint8)


def dataset_help() -> str:
    """``kind: description`` lines for ``--help``."""
    return "\n".join(f"  {k}: {cls.description}" for k, cls in DATASETS.items())


def open_dataset(
    spec: str,
    root: str | os.PathLike | None = None,
    split: str | None = None,
    allow_subset: bool = False,
    labels_required: bool | None = None,
    mapping: Mapping | str | None = None,
    **kw: Any,
) -> Dataset:
    """Open the data set ``"KIND:PATH"`` (or ``KIND`` with ``root``) and check its layout.

    ``split`` defaults per kind (cityscapes train, fishyscapes val,
    lost-and-found test; kinds without splits take none). ``allow_subset``
    accepts fewer frames than a fixed benchmark has. ``labels_required``
    None uses the kind's default (required for fishyscapes and
    road-anomaly). ``mapping`` is the folder kind's ``{raw: target}`` table;
    ``kw`` goes to the loader (folder: ``masks=``, ``mask_suffix=``).
    """
    kind, path = parse_spec(spec)
    if path is not None and root is not None and Path(path).expanduser().resolve() != Path(root).expanduser().resolve():
        raise InputError(f"data set given twice: {spec!r} and root={str(root)!r}; give the folder once")
    path = path if path is not None else (None if root is None else os.fspath(root))
    if path is None:
        raise InputError(f"no folder for data set {kind!r}: write --data {kind}:PATH (or pass root=)")
    cls = DATASETS[kind]
    if cls is Folder:
        if "," in path and not Path(path).expanduser().exists():
            images, masks = (s.strip() for s in path.split(",", 1))
            if kw.get("masks") is not None:
                raise InputError(f"mask folder given twice: in {spec!r} and masks={kw['masks']!r}")
            kw["masks"] = masks
            path = images
        return cls(path, split=split, allow_subset=allow_subset, labels_required=labels_required, mapping=mapping, **kw)
    if mapping is not None:
        raise InputError(f"a label mapping applies to the folder kind only; {kind} uses its published labels")
    if kw:
        raise InputError(f"{kind} takes no option(s) {', '.join(sorted(kw))}")
    return cls(path, split=split, allow_subset=allow_subset, labels_required=labels_required)
