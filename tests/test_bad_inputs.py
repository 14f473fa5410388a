"""The bad-input corpus: every entry point refuses bad input with one paragraph, never a traceback.

Each case builds its inputs in a fresh folder, runs the ``sml`` command in
process (``sml.cli.main.main``), as ``python -m sml``, or a Python API call,
and checks: exit code 2 (or the exception type), a message fragment naming
the file or option at fault, no traceback, and no file left behind (nothing
half-written). Inputs are tiny generated files; the real ERFNet weights are
used where a command gets as far as loading the model.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

from sml.data import open_dataset, read_image, read_labels
from sml.errors import DataError, InputError, OutputError, SMLError
from sml.stats import ClassStatistics
from sml.utils import atomic

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- inputs

def _good_stats_dict() -> dict[str, Any]:
    """A valid 19-class stats.json (every class with pixels, class 18 with none), as `sml stats` writes it."""
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 18, 4000)
    s = ClassStatistics(19).update_from_predictions(pred, rng.normal(8.0, 1.5, 4000))
    return json.loads(json.dumps(s.to_dict()))


GOOD = _good_stats_dict()


@dataclass
class Env:
    """The case's folder and the paths a case may point at."""

    tmp: Path
    weights: Path

    def stats(self, mutate: Callable[[dict[str, Any]], Any] | None = None, name: str = "bad_stats.json",
              text: str | bytes | None = None) -> Path:
        p = self.tmp / name
        if text is not None:
            p.write_bytes(text if isinstance(text, bytes) else text.encode())
            return p
        d = json.loads(json.dumps(GOOD))
        if mutate is not None:
            mutate(d)
        p.write_text(json.dumps(d))  # allow_nan: NaN / Infinity literals as Python writes them
        return p

    def npy(self, name: str, obj: Any) -> Path:
        p = self.tmp / name
        if isinstance(obj, dict):
            arr = np.empty((), dtype=object)
            arr[()] = obj
            np.save(p, arr, allow_pickle=True)
        else:
            np.save(p, obj, allow_pickle=isinstance(obj, np.ndarray) and obj.dtype.hasobject)
        return p

    def data(self, label_size: tuple[int, int] = (64, 96)) -> Path:
        """A two-frame ``folder`` data set (images/, labels/ with 0/1 masks)."""
        root = self.tmp / "data"
        rng = np.random.default_rng(1)
        for i in range(2):
            (root / "images").mkdir(parents=True, exist_ok=True)
            (root / "labels").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(root / "images" / f"f{i}.png")
            lab = np.zeros(label_size, np.uint8)
            lab[10:20, 10:30] = 1
            Image.fromarray(lab).save(root / "labels" / f"f{i}.png")
        return root

    def image(self, name: str = "frame.png") -> Path:
        p = self.tmp / name
        Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(p)
        return p

    def file(self, name: str = "afile", content: bytes = b"not a folder\n") -> Path:
        p = self.tmp / name
        p.write_bytes(content)
        return p

    def eval_args(self, *extra: str, stats: Path | None = None, method: str = "sml",
                  out: Path | str | None = None, data: str | None = None) -> list[str]:
        args = ["eval", "--model", "erfnet", "--weights", str(self.weights),
                "--data", data if data is not None else f"folder:{self.data()}", "--method", method,
                "--out", str(out if out is not None else self.tmp / "run")]
        if stats is not None or "sml" in method.split(","):
            args += ["--stats", str(stats if stats is not None else self.stats(name="stats.json"))]
        return args + list(extra)

    def predict_args(self, *inputs: str, method: str = "max_logit", out: Path | str | None = None) -> list[str]:
        return ["predict", "--model", "erfnet", "--weights", str(self.weights), "--method", method,
                "--out", str(out if out is not None else self.tmp / "pred"), *inputs]


# ----------------------------------------------------------------------------- cases

@dataclass(frozen=True)
class Case:
    """``run(env)`` makes the inputs and returns CLI arguments (a list) or the API call (a function of no
    arguments); ``match`` is a regex the message must contain."""

    id: str
    run: Callable[[Env], Any]
    match: str
    error: type[Exception] = SMLError          # API cases: the exception type expected
    via: str = "cli"                           # "cli" (in process), "subprocess" or "api"
    marks: tuple[Any, ...] = field(default_factory=tuple)


