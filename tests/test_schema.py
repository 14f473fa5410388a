"""The schema mechanism (sml.utils.schema): declared fields, one reader, one message naming file, field and fix."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from sml.errors import InputError
from sml.utils.schema import Field, Invalid, Problem, Schema, Voice, build, schema_of

VOICE = Voice(prefix="thing {source}: ", fix="Fix the file.")


def _sizes_agree(values: dict[str, Any], ctx: Any) -> list[Problem]:
    if values["low"] is not None and values["low"] > values["high"]:
        return [ctx.problem("low", f"low ({values['low']}) is above high ({values['high']})", "Swap them.")]
    return []


SCHEMA = Schema((
    Field("n", type="int", required=True, ge=1),
    Field("names", type="list", null=True, length="n", item=Field("", type="str")),
    Field("values", type="list", length="n", item=Field("", type="number", null=True),
          label=lambda i, ctx: f"class {i}"),
    Field("mode", type="str", choices=("fast", "exact"), default="exact"),
    Field("low", type="number", finite=True, null=True),
    Field("high", type="number", default=1.0, gt=0, le=10),
    Field("section", type="mapping", schema=Schema((Field("depth", type="int", ge=0, required=True),),
                                                   unknown="refuse")),
), rules=(_sizes_agree,), unknown="refuse", voice=VOICE)


def _good(**change: Any) -> dict[str, Any]:
    d = {"n": 2, "names": ["a", "b"], "values": [1.5, None], "mode": "fast", "low": 0.5, "high": 2,
         "section": {"depth": 3}}
    d.update(change)
    return {k: v for k, v in d.items() if v is not _DROP}


_DROP = object()


def _refusal(d: Any, schema: Schema = SCHEMA) -> str:
    with pytest.raises(InputError) as info:
        schema.read(d, "f.json")
    return str(info.value)


def test_a_valid_mapping_reads_as_checked_values_with_defaults() -> None:
    got = SCHEMA.read(_good(mode=_DROP, high=_DROP, low=None), "f.json")
    assert got == {"n": 2, "names": ["a", "b"], "values": [1.5, None], "mode": "exact", "low": None,
                   "high": 1.0, "section": {"depth": 3}}
    assert isinstance(SCHEMA.read(_good(), "f.json")["high"], float)  # numbers are read as float


@pytest.mark.parametrize("change,message", [
    # types (a bool is not a number, a string is not an integer)
    ({"n": "2"}, "thing f.json: n must be an integer, got '2'. Fix the file."),
    ({"n": True}, "thing f.json: n must be an integer, got True. Fix the file."),
    ({"high": "2"}, "thing f.json: high must be a number, got '2'. Fix the file."),
    ({"mode": 3}, "thing f.json: mode must be a non-empty string, got 3. Fix the file."),
    ({"values": 1.0}, "thing f.json: values must be a list, got 1.0. Fix the file."),
    # ranges and choices
    ({"n": 0}, "thing f.json: n must be >= 1, got 0. Fix the file."),
    ({"high": 0}, "thing f.json: high must be in (0, 10], got 0. Fix the file."),
    ({"high": 11.5}, "thing f.json: high must be in (0, 10], got 11.5. Fix the file."),
    ({"low": math.inf}, "thing f.json: low must be finite, got inf. Fix the file."),
    ({"low": math.nan}, "thing f.json: low must be finite, got nan. Fix the file."),
    ({"mode": "slow"}, "thing f.json: mode must be fast or exact, got 'slow'. Fix the file."),
    # lengths from another field, elements with their labels
    ({"names": ["a"]}, "thing f.json: names must have 2 entries, got 1. Fix the file."),
    ({"values": ["x", None]}, "thing f.json: values[0] is 'x', not a number. Fix the file."),
    ({"names": ["a", 7]}, "thing f.json: names[1] is 7, not a non-empty string. Fix the file."),
    # null, missing, unknown, nested
    ({"n": None}, "thing f.json: n may not be null. Fix the file."),
    ({"n": _DROP}, "thing f.json: n is missing. Fix the file."),
    ({"colour": 1}, "thing f.json: colour is not a known field. Fix the file."),
    ({"section": {"depth": -1}}, "thing f.json: section.depth must be >= 0, got -1. Fix the file."),
    ({"section": {"depth": 1, "width": 2}}, "thing f.json: section.width is not a known field. Fix the file."),
    ({"section": []}, "thing f.json: expected a mapping of depth, found list. Fix the file."),
    # cross-field rules carry their own fix
    ({"low": 3.0}, "thing f.json: low (3.0) is above high (2.0). Swap them."),
])
def test_every_step_refuses_naming_file_field_and_fix(change: dict[str, Any], message: str) -> None:
    assert _refusal(_good(**change)) == message


def test_a_file_that_is_not_a_mapping_is_refused() -> None:
    assert _refusal([1, 2]) == "thing f.json: expected a mapping of n, names, values, mode, low, high, section, " \
                               "found list. Fix the file."


def test_every_bad_element_is_listed_up_to_the_voice_limit() -> None:
    d = _good(n=5, names=_DROP, values=["a", "b", 1, "c", "d"])
    assert _refusal(d) == ("thing f.json: values[0] is 'a', not a number; values[1] is 'b', not a number; "
                           "values[3] is 'c', not a number; and 1 more. Fix the file.")


def test_wording_is_chosen_field_first_then_schema_then_default() -> None:
    quiet = Schema((Field("n", type="int", ge=1, says={"range": "{key} is {value}; too small"}, fix="Raise it."),
                    Field("m", type="int", ge=1)),
                   says={"range": "the {field} of {source} is {value}", "missing": "no {field}"},
                   fixes={"missing": "Add '{key}: 1'."}, voice=Voice(prefix="{source}: "))
    assert _refusal({"n": 0, "m": 1}, quiet) == "f.json: n is 0; too small. Raise it."
    assert _refusal({"n": 1, "m": 0}, quiet) == "f.json: the m of f.json is 0"
    assert quiet.read({"n": 1}) == {"n": 1, "m": None}  # not required: reads as its default
    required = Schema((Field("m", type="int", required=True),), says={"missing": "no {field}"},
                      fixes={"missing": "Add '{key}: 1'."})
    assert _refusal({}, required) == "f.json: no m. Add 'm: 1'."


def test_invalid_words_every_value_problem_of_a_field_and_its_elements() -> None:
    size = Schema((Field("size", type="list", length=2, item=Field("", type="int", ge=1),
                         says={"invalid": "{field} must be [height, width] > 0, got {value}"}),))
    for bad in ([1], [0, 5], [1, "a"], "big"):
        assert _refusal({"size": bad}, size) == f"f.json: size must be [height, width] > 0, got {bad!r}"


def test_missing_fields_together_and_placeholders_and_null_as_absent() -> None:
    s = Schema((Field("a", type="int", required=True), Field("b", type="int", required=True),
                Field("c", type="str", default="x"), Field("d", type="list", null=True)),
               missing_together=True, null_is_absent=True, placeholder="FILL-IN")
    assert _refusal({"c": "y"}, s) == "f.json: missing key(s) a, b"
    assert _refusal({"a": 1, "b": 2, "c": "FILL-IN"}, s) == "f.json: c is still FILL-IN"
    assert s.read({"a": 1, "b": 2, "c": None, "d": None}) == {"a": 1, "b": 2, "c": "x", "d": None}


def test_applies_required_and_hooks_see_earlier_fields_and_extra() -> None:
    def exists(value: str, ctx: Any) -> str:
        if value not in ctx.extra["files"]:
            raise Invalid(f"names {value!r}, which does not exist", "Fix the path.")
        return value.upper()

    s = Schema((Field("format", type="str", required=True, choices=("file", "hub")),
                Field("file", type="str", required=lambda ctx: ctx.get("format") == "file",
                      applies=lambda ctx: ctx.get("format") == "file", check=exists,
                      says={"inapplicable": "{field} does not apply to format {format}"})),
               says={"check": "field {field} {text}"})
    assert s.read({"format": "file", "file": "a"}, files={"a"}) == {"format": "file", "file": "A"}
    assert s.read({"format": "hub"}, files=set()) == {"format": "hub", "file": None}
    with pytest.raises(InputError, match=r"^file does not apply to format hub$"):
        s.read({"format": "hub", "file": "a"}, files={"a"})
    with pytest.raises(InputError, match=r"^file is missing$"):
        s.read({"format": "file"}, files=set())
    with pytest.raises(InputError, match=r"^x\.yaml: field file names 'b', which does not exist\. Fix the path\.$"):
        s.read({"format": "file", "file": "b"}, "x.yaml", files={"a"})


def test_arrays_and_numpy_scalars_of_state_dicts() -> None:
    s = Schema((Field("n", type="int", ge=0), Field("keys", type="array", dtype="iu", ndim=1, length="n")),
               voice=Voice(prefix="metric state: "))
    got = s.read({"n": np.int64(3), "keys": np.arange(3, dtype=np.int32)}, "x")
    assert got["n"] == 3 and type(got["n"]) is int and got["keys"].dtype == np.int32
    assert s.read({"n": np.array(2), "keys": [4, 5]}, "x")["n"] == 2  # a 0-d array of a chunk
    with pytest.raises(InputError, match=r"^metric state: keys must be an array, got a float64 array of shape \(1,\)$"):
        s.read({"n": 1, "keys": np.array([0.5])}, "x")
    with pytest.raises(InputError, match=r"^metric state: keys must have 3 entries, got 2$"):
        s.read({"n": 3, "keys": np.zeros(2, np.int32)}, "x")
    with pytest.raises(InputError, match=r"^metric state: n must be an integer"):
        s.read({"n": np.float64(1.0), "keys": []}, "x")
    exact = Schema((Field("keys", type="array", dtype="int32", ndim=1),))
    assert exact.read({"keys": np.zeros(2, np.int32)})["keys"].dtype == np.int32
    with pytest.raises(InputError, match=r"^keys must be an array, got an int64 array of shape \(2,\)$"):
        exact.read({"keys": np.zeros(2, np.int64)})


def test_coercion_is_opt_in_and_never_rounds() -> None:
    s = Schema((Field("i", type="int", coerce=True), Field("x", type="float", coerce=True),
                Field("pair", type="list", length=2, coerce=True, item=Field("", type="int", coerce=True))))
    assert s.read({"i": "3", "x": "5e-4", "pair": 7}) == {"i": 3, "x": 5e-4, "pair": [7, 7]}
    assert s.read({"i": 2.0})["i"] == 2
    for bad in ({"i": 2.5}, {"i": "2.5"}, {"x": "abc"}, {"pair": [1, 2.5]}):
        with pytest.raises(InputError):
            s.read(bad)


@dataclass
class _Inner:
    depth: int = field(default=1, metadata={"schema": {"ge": 0}})
    name: str | None = None


@dataclass
class _Outer:
    rate: float = field(default=0.5, metadata={"schema": {"gt": 0, "le": 1}})
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    inner: _Inner = field(default_factory=_Inner)

    __rules__ = (lambda values, ctx: [ctx.problem("rate", "is too large for these sizes")]
                 if values["rate"] > 0.9 and len(values["sizes"]) > 1 else [],)


def test_dataclass_schemas_are_typed_by_their_annotations() -> None:
    s = schema_of(_Outer)
    assert build(_Outer, s.read({})) == _Outer()
    assert build(_Outer, s.read({"rate": "0.25", "inner": {"name": "x"}})) == _Outer(0.25, [1, 2], _Inner(1, "x"))
    assert build(_Outer, s.read({"inner": None})) == _Outer()
    for bad, fragment in [({"rate": 0}, "rate must be in (0, 1], got 0"), ({"inner": {"depth": -1}}, "inner.depth"),
                          ({"inner": {"nme": "x"}}, "inner.nme is not a known field"),
                          ({"sizes": ["a"]}, "sizes[0]"), ({"rate": 0.95}, "is too large"),
                          ({"inner": {"name": [3]}}, "inner.name must be a non-empty string")]:
        with pytest.raises(InputError, match=re.escape(fragment)):
            s.read(bad)


def test_the_mechanism_imports_no_other_sml_package_and_nothing_heavy() -> None:
    code = ("import sys, sml.utils.schema; "
            "print(sorted(m for m in sys.modules if m.startswith(('sml.', 'numpy', 'torch', 'yaml', 'pydantic'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['sml.errors', 'sml.utils', 'sml.utils.schema']"


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Schema]:
    """Every schema read from now on, in order."""
    seen: list[Schema] = []
    real = Schema.read

    def read(self: Schema, *args: Any, **kw: Any) -> dict[str, Any]:
        seen.append(self)
        return real(self, *args, **kw)

    monkeypatch.setattr(Schema, "read", read)
    return seen


def test_statistics_read_from_a_file_are_checked_once(tmp_path: Any, reads: list[Schema]) -> None:
    from sml.stats import ClassStatistics, validate

    s = ClassStatistics(3, ["a", "b", "c"]).update_from_predictions(np.array([0, 0, 1, 2, 2]),
                                                                     np.array([1.0, 2.0, 3.0, 4.0, 6.0]))
    assert reads == [validate.ARGUMENTS]  # a Python caller's arguments: the same declarations
    s.save(tmp_path / "s.json")
    reads.clear()
    t = ClassStatistics.load(tmp_path / "s.json")
    assert [r is validate.STATS_JSON for r in reads] == [True]  # the file once, the constructor not again
    np.testing.assert_array_equal(t.var, s.var)
    reads.clear()
    ClassStatistics.from_state_dict(s.state_dict())
    assert [r is validate.STATE for r in reads] == [True]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_model_read_from_a_card_is_checked_once(tmp_path: Any, reads: list[Schema]) -> None:
    import torch
    import yaml

    from sml.models import card as card_module
    from sml.models import contract, load_card

    torch.jit.script(torch.nn.Conv2d(3, 4, 1)).save(str(tmp_path / "net.ts"))
    card = {"name": "net", "format": "torchscript", "file": "net.ts",
            "input": {"size": [8, 8], "channel_order": "RGB", "scale": 1},
            "output": {"classes": ["a", "b", "c", "d"]}}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    model = load_card(tmp_path / "card.yaml")
    assert model.num_classes == 4 and model.input_size == (8, 8)
    assert [r is card_module.CARD for r in reads] == [True]  # not contract.ARGUMENTS a second time
    reads.clear()
    contract.SegmentationModel(torch.nn.Identity(), num_classes=3)
    assert [r is contract.ARGUMENTS for r in reads] == [True]
