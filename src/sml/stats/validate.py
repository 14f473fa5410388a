"""Checks of class-statistics files before anything is computed from them.

A damaged or hand-edited statistics file used to be silently wrong (a NaN mean
became 0, a negative variance gave NaN scores, ``var`` contradicting ``m2`` was
ignored). These pure functions take what was read from a file and raise
:class:`~sml.errors.InputError` naming the file, the class (index and name) and
the fix; they return nothing, so the loaders stay the one place that builds
:class:`~sml.stats.ClassStatistics`.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from sml.errors import InputError

__all__ = ["read_stats_json", "check_stats_dict", "check_reference_stats"]

#: Relative tolerance between ``var`` and ``m2 / (count - 1)``: both are written from the same
#: float64 numbers, so anything beyond rounding means one of them was changed.
VAR_M2_RTOL = 1e-9

_FIX = READ_FIX = "Recompute the file with `sml stats` (or restore the one it wrote)."
_MAX_LISTED = 3


def read_stats_json(path: str | os.PathLike) -> dict[str, Any]:
    """The checked contents of a ``stats.json``: read, parsed and passed through :func:`check_stats_dict`."""
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
        d = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{p} is not valid JSON: it is not UTF-8 text (a binary file?). {_FIX}{hint}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"{p} is not valid JSON: {exc}. {_FIX}{hint}") from None
    check_stats_dict(d, p)
    return d


def _names(d: dict[str, Any], n: int) -> list[str]:
    names = d.get("class_names")
    if isinstance(names, list) and len(names) == n and all(isinstance(x, str) for x in names):
        return names
    from sml.data.cityscapes import cityscapes_tables  # the defaults ClassStatistics uses

    cityscapes = cityscapes_tables()[2]
    return list(cityscapes) if n == len(cityscapes) else [f"class_{i}" for i in range(n)]


def _refuse(source: str | os.PathLike, problems: list[str], fix: str = _FIX) -> None:
    if not problems:
        return
    more = len(problems) - _MAX_LISTED
    listed = "; ".join(problems[:_MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")
    raise InputError(f"{source}: {listed}{'' if listed.endswith(('?', '.')) else '.'} {fix}")


def _number(v: Any) -> float | None:
    """``v`` as a float when it is a JSON number (not a bool, not a string), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _number_list(d: dict[str, Any], key: str, n: int, source: str | os.PathLike,
                 names: list[str]) -> list[float | None]:
    """``d[key]`` as floats (None for null; NaN literals stay NaN), or refuse its length / element types."""
    values = d[key]
    if not isinstance(values, list):
        _refuse(source, [f"'{key}' must be a list of {n} numbers, found {type(values).__name__}"])
    if len(values) != n:
        _refuse(source, [f"'{key}' has {len(values)} entries but num_classes is {n}: every per-class list "
                         f"needs exactly one entry per class"])
    out: list[float | None] = []
    bad: list[str] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        x = _number(v)
        if x is None:
            bad.append(f"{key}[{i}] (class {i} '{names[i]}') is {v!r}, not a number")
        out.append(x)
    _refuse(source, bad)
    return out