def _set(key: str, i: int, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d[key].__setitem__(i, value)


NAN, INF = float("nan"), float("inf")

# Damaged or edited statistics files (issue 12, 5a): (id, mutation, fragment after the file name)
STATS_MUTATIONS: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("nan-mean", _set("mean", 3, NAN), r"class 3 'wall'.*mean NaN"),
    ("inf-mean", _set("mean", 3, INF), r"class 3 'wall'.*mean Infinity"),
    ("minus-inf-mean", _set("mean", 0, -INF), r"class 0 'road'.*mean -Infinity"),
    ("null-mean-with-pixels", _set("mean", 5, None), r"class 5 'pole' has \d+ pixels but mean null"),
    ("nan-var", _set("var", 4, NAN), r"class 4 'fence'.*variance NaN"),
    ("inf-var", _set("var", 4, INF), r"class 4 'fence'.*variance Infinity"),
    ("negative-var", _set("var", 2, -0.5), r"class 2 'building'.*variance -0\.5"),
    ("var-disagrees-with-m2", lambda d: d["var"].__setitem__(1, d["var"][1] * 1.5),
     r"class 1 'sidewalk'.*'var' and 'm2' disagree"),
    ("negative-m2", _set("m2", 1, -3.0), r"class 1 'sidewalk'.*m2 -3"),
    ("short-mean", lambda d: d["mean"].pop(), r"'mean' has 18 entries but num_classes is 19"),
    ("long-var", lambda d: d["var"].append(1.0), r"'var' has 20 entries but num_classes is 19"),
    ("short-count", lambda d: d["count"].pop(), r"'count' has 18 entries"),
    ("class-names-mismatch", lambda d: d["class_names"].append("extra"), r"'class_names' has 20 names"),
    ("negative-count", _set("count", 0, -4), r"class 0 'road' has count -4"),
    ("fractional-count", _set("count", 0, 2.5), r"class 0 'road' has count 2\.5"),
    ("partly-null-counts", _set("count", 6, None), r"class 6 'traffic light' has count null"),
    ("string-mean", _set("mean", 0, "8.1"), r"mean\[0\] \(class 0 'road'\) is '8\.1', not a number"),
    ("string-num-classes", lambda d: d.__setitem__("num_classes", "19"), r"num_classes must be a positive"),
    ("missing-var", lambda d: d.pop("var"), r"missing key\(s\) var"),
    ("mean-not-a-list", lambda d: d.__setitem__("mean", 8.0), r"'mean' must be a list of 19 numbers"),
    ("no-counts-nan-mean", lambda d: (d.__setitem__("count", [None] * 19), d.__setitem__("m2", None),
                                      d["mean"].__setitem__(18, NAN), d["var"].__setitem__(18, 1.0)),
     r"class 18 'bicycle' has mean NaN"),
]
STATS_TEXTS: list[tuple[str, str | bytes, str]] = [
    ("empty-file", "", r"is empty"),
    ("not-json", "{num_classes: 19", r"is not valid JSON"),
    ("binary", b"\x93NUMPY\x01\x00\xff\xfe", r"is not valid JSON.*not UTF-8"),
    ("json-list", "[1, 2, 3]", r"expected a JSON object"),
]


def _stats_api(mutate: Any = None, text: Any = None) -> Callable[[Env], Any]:
    def run(env: Env) -> Callable[[], Any]:
        path = env.stats(mutate, text=text)
        return lambda: ClassStatistics.load(path)
    return run


def _stats_cli(mutate: Any = None, text: Any = None) -> Callable[[Env], list[str]]:
    return lambda env: env.eval_args(stats=env.stats(mutate, text=text))


CASES: list[Case] = []
for _id, _mut, _frag in STATS_MUTATIONS:
    CASES.append(Case(f"stats-api-{_id}", _stats_api(_mut), r"bad_stats\.json: .*" + _frag, InputError, "api"))
    CASES.append(Case(f"stats-cli-{_id}", _stats_cli(_mut), r"bad_stats\.json: .*" + _frag))
for _id, _text, _frag in STATS_TEXTS:
    CASES.append(Case(f"stats-api-{_id}", _stats_api(text=_text), r"bad_stats\.json.*" + _frag, InputError, "api"))
    CASES.append(Case(f"stats-cli-{_id}", _stats_cli(text=_text), r"bad_stats\.json.*" + _frag))


