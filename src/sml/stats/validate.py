"""The declarations of class statistics, as a file (``stats.json``), as a state dict and as arguments.

A damaged or hand-edited statistics file used to be silently wrong (a NaN mean
became 0, a negative variance gave NaN scores, ``var`` contradicting ``m2`` was
ignored). :data:`STATS_JSON` declares every entry of a ``stats.json`` (type,
length, per-class rules between counts, means, variances and ``m2``) for
:mod:`sml.utils.schema`, whose reader refuses a bad file naming it, the class
(index and name) and the fix; :data:`STATE` does the same for
``ClassStatistics.state_dict()`` (resume chunks, ``sync``) and :data:`ARGUMENTS`
for the constructor's arguments, from the same field declarations.
:class:`~sml.stats.ClassStatistics` builds itself from what they return,
without checking a second time.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sml.data.cityscapes import cityscapes_tables
from sml.errors import InputError
from sml.utils.schema import Context, Field, Problem, Schema, Voice

__all__ = ["read_stats_json", "parse_stats_json", "check_stats_dict", "check_reference_stats", "STATS_JSON", "STATE",
           "ARGUMENTS", "default_names"]

#: Relative tolerance between ``var`` and ``m2 / (count - 1)``: both are written from the same
#: float64 numbers, so anything beyond rounding means one of them was changed.
VAR_M2_RTOL = 1e-9

_FIX = READ_FIX = "Recompute the file with `sml stats` (or restore the one it wrote)."
_DISAGREE_FIX = " If you changed 'var' on purpose, delete the 'm2' entry so that 'var' is used."
_MAX_LISTED = 3
_CITYSCAPES = cityscapes_tables()[2]


def default_names(n: int) -> list[str]:
    """The class names statistics of ``n`` classes have when none are given (Cityscapes' for 19)."""
    return list(_CITYSCAPES) if n == len(_CITYSCAPES) else [f"class_{i}" for i in range(n)]


def _names(ctx: Context) -> list[str]:
    return ctx.get("class_names") or default_names(ctx.get("num_classes"))


def _class(i: int, ctx: Context) -> str:
    return f"class {i} '{_names(ctx)[i]}'"


# ---------------------------------------------------------------- declarations
NUM_CLASSES = Field("num_classes", type="int", required=True, ge=1,
                    says={"invalid": "num_classes must be a positive integer, found {value}"})
CLASS_NAMES = Field("class_names", type="list", null=True, length="num_classes", item=Field("", type="str"),
                    says={"invalid": "'class_names' must be a list of strings",
                          "length": "'class_names' has {count} names but num_classes is {length}"})


def _per_class(name: str, required: bool) -> Field:
    """A list of one number (or null) per class."""
    return Field(name, type="list", required=required, null=not required, length="num_classes",
                 item=Field("", type="number", null=True), label=_class,
                 says={"invalid": "'{key}' must be a list of {num_classes} numbers, found {type}",
                       "length": "'{key}' has {count} entries but num_classes is {length}: every per-class list "
                                 "needs exactly one entry per class",
                       "item": "{key}[{index}] ({label}) is {value}, not a number"})


def _show(x: float | None) -> str:
    if x is None:
        return "null"
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return repr(int(x)) if float(x).is_integer() and abs(x) < 2 ** 53 else repr(x)


def _reference(v: dict[str, Any]) -> bool:
    """Statistics without counts (the reference implementation's): every count null."""
    return all(c is None for c in v["count"])


def _without_counts(v: dict[str, Any], ctx: Context) -> list[Problem]:
    """Rule: statistics without counts need a finite mean and a finite non-negative variance per class."""
    if not _reference(v):
        return []
    problems = [ctx.problem("m2", "'m2' is given but 'count' is null: sums of squares need pixel counts")
                ] if v["m2"] is not None else []
    for i, (mu, var) in enumerate(zip(v["mean"], v["var"])):
        if mu is None or not math.isfinite(mu):
            problems.append(ctx.problem("mean", f"{_class(i, ctx)} has mean {_show(mu)}; statistics without "
                                                f"counts need a finite mean for every class"))
        if var is None or not math.isfinite(var) or var < 0:
            problems.append(ctx.problem("var", f"{_class(i, ctx)} has variance {_show(var)}; statistics without "
                                               f"counts need a finite non-negative variance for every class"))
    return problems


def _counts(v: dict[str, Any], ctx: Context) -> list[Problem]:
    """Rule: counts are null everywhere or non-negative integers everywhere."""
    if _reference(v):
        return []
    return [ctx.problem("count", f"{_class(i, ctx)} has count null while other classes have counts") if c is None
            else ctx.problem("count", f"{_class(i, ctx)} has count {_show(c)}; counts are pixel numbers "
                                      f"(non-negative integers)")
            for i, c in enumerate(v["count"]) if c is None or not math.isfinite(c) or c < 0 or c != int(c)]


def _mean_problem(who: str, c: float, mu: float | None) -> str | None:
    if mu is not None and math.isinf(mu):
        return f"{who} has mean {_show(mu)}"
    if c > 0 and (mu is None or math.isnan(mu)):
        return f"{who} has {int(c)} pixels but mean {_show(mu)}"
    return None


def _var_problem(who: str, c: float, var: float | None) -> str | None:
    given = var is not None and not math.isnan(var)
    if given and (math.isinf(var) or var < 0):  # type: ignore[operator]
        return f"{who} has variance {_show(var)}; a variance is finite and non-negative"
    if c >= 2 and not given:
        return f"{who} has {int(c)} pixels but variance {_show(var)}"
    if c < 2 and given:
        return (f"{who} has {int(c)} pixel(s) but variance {_show(var)}; the variance of fewer than 2 pixels is "
                f"undefined (null)")
    return None


def _m2_problem(who: str, c: float, s: float | None, var: float | None) -> str | None:
    given = s is not None and not math.isnan(s)
    if given and (math.isinf(s) or s < 0):  # type: ignore[operator]
        return f"{who} has m2 {_show(s)}; a sum of squared deviations is finite and non-negative"
    if c >= 2 and not given:
        return f"{who} has {int(c)} pixels but m2 {_show(s)}"
    if c < 2 and given and s != 0.0:
        return f"{who} has {int(c)} pixel(s) but m2 {_show(s)} (it must be 0 or null)"
    if c >= 2 and var is not None and math.isfinite(var) and var >= 0:
        from_m2 = s / (c - 1)  # type: ignore[operator]
        if not math.isclose(var, from_m2, rel_tol=VAR_M2_RTOL, abs_tol=0.0):
            return (f"{who} has var {var!r} but m2 / (count - 1) = {from_m2!r}: 'var' and 'm2' disagree (one of them "
                    f"was edited)")
    return None


def _moments(v: dict[str, Any], ctx: Context) -> list[Problem]:
    """Rule: a class with pixels has a finite mean, one with 2 or more a finite non-negative variance, and
    ``m2`` (when given) agrees with ``var``."""
    if _reference(v):
        return []
    m2 = v["m2"] or [None] * len(v["count"])
    texts = [t for i, (c, mu, var, s) in enumerate(zip(v["count"], v["mean"], v["var"], m2))
             for t in (_mean_problem(_class(i, ctx), c, mu), _var_problem(_class(i, ctx), c, var),
                       None if v["m2"] is None else _m2_problem(_class(i, ctx), c, s, var)) if t]
    fix = _FIX + (_DISAGREE_FIX if any("disagree" in t for t in texts) else "")
    return [ctx.problem("", t, fix) for t in texts]


#: Every entry of a ``stats.json`` (:meth:`ClassStatistics.to_dict`) and the rules between them
STATS_JSON = Schema((
    NUM_CLASSES,
    CLASS_NAMES,
    _per_class("count", True),
    _per_class("mean", True),
    _per_class("var", True),
    _per_class("m2", False),
    Field("usable", type="list", length="num_classes",
          says={"invalid": "'usable' must be a list of {num_classes} booleans"}),
    *(Field(k, null=True) for k in ("format", "model", "data", "created", "inference")),  # provenance, as it is
), rules=(_without_counts, _counts, _moments), missing_together=True,
    says={"mapping": "expected a JSON object (a stats.json written by `sml stats`), found {type}",
          "missing_all": "missing key(s) {fields}; is this a stats.json written by `sml stats`?"},
    voice=Voice(prefix="{source}: ", fix=_FIX, listed=_MAX_LISTED))


def _state_moments(v: dict[str, Any], ctx: Context) -> list[Problem]:
    """Rule of a state: ``(n, mean, M2)`` that data could have produced (see :data:`STATE`)."""
    n, mean, m2, ref_var = (None if v[k] is None else v[k].astype(np.float64) for k in ("n", "mean", "m2", "ref_var"))
    with np.errstate(invalid="ignore"):
        checks = [
            (~(np.isfinite(n) & (n >= 0) & (n == np.round(n))),
             lambda i: f"has count {float(n[i])!r}; counts are pixel numbers (non-negative integers)"),
            (~np.isfinite(mean), lambda i: f"has {n[i]:.0f} pixels but mean {float(mean[i])!r}"),
            (~(np.isfinite(m2) & (m2 >= 0)),
             lambda i: f"has {n[i]:.0f} pixels but a sum of squared deviations (m2) of {float(m2[i])!r}; it "
                       f"is finite and >= 0"),
            ((n < 2) & (m2 != 0),
             lambda i: f"has {n[i]:.0f} pixel(s) but m2 {float(m2[i])!r}; fewer than 2 pixels deviate by nothing"),
        ]
        if ref_var is not None:
            if ref_var.shape != n.shape or (n != 0).any():
                return [ctx.problem("ref_var", "reference statistics (ref_var) carry one variance per class and no "
                                               "pixel counts")]
            checks.append((~(np.isfinite(ref_var) & (ref_var >= 0)),
                           lambda i: f"has variance {float(ref_var[i])!r}; a variance is finite and >= 0"))
    for bad, problem in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return [ctx.problem("", f"{_class(i, ctx)} {problem(i)}")]
    return []


def _array(name: str, null: bool = False) -> Field:
    return Field(name, type="array", required=not null, null=null, dtype="iuf", ndim=1, length="num_classes",
                 expected="a 1-D array of numbers")


#: :meth:`ClassStatistics.state_dict` (resume chunks, ``sync``): settings and float64 arrays
STATE = Schema((
    NUM_CLASSES, replace(CLASS_NAMES, required=True, null=False),
    *(Field(k, null=True) for k in ("model", "data", "created")),
    _array("n"), _array("mean"), _array("m2"), _array("ref_var", null=True),
), rules=(_state_moments,), says={"length": "n, mean and m2 must have {length} entries each"},
    voice=Voice(prefix="statistics state: "))

#: :class:`ClassStatistics`' arguments: the file's declarations of the classes
ARGUMENTS = Schema((NUM_CLASSES, replace(CLASS_NAMES, convert=lambda v, ctx: [str(c) for c in v]
                                         if isinstance(v, (list, tuple)) else v,
                                         says={"invalid": "class_names must be a list of names",
                                               "length": "class_names has {count} names for {length} classes"})),
                   voice=Voice(prefix=""))


# ---------------------------------------------------------------- files
def parse_stats_json(path: str | os.PathLike) -> Any:
    """What a ``stats.json`` holds, parsed but not yet checked (unreadable, empty and non-JSON files refused)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read statistics file {p}: {exc.strerror or exc}. Check the path.") from None
    hint = (" Reference .npy statistics are read with ClassStatistics.from_reference_npy (or `--stats MEAN.npy "
            "--stats-var VAR.npy`).") if p.suffix.lower() == ".npy" else ""
    if not raw.strip():
        raise InputError(f"statistics file {p} is empty. {_FIX}{hint}")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{p} is not valid JSON: it is not UTF-8 text (a binary file?). {_FIX}{hint}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"{p} is not valid JSON: {exc}. {_FIX}{hint}") from None


def read_stats_json(path: str | os.PathLike) -> dict[str, Any]:
    """The checked contents of a ``stats.json``: read, parsed and passed through :func:`check_stats_dict`."""
    d = parse_stats_json(path)
    check_stats_dict(d, path)
    return d


def check_stats_dict(d: Any, source: str | os.PathLike) -> dict[str, Any]:
    """Refuse a parsed ``stats.json`` whose entries are missing, of the wrong type or length, or inconsistent
    (:data:`STATS_JSON`); returns the checked values (numbers as floats, null as None).

    Counts are null everywhere (reference statistics) or non-negative integers;
    a class with pixels has a finite mean, a class with 2 or more a finite
    non-negative ``var``, and ``m2`` (when present) agrees with ``var``.
    """
    return STATS_JSON.read(d, source)


def _refuse(source: str | os.PathLike, problems: list[str], fix: str = _FIX) -> None:
    if problems:
        raise InputError(Voice(fix=fix, listed=_MAX_LISTED).message(str(source), [Problem("", p) for p in problems]))


def check_reference_stats(means: dict[int, float], vars_: dict[int, float], mean_path: str | os.PathLike,
                          var_path: str | os.PathLike, class_names: Sequence[str] | None = None) -> int:
    """Refuse reference ``{class: value}`` statistics that do not cover classes 0..C-1 alike or hold
    non-finite means or non-finite / negative variances; return C."""
    fix = "Use the cityscapes_mean.npy / cityscapes_var.npy published with the reference code, or `sml stats`."
    if set(means) != set(vars_):
        only_m, only_v = sorted(set(means) - set(vars_)), sorted(set(vars_) - set(means))
        _refuse(f"{mean_path} and {var_path}", [
            f"they cover different classes (only in the mean file: {only_m or 'none'}; only in the variance "
            f"file: {only_v or 'none'})"], fix)
    n = max(means) + 1
    if sorted(means) != list(range(n)):
        _refuse(mean_path, [f"class indices must be 0..{n - 1} without gaps, found "
                            f"{sorted(means)}"], fix)
    if class_names is not None and len(class_names) != n:
        raise InputError(f"{len(class_names)} class names given for the {n} classes of {mean_path}; pass "
                         f"{n} names (or none for the defaults).")
    names = list(class_names) if class_names is not None else default_names(n)
    bad_m = [f"class {i} '{names[i]}' has mean {_show(means[i])}" for i in range(n) if not math.isfinite(means[i])]
    _refuse(mean_path, bad_m, "Every class needs a finite mean. " + fix)
    bad_v = [f"class {i} '{names[i]}' has variance {_show(vars_[i])}" for i in range(n)
             if not math.isfinite(vars_[i]) or vars_[i] < 0]
    _refuse(var_path, bad_v, "Every class needs a finite non-negative variance. " + fix)
    return n


