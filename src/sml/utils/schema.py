"""Declared schemas of the files a user supplies, and the one reader that checks them.

stats.json, model cards, training recipes and the state dicts of resume chunks are each
declared once as a :class:`Schema`: :class:`Field` entries with their type, whether they
may be missing or null, choices, range, length (fixed or another field's value), element
declaration, nested schema and hooks, plus cross-field rules. :meth:`Schema.read` checks a
parsed mapping (from JSON, YAML or a chunk) field by field, in declaration order, and returns
the checked values; the first field or rule that fails raises one
:class:`~sml.errors.InputError` paragraph naming the file (``source``), the field and the fix.

How each kind of file words a refusal is data, not code: templates keyed by the step that
failed (``missing``, ``type``, ``range``, ...) at three levels (a field's own, its schema's,
the defaults in :data:`SAYS`), formatted with the field's dotted path, the value and what
was expected; :class:`Voice` adds the prefix naming the file and the default fix. Only the
standard library is imported here (NumPy values are recognised by their attributes), so
importing a schema costs nothing at ``sml --help``.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from sml.errors import InputError

__all__ = ["Field", "Schema", "Voice", "Problem", "Invalid", "Context", "SAYS", "schema_of", "build", "show"]

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()

#: The default wording of each step's refusal; ``{field}`` is the dotted path of the field.
SAYS: dict[str, str] = {
    "mapping": "expected a mapping of {known}, found {type}",
    "unknown": "{field} is not a known field",
    "missing": "{field} is missing",
    "missing_all": "missing key(s) {fields}",
    "null": "{field} may not be null",
    "placeholder": "{field} is still {placeholder}",
    "inapplicable": "{field} does not apply here",
    "type": "{field} must be {expected}, got {value}",
    "choice": "{field} must be {choices_or}, got {value}",
    "range": "{field} must be {bounds}, got {value}",
    "length": "{field} must have {length} entries, got {count}",
    "item": "{field}[{index}] is {value}, not {expected}",
    "unique": "{field} repeats an entry",
    "pattern": "{field} is {value}",
    "check": "{field} {text}",
    "rule": "{text}",
}
#: steps a field's ``says["invalid"]`` words when it has no wording of that step itself
_INVALID = ("null", "type", "choice", "range", "length", "item", "unique", "pattern")

_EXPECTED = {"int": "an integer", "number": "a number", "float": "a number", "str": "a non-empty string",
             "bool": "true or false", "list": "a list", "mapping": "a mapping", "array": "an array", "any": "a value"}


class Invalid(Exception):
    """Raised by a field's ``check`` / ``convert`` hook: what is wrong (after the field's name) and the fix."""

    def __init__(self, text: str, fix: str | None = None) -> None:
        super().__init__(text)
        self.text, self.fix = text, fix


@dataclass(frozen=True)
class Problem:
    """One thing wrong: the field (dotted path, "" for the whole file), the words, the fix (None: the voice's)."""

    field: str
    text: str
    fix: str | None = None


class _Refused(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = problems


@dataclass(frozen=True)
class Voice:
    """How one kind of file opens and closes a refusal: ``prefix`` (``{source}`` is the file), the fix when a
    problem has none, and how many problems one message lists (the rest are counted)."""

    prefix: str = "{source}: "
    fix: str = ""
    listed: int = 3
    error: type[InputError] = InputError

    def message(self, source: str, problems: list[Problem]) -> str:
        more = len(problems) - self.listed
        listed = "; ".join(p.text for p in problems[:self.listed]) + (f"; and {more} more" if more > 0 else "")
        fix = next((p.fix for p in problems if p.fix), None) or self.fix
        end = "" if listed.endswith(("?", ".")) or not fix else "."
        prefix = self.prefix.format(source=source) if source or "{source}" not in self.prefix else ""
        return f"{prefix}{listed}{end} {fix}".rstrip()


@dataclass(frozen=True)
class Field:
    """One declared entry of a mapping.

    ``type``: ``int`` (not bool; NumPy integers and 0-d integer arrays count), ``number``
    (int or float, returned as float), ``float`` (same), ``str`` (non-empty), ``bool``, ``list``
    (list or tuple), ``mapping``, ``array`` (anything ``numpy.asarray`` takes, checked for
    ``dtype``, kinds such as ``"iu"`` or one name such as ``"int32"``, and ``ndim``) or ``any``. ``required`` may depend on earlier fields
    (a function of the :class:`Context`); an absent optional field reads as ``default``.
    ``null``: None is a value (else it is refused, or read as absent in a schema with
    ``null_is_absent``). ``applies``: when it returns False, a given value is refused
    (``inapplicable``) and the field reads as ``default``. ``ge``/``gt``/``le``/``lt``/``finite``:
    the range of a number; ``length``: of a list or an array's first axis (an int, the name of an
    earlier field holding it, or a function of the context); ``item``: the declaration every
    element meets; ``schema``: a nested mapping. ``convert`` runs before the checks and ``check``
    after them; both take ``(value, context)``, return the value and raise :class:`Invalid`.
    ``coerce`` accepts strings and other numbers for numbers (YAML and command-line values).
    ``says``/``fix``: this field's wording per step (``invalid`` words every value problem)
    and fix (one string, or per step).
    """

    name: str
    type: str = "any"
    required: bool | Callable[["Context"], bool] = False
    default: Any = None
    null: bool = False
    applies: Callable[["Context"], bool] | None = None
    choices: tuple[Any, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = False
    length: int | str | Callable[["Context"], int] | None = None
    nonempty: bool = False
    unique: bool = False
    pattern: str | None = None
    dtype: str | None = None
    ndim: int | None = None
    item: "Field | None" = None
    schema: "Schema | None" = None
    coerce: bool = False
    aliases: tuple[str, ...] = ()
    convert: Callable[[Any, "Context"], Any] | None = None
    check: Callable[[Any, "Context"], Any] | None = None
    label: Callable[[int, "Context"], str] | None = None
    expected: str = ""
    says: Mapping[str, str] = field(default_factory=dict)
    fix: str | Mapping[str, str] | None = None


Rule = Callable[[dict[str, Any], "Context"], Iterable[Problem]]


@dataclass(frozen=True)
class Schema:
    """A mapping's declared fields and cross-field rules, and how its refusals are worded.

    ``unknown``: ``"refuse"`` or ``"ignore"`` keys that are not declared. ``missing_together``:
    all absent required fields in one problem (``missing_all``) before any other check.
    ``placeholder``: a value that means "not filled in yet". ``says``/``fixes``: this
    schema's wording per step (a field's own wins); ``words``: extra template names.
    Rules run after the fields, with the checked values, and return :class:`Problem` s.
    """

    fields: tuple[Field, ...]
    rules: tuple[Rule, ...] = ()
    unknown: str = "ignore"
    missing_together: bool = False
    null_is_absent: bool = False
    placeholder: str | None = None
    says: Mapping[str, str] = field(default_factory=dict)
    fixes: Mapping[str, str] = field(default_factory=dict)
    words: Mapping[str, Any] = field(default_factory=dict)
    voice: Voice = field(default_factory=Voice)

    def names(self) -> tuple[str, ...]:
        """The declared field names, in order."""
        return tuple(f.name for f in self.fields)

    def read(self, data: Any, source: Any = "", voice: Voice | None = None, **extra: Any) -> dict[str, Any]:
        """The checked values of ``data`` (every declared field, absent ones at their default).

        Raises the voice's error (:class:`InputError`) naming ``source``, the field and the fix.
        ``extra`` is available to hooks and rules (``context.extra``) and to message templates.
        """
        ctx = Context(self, str(source), voice or self.voice, extra)
        try:
            return _read_mapping(self, data, ctx)
        except _Refused as refused:
            raise ctx.voice.error(ctx.voice.message(ctx.source, refused.problems)) from None

    def with_voice(self, voice: Voice) -> "Schema":
        """The same declarations, worded for another reader (e.g. a Python caller instead of a file)."""
        return dataclasses.replace(self, voice=voice)


class Context:
    """What hooks, rules and templates see: the file (``source``), the values checked so far at this
    level (``values``) and above (:meth:`get`), the dotted ``path`` of this level and the caller's ``extra``."""

    def __init__(self, schema: Schema, source: str, voice: Voice, extra: dict[str, Any],
                 parent: "Context | None" = None, path: str = "") -> None:
        self.schema, self.source, self.voice, self.extra = schema, source, voice, extra
        self.parent, self.path = parent, path
        self.values: dict[str, Any] = {}

    def get(self, name: str, default: Any = None) -> Any:
        """A checked value of this level or an enclosing one (``default`` when absent)."""
        ctx: Context | None = self
        while ctx is not None:
            if name in ctx.values:
                return ctx.values[name]
            ctx = ctx.parent
        return self.extra.get(name, default)

    def child(self, schema: Schema, path: str) -> "Context":
        return Context(schema, self.source, self.voice, self.extra, self, path + ".")

    def problem(self, name: str, text: str, fix: str | None = None, **words: Any) -> Problem:
        """A rule's problem about field ``name`` of this level, worded by the schema's ``rule`` template."""
        path = self.path + name if name else self.path.rstrip(".")
        return Problem(path, _format(self._template(None, "rule"), self._words(path, text=text, **words)), fix)

    # -- wording ---------------------------------------------------------------------------------
    def _template(self, f: Field | None, step: str) -> str:
        for says in ((f.says if f else {}), self.schema.says):
            if step in says:
                return says[step]
            if (step in _INVALID or step == "invalid") and "invalid" in says:
                return says["invalid"]
        return SAYS[step]

    def _fix(self, f: Field | None, step: str) -> str | None:
        fix = f.fix if f is not None else None
        if isinstance(fix, str):
            return fix
        for fixes in (fix or {}, self.schema.fixes):
            for key in (step, "invalid" if step in _INVALID else None, "*"):
                if key in fixes:
                    return fixes[key]
        return None

    def _words(self, path: str, f: Field | None = None, value: Any = MISSING, **more: Any) -> "_Words":
        words = _Words(self, {"field": path, "key": path.rsplit(".", 1)[-1], "source": self.source,
                              "section": self.path.rstrip(".") or "<root>",
                              "known": ", ".join(self.schema.names())})
        if f is not None:
            words.update(_field_words(f))
        if value is not MISSING:
            words.update(value=show(value), type=type(value).__name__)
        words.update(more)
        return words

    def refuse(self, f: Field | None, step: str, path: str, value: Any = MISSING, **more: Any) -> _Refused:
        """The refusal of ``step`` for field ``f`` at ``path``, worded and with its fix."""
        words = self._words(path, f, value, **more)
        fix = self._fix(f, step)
        return _Refused([Problem(path, _format(self._template(f, step), words),
                                 None if fix is None else _format(fix, words))])


class _Words(dict):
    """Template names; a name not given is looked up in the checked values, then the schema's ``words``."""

    def __init__(self, ctx: Context, words: dict[str, Any]) -> None:
        super().__init__(words)
        self.ctx = ctx

    def __missing__(self, key: str) -> Any:
        word = self.ctx.schema.words.get(key, MISSING)
        if word is not MISSING:
            return word(self.ctx) if callable(word) else word
        return self.ctx.get(key, "?")


def _format(template: str, words: Mapping[str, Any]) -> str:
    return template.format_map(words)


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters, for messages that quote a user's value (an
    array is described by its dtype and shape)."""
    if getattr(value, "ndim", 0) and hasattr(value, "dtype"):
        article = "an" if str(value.dtype)[:1] in "aeio" else "a"
        return f"{article} {value.dtype} array of shape {tuple(value.shape)}"
    if _numpy_kind(value) is not None:
        value = value.item()  # a NumPy scalar or 0-d array, shown as its number
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _num(x: float) -> str:
    return repr(int(x)) if float(x).is_integer() else repr(x)


def _bounds(f: Field) -> str:
    lo = (f"[{_num(f.ge)}" if f.ge is not None else f"({_num(f.gt)}" if f.gt is not None else None)
    hi = (f"{_num(f.le)}]" if f.le is not None else f"{_num(f.lt)})" if f.lt is not None else None)
    if lo and hi:
        return f"in {lo}, {hi}"
    if lo:
        return (">= " if lo[0] == "[" else "> ") + lo[1:]
    if hi:
        return ("<= " if hi[-1] == "]" else "< ") + hi[:-1]
    return "finite"


def _or(choices: tuple[Any, ...]) -> str:
    words = [str(c) for c in choices]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _field_words(f: Field) -> dict[str, Any]:
    expected = f.expected or (f"a mapping of {', '.join(f.schema.names())}" if f.schema else _EXPECTED[f.type])
    choices = f.choices or ()
    return {"expected": expected, "kind": f.type, "choices": ", ".join(map(str, choices)), "choices_or": _or(choices) if choices
            else "", "with_choices": f" with one of {', '.join(map(str, choices))}" if choices else "",
            "bounds": _bounds(f), "length": f.length if isinstance(f.length, int) else "?"}


# ---------------------------------------------------------------- reading
def _read_mapping(schema: Schema, data: Any, ctx: Context) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ctx.refuse(None, "mapping", ctx.path.rstrip("."), data)
    _refuse_unknown(schema, data, ctx)
    if schema.missing_together:
        _refuse_missing(schema, data, ctx)
    for f in schema.fields:
        ctx.values[f.name] = _read_field(f, data, ctx)
    for rule in schema.rules:
        problems = list(rule(ctx.values, ctx))
        if problems:
            raise _Refused(problems)
    return ctx.values


def _refuse_unknown(schema: Schema, data: Mapping, ctx: Context) -> None:
    if schema.unknown != "refuse":
        return
    known = {n for f in schema.fields for n in (f.name, *f.aliases)}
    unknown = sorted((k for k in data if k not in known), key=str)
    if unknown:
        paths = [ctx.path + _cut(k) for k in unknown]
        raise ctx.refuse(None, "unknown", paths[0], unknown=", ".join(paths))


def _refuse_missing(schema: Schema, data: Mapping, ctx: Context) -> None:
    missing = [ctx.path + f.name for f in schema.fields if f.required is True and f.name not in data]
    if missing:
        raise ctx.refuse(None, "missing_all", missing[0], fields=", ".join(missing))


def _cut(key: Any, limit: int = 40) -> str:
    text = str(key)
    return text if len(text) <= limit else text[:limit] + " ..."


def _given(f: Field, data: Mapping) -> Any:
    for name in (f.name, *f.aliases):
        if name in data:
            return data[name]
    return MISSING


def _read_field(f: Field, data: Mapping, ctx: Context) -> Any:
    path = ctx.path + f.name
    value = _given(f, data)
    if value is None and not f.null and ctx.schema.null_is_absent:
        value = MISSING
    if f.applies is not None and not f.applies(ctx):
        if value is not MISSING and value is not None:
            raise ctx.refuse(f, "inapplicable", path, value)
        return f.default
    if value is MISSING:
        if f.required(ctx) if callable(f.required) else f.required:
            raise ctx.refuse(f, "missing", path)
        return f.default
    if value is None:
        if f.null:
            return None
        raise ctx.refuse(f, "null", path, value)
    if isinstance(value, str) and value == ctx.schema.placeholder:
        raise ctx.refuse(f, "placeholder", path, value, placeholder=ctx.schema.placeholder)
    return _check_value(f, value, ctx, path)


def _check_value(f: Field, value: Any, ctx: Context, path: str) -> Any:
    try:
        if f.convert is not None:
            value = f.convert(value, ctx)
        given, value = value, _typed(f, value, ctx, path)
        for step in (_choice, _range, _length, _items, _unique, _pattern, _nested):
            value = step(f, value, ctx, path, given)
        return value if f.check is None else f.check(value, ctx)
    except Invalid as exc:
        words = ctx._words(path, f, value, text=exc.text)
        fix = exc.fix if exc.fix is not None else ctx._fix(f, "check")
        raise _Refused([Problem(path, _format(ctx._template(f, "check"), words),
                                None if fix is None else _format(fix, words))]) from None


# ---------------------------------------------------------------- the steps
def _typed(f: Field, value: Any, ctx: Context, path: str) -> Any:
    out = _TYPES[f.type](value, f)
    if out is MISSING:  # a nested section is worded as the file itself is when it is not a mapping
        raise (ctx.refuse(f, "type", path, value) if f.schema is None else
               ctx.refuse(f, "mapping", path, value, section=path, known=", ".join(f.schema.names())))
    return out


def _numpy_kind(value: Any) -> str | None:
    """The dtype kind of a NumPy scalar or 0-d array (without importing NumPy), else None."""
    return getattr(getattr(value, "dtype", None), "kind", None) if getattr(value, "shape", None) == () else None


def _as_int(value: Any, f: Field) -> Any:
    if isinstance(value, bool):
        return MISSING
    if isinstance(value, int):
        return value
    if _numpy_kind(value) in ("i", "u"):
        return int(value)  # a NumPy integer or 0-d integer array (state dicts)
    if f.coerce and isinstance(value, (float, str)):
        x = _as_float(value, f)
        return int(x) if x is not MISSING and math.isfinite(x) and x == int(x) else MISSING
    return MISSING


def _as_float(value: Any, f: Field) -> Any:
    if isinstance(value, bool):
        return MISSING
    if isinstance(value, (int, float)):
        return float(value)
    if _numpy_kind(value) in ("i", "u", "f"):
        return float(value)
    if f.coerce and not isinstance(value, (list, tuple, dict)):
        try:  # what float() takes: numeric strings, tensors of one element, ...
            return float(value)
        except (TypeError, ValueError):
            return MISSING
    return MISSING


def _as_str(value: Any, f: Field) -> Any:
    if f.coerce and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and value.strip() else MISSING


def _as_list(value: Any, f: Field) -> Any:
    if f.coerce and isinstance(f.length, int) and _as_float(value, f) is not MISSING:
        return [value] * f.length  # one number stands for every entry (crop_size=512)
    return list(value) if isinstance(value, (list, tuple)) else MISSING


def _as_array(value: Any, f: Field) -> Any:
    import numpy as np

    try:
        a = np.asarray(value)
    except (TypeError, ValueError):
        return MISSING
    if f.dtype is not None and not _dtype_fits(a, f.dtype):
        return MISSING
    return a if f.ndim is None or a.ndim == f.ndim else MISSING


def _dtype_fits(a: Any, dtype: str) -> bool:
    """``dtype`` is one exact name (``"int32"``: digits in it) or dtype kinds (``"iu"``: any integers)."""
    return a.dtype.name == dtype if any(c.isdigit() for c in dtype) else a.dtype.kind in dtype


_TYPES: dict[str, Callable[[Any, Field], Any]] = {
    "int": _as_int, "number": _as_float, "float": _as_float, "str": _as_str,
    "bool": lambda v, f: v if isinstance(v, bool) else bool(v) if _numpy_kind(v) == "b" else MISSING,
    "list": _as_list, "array": _as_array,
    "mapping": lambda v, f: v if isinstance(v, Mapping) else MISSING,
    "any": lambda v, f: v,
}


def _choice(f: Field, value: Any, ctx: Context, path: str, given: Any) -> Any:
    if f.choices is not None and value not in f.choices:
        raise ctx.refuse(f, "choice", path, given)
    return value


def _in_range(f: Field, x: float) -> bool:
    return ((f.ge is None or x >= f.ge) and (f.gt is None or x > f.gt) and (f.le is None or x <= f.le)
            and (f.lt is None or x < f.lt) and (not f.finite or math.isfinite(x)))


def _range(f: Field, value: Any, ctx: Context, path: str, given: Any) -> Any:
    if isinstance(value, (int, float)) and not _in_range(f, value):
        raise ctx.refuse(f, "range", path, given)
    return value


def _expected_length(f: Field, ctx: Context) -> int | None:
    if f.length is None or isinstance(f.length, int):
        return f.length
    return ctx.get(f.length) if isinstance(f.length, str) else f.length(ctx)


def _length(f: Field, value: Any, ctx: Context, path: str, given: Any) -> Any:
    if not hasattr(value, "__len__") or isinstance(value, (str, Mapping)):
        return value
    n = _expected_length(f, ctx)
    if n is not None and len(value) != n:
        raise ctx.refuse(f, "length", path, given, length=n, count=len(value))
    if f.nonempty and len(value) == 0:
        raise ctx.refuse(f, "length", path, given, length="1 or more", count=0)
    return value


def _items(f: Field, value: Any, ctx: Context, path: str, given: Any) -> Any:
    if f.item is None or not isinstance(value, list):
        return value
    out, problems = [], []
    for i, v in enumerate(value):
        try:
            out.append(_read_item(f.item, v, ctx, f"{path}[{i}]"))
        except _Refused:
            problems.append(i)
    if not problems:
        return out
    if _whole(f, ctx):  # the field words its elements' problems as its own
        raise ctx.refuse(f, "invalid", path, given)
    expected = _field_words(f.item)["expected"]
    raise _Refused([ctx.refuse(f, "item", path, value[i], index=i, expected=expected,
                               label=f.label(i, ctx) if f.label else "").problems[0] for i in problems])


def _whole(f: Field, ctx: Context) -> bool:
    """Whether bad elements are worded as one problem of the field (an ``invalid`` wording and no ``item``
    wording at the nearest level that has either)."""
    for says in (f.says, ctx.schema.says):
        if "item" in says or "invalid" in says:
            return "item" not in says
    return False


def _read_item(item: Field, v: Any, ctx: Context, path: str) -> Any:
    if v is None:
        if item.null:
            return None
        raise _Refused([])
    return _check_value(item, v, ctx, path)


def _unique(f: Field, value: Any, ctx: Context, path: str, given: Any) -> Any:
    if f.unique and len(set(value)) != len(value):
        raise ctx.refuse(f, "unique", path, given)
    return value


def _pattern(f: Field, value: Any, ctx: Context, path: str, given: Any) -> Any:
    if f.pattern is not None and not re.fullmatch(f.pattern, value):
        raise ctx.refuse(f, "pattern", path, given)
    return value


def _nested(f: Field, value: Any, ctx: Context, path: str, given: Any) -> Any:
    return value if f.schema is None else _read_mapping(f.schema, value, ctx.child(f.schema, path))


# ---------------------------------------------------------------- dataclasses
_KINDS = {int: "int", float: "float", str: "str", bool: "bool"}


def schema_of(cls: type, says: Mapping[str, str] | None = None, fixes: Mapping[str, str] | None = None,
              voice: Voice | None = None) -> Schema:
    """The schema of a dataclass: one optional, coercing field per attribute, typed by its annotation
    (``int``, ``float``, ``str``, ``bool``, ``list[...]``, ``X | None``, nested dataclasses) with its default;
    a dataclass field's ``metadata`` adds declarations (``ge``, ``choices``, ``says``, ...) and the class's
    ``__rules__`` its cross-field rules."""
    hints = typing.get_type_hints(cls)
    fields = tuple(_dataclass_field(f, hints[f.name], says, fixes, voice) for f in dataclasses.fields(cls))
    return Schema(fields, rules=tuple(getattr(cls, "__rules__", ())), unknown="refuse", says=dict(says or {}),
                  fixes=dict(fixes or {}), voice=voice or Voice())


def _dataclass_field(f: dataclasses.Field, tp: Any, says: Any, fixes: Any, voice: Any) -> Field:
    args = typing.get_args(tp)
    null = type(None) in args and typing.get_origin(tp) is not list
    if null:
        tp = next(a for a in args if a is not type(None))
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    decl: dict[str, Any] = {"name": f.name, "default": default, "null": null, "coerce": True}
    if dataclasses.is_dataclass(tp):
        decl.update(type="mapping", null=True, schema=schema_of(tp, says, fixes, voice))
    elif typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        decl.update(type="list", item=Field("", type=_KINDS[inner], coerce=True))
    else:
        decl.update(type=_KINDS[tp])
    decl.update(f.metadata.get("schema", {}))
    return Field(**decl)


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """An instance of dataclass ``cls`` from values :meth:`Schema.read` checked (nested sections too;
    a null or absent section is its default)."""
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        v = values.get(f.name, MISSING)
        if v is MISSING:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            v = build(hints[f.name], v if isinstance(v, Mapping) else {})
        kwargs[f.name] = v
    return cls(**kwargs)