# reference .npy statistics
def _ref_pair(env: Env, mean: Any = None, var: Any = None) -> tuple[Path, Path]:
    good_m = {i: 8.0 + 0.1 * i for i in range(19)}
    good_v = {i: 2.0 + 0.1 * i for i in range(19)}
    return (env.npy("ref_mean.npy", good_m if mean is None else mean),
            env.npy("ref_var.npy", good_v if var is None else var))


def _ref_api(**kw: Any) -> Callable[[Env], Any]:
    def run(env: Env) -> Callable[[], Any]:
        pair = _ref_pair(env, **kw)
        return lambda: ClassStatistics.from_reference_npy(*pair)
    return run


def _ref_cli(**kw: Any) -> Callable[[Env], list[str]]:
    def run(env: Env) -> list[str]:
        m, v = _ref_pair(env, **kw)
        return env.eval_args("--stats-var", str(v), stats=m)
    return run


REF_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("nan-mean", {"mean": {**{i: 8.0 for i in range(19)}, 7: NAN}}, r"ref_mean\.npy: class 7 'traffic sign' has mean NaN"),
    ("negative-var", {"var": {**{i: 1.0 for i in range(19)}, 9: -1.0}}, r"ref_var\.npy: class 9 'terrain' has variance -1"),
    ("inf-var", {"var": {**{i: 1.0 for i in range(19)}, 0: INF}}, r"ref_var\.npy: class 0 'road' has variance Infinity"),
    ("different-classes", {"var": {i: 1.0 for i in range(18)}}, r"ref_mean\.npy and .*ref_var\.npy: they cover different"),
    ("gap-in-classes", {"mean": {i: 8.0 for i in range(19) if i != 4}, "var": {i: 1.0 for i in range(19) if i != 4}},
     r"ref_mean\.npy: class indices must be 0\.\.18"),
    ("2d-array", {"mean": np.ones((19, 2))}, r"ref_mean\.npy should hold a dict.*2-D"),
    ("string-values", {"mean": {i: "8.0" for i in range(19)}}, r"ref_mean\.npy: entry 0: '8\.0' is not"),
]
for _id, _kw, _frag in REF_CASES:
    CASES.append(Case(f"npy-api-{_id}", _ref_api(**_kw), _frag, InputError, "api"))
CASES.append(Case("npy-cli-nan-mean", _ref_cli(**REF_CASES[0][1]), REF_CASES[0][2]))
CASES.append(Case("npy-cli-negative-var", _ref_cli(**REF_CASES[1][1]), REF_CASES[1][2]))


def _truncated_npy(env: Env) -> Callable[[], Any]:
    m, v = _ref_pair(env, mean=np.arange(19, dtype=np.float64))
    m.write_bytes(m.read_bytes()[:-40])
    return lambda: ClassStatistics.from_reference_npy(m, v)


CASES += [
    Case("npy-api-truncated", _truncated_npy, r"ref_mean\.npy is not a valid \.npy file", InputError, "api"),
    Case("npy-cli-mean-without-var", lambda env: env.eval_args(stats=_ref_pair(env)[0]),
         r"--stats .*ref_mean\.npy.*--stats-var"),
]


# images and labels
def _read(kind: str, content: bytes | Callable[[Path], None], name: str = "img.png") -> Callable[[Env], Any]:
    def run(env: Env) -> Callable[[], Any]:
        p = env.tmp / name
        content(p) if callable(content) else p.write_bytes(content)
        return lambda: (read_image if kind == "image" else read_labels)(p)
    return run


def _truncated_png(p: Path) -> None:
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _colour_mask(p: Path) -> None:
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(p)


def _wide_mask(p: Path) -> None:
    Image.fromarray(np.full((8, 8), 700, dtype=np.uint16)).save(p)


def _wrong_size_labels(env: Env) -> Callable[[], Any]:
    root = env.data(label_size=(32, 48))
    return lambda: open_dataset(f"folder:{root}", allow_subset=True)[0]