def check_stats_dict(d: Any, source: str | os.PathLike) -> None:
    """Refuse a parsed ``stats.json`` whose entries are missing, of the wrong type or length, or inconsistent.

    Counts are null everywhere (reference statistics) or non-negative integers;
    a class with pixels has a finite mean, a class with 2 or more a finite
    non-negative ``var``, and ``m2`` (when present) agrees with ``var``.
    """
    if not isinstance(d, dict):
        _refuse(source, [f"expected a JSON object (a stats.json written by `sml stats`), found "
                         f"{type(d).__name__}"])
    missing = [k for k in ("num_classes", "count", "mean", "var") if k not in d]
    if missing:
        _refuse(source, [f"missing key(s) {', '.join(missing)}; is this a stats.json written by `sml stats`?"])
    n = d["num_classes"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        _refuse(source, [f"num_classes must be a positive integer, found {n!r}"])
    names_raw = d.get("class_names")
    if names_raw is not None:
        if not isinstance(names_raw, list) or not all(isinstance(x, str) for x in names_raw):
            _refuse(source, ["'class_names' must be a list of strings"])
        if len(names_raw) != n:
            _refuse(source, [f"'class_names' has {len(names_raw)} names but num_classes is {n}"])
    names = _names(d, n)
    count = _number_list(d, "count", n, source, names)
    mean = _number_list(d, "mean", n, source, names)
    var = _number_list(d, "var", n, source, names)
    m2 = _number_list(d, "m2", n, source, names) if d.get("m2") is not None else None
    if "usable" in d and (not isinstance(d["usable"], list) or len(d["usable"]) != n):
        _refuse(source, [f"'usable' must be a list of {n} booleans"])

    def cls(i: int) -> str:
        return f"class {i} '{names[i]}'"

    problems: list[str] = []
    if all(c is None for c in count):  # reference statistics: no counts, every class needs mean and var
        if m2 is not None:
            problems.append("'m2' is given but 'count' is null: sums of squares need pixel counts")
        for i in range(n):
            if mean[i] is None or not math.isfinite(mean[i]):  # type: ignore[arg-type]
                problems.append(f"{cls(i)} has mean {_show(mean[i])}; statistics without counts need a finite "
                                f"mean for every class")
            if var[i] is None or not math.isfinite(var[i]) or var[i] < 0:  # type: ignore[operator, arg-type]
                problems.append(f"{cls(i)} has variance {_show(var[i])}; statistics without counts need a "
                                f"finite non-negative variance for every class")
        _refuse(source, problems)
        return
    for i, c in enumerate(count):
        if c is None:
            problems.append(f"{cls(i)} has count null while other classes have counts")
        elif not math.isfinite(c) or c < 0 or c != int(c):
            problems.append(f"{cls(i)} has count {_show(c)}; counts are pixel numbers (non-negative integers)")
    _refuse(source, problems)
    for i in range(n):
        c, mu, v = count[i], mean[i], var[i]
        assert c is not None
        if mu is not None and math.isinf(mu):
            problems.append(f"{cls(i)} has mean {_show(mu)}")
        elif c > 0 and (mu is None or math.isnan(mu)):
            problems.append(f"{cls(i)} has {int(c)} pixels but mean {_show(mu)}")
        if v is not None and not math.isnan(v) and (math.isinf(v) or v < 0):
            problems.append(f"{cls(i)} has variance {_show(v)}; a variance is finite and non-negative")
        elif c >= 2 and (v is None or math.isnan(v)):
            problems.append(f"{cls(i)} has {int(c)} pixels but variance {_show(v)}")
        elif c < 2 and v is not None and not math.isnan(v):
            problems.append(f"{cls(i)} has {int(c)} pixel(s) but variance {_show(v)}; the variance of fewer than "
                            f"2 pixels is undefined (null)")
        if m2 is None:
            continue
        s = m2[i]
        if s is not None and not math.isnan(s) and (math.isinf(s) or s < 0):
            problems.append(f"{cls(i)} has m2 {_show(s)}; a sum of squared deviations is finite and non-negative")
        elif c >= 2 and (s is None or math.isnan(s)):
            problems.append(f"{cls(i)} has {int(c)} pixels but m2 {_show(s)}")
        elif c < 2 and s not in (None, 0.0) and not math.isnan(s):  # type: ignore[arg-type]
            problems.append(f"{cls(i)} has {int(c)} pixel(s) but m2 {_show(s)} (it must be 0 or null)")
        elif c >= 2 and v is not None and math.isfinite(v) and v >= 0:
            from_m2 = s / (c - 1)  # type: ignore[operator]
            if not math.isclose(v, from_m2, rel_tol=VAR_M2_RTOL, abs_tol=0.0):
                problems.append(f"{cls(i)} has var {v!r} but m2 / (count - 1) = {from_m2!r}: 'var' and 'm2' "
                                f"disagree (one of them was edited)")
    _refuse(source, problems, _FIX + (" If you changed 'var' on purpose, delete the 'm2' entry so that 'var' "
                                      "is used." if any("disagree" in p for p in problems) else ""))


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
    names = list(class_names) if class_names is not None else _names({}, n)
    bad_m = [f"class {i} '{names[i]}' has mean {_show(means[i])}" for i in range(n) if not math.isfinite(means[i])]
    _refuse(mean_path, bad_m, "Every class needs a finite mean. " + fix)
    bad_v = [f"class {i} '{names[i]}' has variance {_show(vars_[i])}" for i in range(n)
             if not math.isfinite(vars_[i]) or vars_[i] < 0]
    _refuse(var_path, bad_v, "Every class needs a finite non-negative variance. " + fix)
    return n


def _show(x: float | None) -> str:
    if x is None:
        return "null"
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return repr(int(x)) if float(x).is_integer() and abs(x) < 2 ** 53 else repr(x)