CASES += [
    Case("image-empty", _read("image", b""), r"img\.png is empty \(0 bytes\)", DataError, "api"),
    Case("image-truncated", _read("image", _truncated_png), r"cannot decode .*img\.png.*truncated", DataError, "api"),
    Case("image-not-an-image", _read("image", b"GIF? no, a text file\n"), r"img\.png is not an image", DataError,
         "api"),
    Case("labels-empty", _read("labels", b"", "mask.png"), r"mask\.png is empty", DataError, "api"),
    Case("labels-colour", _read("labels", _colour_mask, "mask.png"), r"mask\.png is a colour image", DataError,
         "api"),
    Case("labels-16bit-wide", _read("labels", _wide_mask, "mask.png"), r"mask\.png holds values up to 700",
         DataError, "api"),
    Case("labels-wrong-size", _wrong_size_labels, r"f0\.png.*(96x64|size)", DataError, "api"),
    Case("predict-empty-image", lambda env: env.predict_args(str(env.file("empty.png", b""))),
         r"empty\.png is empty"),
    Case("predict-not-an-image", lambda env: env.predict_args(str(env.file("notes.png"))),
         r"notes\.png is not an image"),
    Case("predict-missing-input", lambda env: env.predict_args(str(env.tmp / "nope.jpg")), r"nope\.jpg"),
]


# missing paths, bad --data specs, bad models
CASES += [
    Case("eval-missing-stats", lambda env: env.eval_args(stats=env.tmp / "none.json"), r"--stats .*none\.json"),
    Case("eval-data-unknown-kind", lambda env: env.eval_args(method="max_logit", data=f"potholes:{env.tmp}"),
         r"potholes"),
    Case("eval-data-missing-folder", lambda env: env.eval_args(method="max_logit", data=f"folder:{env.tmp}/gone"),
         r"gone"),
    Case("eval-data-missing-benchmark",
         lambda env: env.eval_args(method="max_logit", data=f"road-anomaly:{env.tmp}/RoadAnomaly_jpg"),
         r"RoadAnomaly_jpg"),
    Case("eval-data-no-kind", lambda env: env.eval_args(method="max_logit", data=str(env.tmp)), r"--data .*KIND:PATH"),
    Case("eval-missing-weights",
         lambda env: [*env.eval_args(method="max_logit")[:3], "--weights", str(env.tmp / "w.pth"),
                      *env.eval_args(method="max_logit")[5:]], r"w\.pth"),
    Case("eval-weights-not-a-checkpoint",
         lambda env: [*env.eval_args(method="max_logit")[:3], "--weights",
                      str(env.file("w.pth", np.random.default_rng(5).bytes(300))),
                      *env.eval_args(method="max_logit")[5:]], r"checkpoint .*w\.pth"),
    Case("eval-weights-text-file",
         lambda env: [*env.eval_args(method="max_logit")[:3], "--weights", str(env.file("w.pth", b"text\n")),
                      *env.eval_args(method="max_logit")[5:]], r"checkpoint .*w\.pth"),
    Case("eval-unknown-model", lambda env: ["eval", "--model", "no-such-net", *env.eval_args(method="max_logit")[3:]],
         r"no-such-net"),
    Case("report-missing-run", lambda env: ["report", str(env.tmp / "no_run")], r"no_run"),
    Case("report-not-a-run", lambda env: ["report", str(env.data())], r"metrics\.json"),
]


# bad option values
CASES += [
    Case("boundary-width-negative", lambda env: env.eval_args("--boundary-width", "-1"), r"--boundary-width"),
    Case("boundary-width-not-divisible",
         lambda env: env.eval_args("--boundary-width", "5", "--boundary-iterations", "4"), r"--boundary-width"),
    Case("boundary-width-not-a-number", lambda env: env.eval_args("--boundary-width", "wide"), r"--boundary-width"),
    Case("method-unknown", lambda env: env.eval_args(method="sml,odin"), r"'odin'.*--method"),
    Case("method-empty", lambda env: env.eval_args(method=","), r"--method"),
    Case("predict-method-unknown", lambda env: env.predict_args(str(env.image()), method="odin"), r"'odin'"),
    Case("device-unknown", lambda env: env.eval_args("--device", "tpu7"), r"--device 'tpu7'"),
    Case("device-cuda-absent", lambda env: env.eval_args("--device", "cuda:0"), r"--device cuda:0",
         marks=(pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),)),
    Case("save-every-zero", lambda env: env.eval_args("--save-every", "0"), r"--save-every"),
    Case("label-mapping-malformed", lambda env: env.eval_args("--label-mapping", "0-0", method="max_logit"),
         r"label mapping entry '0-0'"),
    Case("predict-vmin-alone", lambda env: env.predict_args(str(env.image()), "--vmin", "1"), r"--vmin"),
    Case("predict-vmax-below-vmin", lambda env: env.predict_args(str(env.image()), "--vmin", "2", "--vmax", "1"),
         r"--vmax"),
    Case("stats-output-not-json",
         lambda env: ["stats", "--model", "erfnet", "--weights", str(env.weights), "--data", f"folder:{env.data()}",
                      "-o", str(env.tmp / "stats.txt")], r"stats\.txt"),
]


# outputs that cannot be written (issue 12, 5b)
def _write_json(path_of: Callable[[Env], Path]) -> Callable[[Env], Any]:
    def run(env: Env) -> Callable[[], Any]:
        path = path_of(env)
        return lambda: atomic.write_json(path, {"a": 1})
    return run


def _disk_full(env: Env) -> Callable[[], Any]:
    def call() -> None:
        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        real, os.fsync = os.fsync, full  # the data are written, the flush to disk finds it full
        try:
            atomic.write_json(env.tmp / "metrics.json", {"a": 1})
        finally:
            os.fsync = real
    return call


def _read_only_folder(env: Env) -> Callable[[], Any]:
    folder = env.tmp / "locked"
    folder.mkdir()

    def call() -> None:
        folder.chmod(0o555)
        try:
            atomic.write_json(folder / "metrics.json", {})
        finally:
            folder.chmod(0o755)
    return call


def _unwritable_for_everyone(sub: str) -> Path:
    """A folder no one can create, root included (sysfs / procfs), or skip where that does not hold."""
    for base in ("/sys", "/proc"):
        p = Path(base) / sub
        if Path(base).is_dir():
            try:
                p.mkdir()
            except OSError:
                return p
            p.rmdir()
    pytest.skip("no file system here refuses new folders to this user")


_NOT_ROOT = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                               reason="root writes into read-only folders")

CASES += [
    Case("write-under-a-file", _write_json(lambda env: env.file() / "sub" / "metrics.json"),
         r"afile is a file, not a folder", OutputError, "api"),
    Case("write-over-a-folder", _write_json(lambda env: (env.tmp / "metrics.json").mkdir() or env.tmp / "metrics.json"),
         r"metrics\.json: a folder of that name exists", OutputError, "api"),
    Case("write-name-too-long", _write_json(lambda env: env.tmp / ("m" * 300 + ".json")),
         r"the name is too long", OutputError, "api"),
    Case("write-disk-full", _disk_full, r"metrics\.json: no space left", OutputError, "api"),
    Case("write-read-only-folder", _read_only_folder, r"locked.*permission denied", OutputError, "api",
         marks=(_NOT_ROOT,)),
    Case("write-system-folder", _write_json(lambda env: _unwritable_for_everyone("sml-bad-inputs") / "m.json"),
         r"sml-bad-inputs", OutputError, "api"),
    Case("check-writable-file", lambda env: lambda p=env.file(): atomic.check_writable(p),
         r"afile as the output folder: it is a file", OutputError, "api"),
    Case("check-writable-under-file", lambda env: lambda p=env.file() / "run": atomic.check_writable(p),
         r"afile is a file, not a folder", OutputError, "api"),
    Case("check-writable-system-folder",
         lambda env: lambda p=_unwritable_for_everyone("sml-bad-inputs") / "run": atomic.check_writable(p),
         r"sml-bad-inputs", OutputError, "api"),
    Case("eval-out-under-a-file", lambda env: env.eval_args(method="max_logit", out=env.file() / "run"),
         r"afile is a file, not a folder"),
    Case("eval-out-system-folder",
         lambda env: env.eval_args(method="max_logit", out=_unwritable_for_everyone("sml-bad-inputs") / "run"),
         r"sml-bad-inputs"),
    Case("predict-out-under-a-file", lambda env: env.predict_args(str(env.image()), out=env.file() / "pred"),
         r"afile is a file, not a folder"),
    Case("stats-out-under-a-file",
         lambda env: ["stats", "--model", "erfnet", "--weights", str(env.weights), "--data", f"folder:{env.data()}",
                      "-o", str(env.file() / "stats.json")], r"afile is a file, not a folder"),
]


# `sml demo`: refused before minutes of generating and training
CASES += [
    Case("demo-out-under-a-file", lambda env: ["demo", "--out", str(env.file() / "demo"), "--iterations", "20"],
         r"afile is a file, not a folder"),
    Case("demo-zero-iterations", lambda env: ["demo", "--out", str(env.tmp / "demo"), "--iterations", "0"],
         r"--iterations"),
    Case("demo-negative-seconds", lambda env: ["demo", "--out", str(env.tmp / "demo"), "--seconds", "-5"],
         r"--seconds"),
    Case("demo-iterations-and-seconds",
         lambda env: ["demo", "--out", str(env.tmp / "demo"), "--iterations", "5", "--seconds", "3"],
         r"--iterations or --seconds"),
]



# restored metric states (resume chunks, sync, pickles): every count is range-checked, an
# inconsistent state is refused before it is used (issue 19: a tampered chunk once put
# 1000004773 anomaly pixels into metrics.json)
def _metric_state(kind: str) -> dict[str, Any]:
    """A valid state of the exact metric (counted tables and pending keys) or of the smiyc one (two frames)."""
    from sml.metrics import AnomalyMetrics, SmiycPixelMetric

    rng = np.random.default_rng(5)
    m = AnomalyMetrics(compact_at=300) if kind == "exact" else SmiycPixelMetric()
    for _ in range(3):
        y = (rng.random((10, 20)) < 0.2).astype(np.uint8)
        y[0, :5] = 255
        m.update(np.round(rng.normal(size=y.shape) + y, 1).astype(np.float32), y)
    return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in m.state_dict().items()}


def _tampered(kind: str, **changes: Any) -> Callable[[Env], Any]:
    """Load a valid state with ``changes`` (values, or functions of the state giving the value; ``_``: edits it)."""
    def run(env: Env) -> Callable[[], Any]:
        from sml.metrics import AnomalyMetrics, SmiycPixelMetric

        st = _metric_state(kind)
        for k, v in changes.items():
            if k == "_":
                v(st)
            else:
                st[k] = v(st) if callable(v) else v
        cls = AnomalyMetrics if kind == "exact" else SmiycPixelMetric
        return lambda: cls.from_state_dict(st)
    return run


def _more_anomaly_pixels(st: dict[str, Any]) -> None:
    # consistent totals, but more anomaly pixels at one score than pixels evaluated there
    assert st["pos_table_counts"].size and st["n_neg"] > 50
    st["pos_table_counts"] = st["pos_table_counts"] + (np.arange(st["pos_table_counts"].size) == 0) * np.uint32(50)
    st["n_pos"] += 50
    st["n_neg"] -= 50


def _overlap(st: dict[str, Any]) -> np.ndarray:
    return np.sort(np.append(st["table_single"][1:], st["table_keys"][0])).astype(np.int32)


STATE_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("exact", "issue-19-anomaly-count", {"n_pos": 1000004773}, r"pixel counts do not match"),
    ("exact", "negative-count", {"n_neg": -3}, r"'n_neg' must be a count"),
    ("exact", "fractional-count", {"n_pos": 12.5}, r"'n_pos' must be a count"),
    ("exact", "bool-count", {"images": True}, r"'images' must be a count"),
    ("exact", "missing-count", {"n_ignored": None}, r"'n_ignored' must be a count"),
    ("exact", "pixels-without-image", {"images": 0}, r"without an image"),
    ("exact", "unsorted-table", {"table_keys": lambda st: st["table_keys"][::-1].copy()}, r"strictly increasing"),
    ("exact", "repeated-single-key", {"table_single": lambda st: np.repeat(st["table_single"][:2], 2)},
     r"strictly increasing"),
    ("exact", "float-table-counts", {"table_counts": lambda st: st["table_counts"].astype(np.float64)},
     r"integer counts"),
    ("exact", "short-table-counts", {"table_counts": lambda st: st["table_counts"][1:]}, r"as long as"),
    ("exact", "zero-table-count", {"table_counts": lambda st: np.where(np.arange(st["table_counts"].size) == 0, 0,
                                                                        st["table_counts"]).astype(np.int64)},
     r"must be positive"),
    ("exact", "single-and-counted", {"table_single": _overlap}, r"disjoint"),
    ("exact", "float-pending-keys", {"keys": lambda st: st["keys"].astype(np.float32)}, r"1-D int32"),
    ("exact", "2d-pending-keys", {"keys": lambda st: st["keys"][:4].reshape(2, 2)}, r"1-D int32"),
    ("exact", "nan-key", {"keys": lambda st: np.append(st["keys"][1:], np.int32(0x7FC00000))}, r"NaN or infinite"),
    ("exact", "anomaly-key-not-evaluated", {"pos_table_keys": lambda st: st["pos_table_keys"] + 1},
     r"missing from the evaluated"),
    ("exact", "more-anomaly-than-evaluated", {"_": _more_anomaly_pixels}, r"more anomaly pixels than evaluated"),
    ("smiyc", "issue-19-anomaly-count", {"num_pos": 1000004773}, r"not the stated num_pos 1000004773"),
    ("smiyc", "negative-count", {"num_neg": -1}, r"'num_neg' must be a count"),
    ("smiyc", "fractional-frames", {"frames": 2.5}, r"'frames' must be a count"),
    ("smiyc", "negative-bin", {"tp_rel": lambda st: st["tp_rel"] - (np.arange(st["tp_rel"].size) == 0) * 10**6},
     r"bin counts >= 0"),
    ("smiyc", "float-bins", {"fp_rel": lambda st: st["fp_rel"].astype(np.float64)}, r"'fp_rel' must be a 1-D array"),
    ("smiyc", "frames-not-lengths", {"frames": 7}, r"each of the 7 frames"),
    ("smiyc", "too-many-bins", {"lengths": lambda st: np.array([0, 0, 770])},
     r"'lengths' must give 0 to 769 bins"),
    ("smiyc", "lengths-not-bins", {"lengths": lambda st: st["lengths"] + 1}, r"must hold the \d+ bins"),
    ("smiyc", "rising-thresholds", {"thresholds": lambda st: np.sort(st["thresholds"])}, r"strictly decreasing"),
    ("smiyc", "nan-threshold", {"thresholds": lambda st: np.where(np.arange(st["thresholds"].size) == 3, np.nan,
                                                                    st["thresholds"])}, r"finite"),
    ("smiyc", "empty-frame-with-bins", {"tp_rel": lambda st: np.zeros_like(st["tp_rel"]),
                                        "fp_rel": lambda st: np.zeros_like(st["fp_rel"]), "num_pos": 0, "num_neg": 0},
     r"bins but no pixel"),
    ("smiyc", "one-bin", {"num_bins": 1}, r"'num_bins' must be at least 2"),
    ("smiyc", "other-protocol", {"protocol": "exact"}, r"not a smiyc metric state"),
]
CASES += [Case(f"metric-state-{kind}-{_id}", _tampered(kind, **_chg), _frag, InputError, "api")
          for kind, _id, _chg, _frag in STATE_CASES]


# the same program as `python -m sml`: real exit status and stderr
CASES += [
    Case("subprocess-nan-mean", _stats_cli(STATS_MUTATIONS[0][1]), r"bad_stats\.json: class 3 'wall'", via="subprocess"),
    Case("subprocess-unknown-kind", lambda env: env.eval_args(method="max_logit", data=f"potholes:{env.tmp}"),
         r"potholes", via="subprocess"),
]


# ----------------------------------------------------------------------------- runner

def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if not p.is_dir()}


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from sml.cli.main import main

    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def _run_subprocess(args: list[str]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "sml", *args], capture_output=True, text=True, env=env, timeout=300)
    return r.returncode, r.stderr


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_refused_cleanly(case: Case, tmp_path: Path, erfnet_weights: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    env = Env(tmp_path, erfnet_weights)
    made = case.run(env)
    before = _files(tmp_path)
    if case.via == "api":
        assert callable(made)
        with pytest.raises(case.error) as info:
            made()
        message = str(info.value)
        assert "\n" not in message.strip()  # one paragraph
    else:
        code, err = _run_subprocess(made) if case.via == "subprocess" else _run_cli(made, capsys)
        assert code == 2, err
        assert "Traceback" not in err, err
        assert re.search(r"(^|\n)(sml: error:|usage:)", err), err  # on its own line, from the first column
        message = err
    new = _files(tmp_path) - before
    assert not new, f"files left by a refused call: {sorted(map(str, new))}"
    assert _search(case.match, message), f"{case.match!r} not found in: {message}"


def _search(pattern: str, text: str) -> bool:
    # the CLI wraps its paragraph at 100 columns: compare with line breaks as spaces
    return re.search(pattern, " ".join(text.split()), re.S) is not None or re.search(pattern, text, re.S) is not None


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40


def test_malicious_reference_npy_is_refused_without_running_it(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str],
                                                                erfnet_weights: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    env = Env(tmp_path, erfnet_weights)
    evil = env.npy("cityscapes_mean.npy", {0: Evil()})
    var = env.npy("cityscapes_var.npy", {0: 1.0})
    with pytest.raises(InputError, match=r"refusing to load .*cityscapes_mean\.npy.*system"):
        ClassStatistics.from_reference_npy(evil, var)
    code, err = _run_cli(env.eval_args("--stats-var", str(var), stats=evil), capsys)
    assert code == 2 and "refusing to load" in err and "Traceback" not in err
    assert not marker.exists()
    # positive control: an ordinary unpickler does run the payload, so the file really is malicious
    pickle.loads(pickle.dumps(Evil()))
    assert marker.exists()


# ----------------------------------------------------------------------------- how outputs are written

@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_new_files_honour_the_umask_and_replaced_files_keep_their_mode(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        atomic.write_text(tmp_path / "new.txt", "x")
        atomic.save_npy(tmp_path / "sub" / "map.npy", np.zeros(3))
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o640)
        atomic.write_text(kept, "new")
    finally:
        os.umask(old)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "sub" / "map.npy").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "sub").stat().st_mode & 0o777 == 0o777 & ~umask
    assert kept.stat().st_mode & 0o777 == 0o640 and kept.read_text() == "new"


def test_failed_write_keeps_the_old_file_and_other_errors_pass_through(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic.write_json(target, {"run": 1})
    # an error of the caller's own code (here a network read) is not called a write failure
    with pytest.raises(ConnectionResetError):
        with atomic.atomic_write(target, "w") as fh:
            fh.write('{"run": 2')
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    # a write error inside the block is
    with pytest.raises(OutputError, match=r"metrics\.json: no space left.*Nothing was written"):
        with atomic.atomic_write(target, "w") as fh:
            raise OSError(errno.ENOSPC, "No space left on device")
    assert json.loads(target.read_text()) == {"run": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_check_writable_leaves_nothing_behind(tmp_path: Path) -> None:
    atomic.check_writable(tmp_path / "a" / "b" / "run")
    atomic.check_writable(tmp_path / "out.json", file=True)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "existing").mkdir()
    atomic.check_writable(tmp_path / "existing")
    assert [p.name for p in tmp_path.iterdir()] == ["existing"] and not list((tmp_path / "existing").iterdir())
    with pytest.raises(OutputError, match=r"out\.json: a folder of that name exists"):
        (tmp_path / "out.json").mkdir()
        atomic.check_writable(tmp_path / "out.json", file=True)


def _screen(text: str) -> list[str]:
    """The lines a terminal shows for ``text`` (a carriage return goes back to the start of the line)."""
    lines, line, col = [], [], 0
    for ch in text:
        if ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        elif ch == "\r":
            col = 0
        else:
            line[col:col + 1] = [ch]
            col += 1
    return lines + (["".join(line).rstrip()] if line else [])


def test_messages_start_on_their_own_line_while_a_bar_is_drawn() -> None:
    import io

    from sml.utils.progress import close_bars, progress, write_message

    buf = io.StringIO()
    with pytest.raises(RuntimeError):
        for i in progress(range(10), total=10, desc="frames", disable=False, file=buf):
            if i == 2:
                write_message("warning: a note", file=buf)
            if i == 5:
                raise RuntimeError("stop")
    close_bars()
    write_message("sml: error: the end", file=buf)
    screen = _screen(buf.getvalue())
    assert "warning: a note" in screen and screen[-1] == "sml: error: the end", screen
    assert any(line.startswith("frames:  50%") for line in screen), screen  # the bar stays where it stopped
    # the control: a plain print while a bar is drawn lands on the bar's line
    buf2 = io.StringIO()
    bar = progress(range(3), total=3, desc="frames", disable=False, file=buf2)
    next(bar)
    buf2.write("sml: error: mangled\n")
    assert not any(line.startswith("sml: error") for line in _screen(buf2.getvalue()))
    close_bars()
