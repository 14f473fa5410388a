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
import tempfile
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
    Case("eval-batch-size-zero", lambda env: env.eval_args("--batch-size", "0", method="max_logit"),
         r"--batch-size must be a whole number of frames, at least 1 \(got 0\)"),
    Case("eval-workers-negative", lambda env: env.eval_args("--workers", "-2", method="max_logit"),
         r"--workers must be a whole number of decoding processes, 0 or more \(got -2\)"),
    Case("stats-batch-size-negative",
         lambda env: ["stats", "--model", "erfnet", "--weights", str(env.weights), "--data", f"folder:{env.data()}",
                      "-o", str(env.tmp / "s.json"), "--batch-size", "-1"], r"--batch-size .*\(got -1\)"),
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


# the post-hoc scores of sml-algorithm.md section 8: a method that does not fit the network's output, bad settings
def _api(call: Callable[..., Any], *args: Any, **kw: Any) -> Callable[[Env], Callable[[], Any]]:
    return lambda env: (lambda: call(*args, **kw))


def _mask_outputs(**kw: Any) -> Callable[[Env], Callable[[], Any]]:
    from sml.scores import MaskClassificationOutput

    args = dict(class_logits=torch.zeros(1, 3, 5), mask_logits=torch.zeros(1, 3, 2, 2), input_size=(4, 4))
    return _api(MaskClassificationOutput, **{**args, **kw})


def _build(*args: Any, **kw: Any) -> Callable[[Env], Callable[[], Any]]:
    from sml.scores import build_scorer, build_scorers

    return _api(build_scorers if isinstance(args[0], list) else build_scorer, *args, **kw)


CASES += [
    Case("method-rba-eam-on-logits-network", lambda env: env.eval_args(method="max_logit,rba,eam"),
         r"rba, eam: not applicable to this network, whose output kind is logits; rba and eam need .*"
         r"output\.kind: mask-classification"),
    Case("predict-method-eam-on-logits-network", lambda env: env.predict_args(str(env.image()), method="eam"),
         r"eam: not applicable"),
    Case("api-gen-on-mask-classification", _build(["sml", "gen"], None, model_kind="mask-classification"),
         r"gen: not applicable .* gen needs per-pixel class logits", InputError, "api"),
    Case("api-gen-gamma-zero", _build("gen", gamma=0), r"gen gamma must be a positive", InputError, "api"),
    Case("api-gen-m-fraction", _build("gen", M=2.5), r"gen M .* must be an integer >= 1", InputError, "api"),
    Case("api-mask-queries-disagree", _mask_outputs(mask_logits=torch.zeros(1, 4, 2, 2)),
         r"must agree in batch size and number of queries", InputError, "api"),
    Case("api-mask-no-object-column-missing", _mask_outputs(class_logits=torch.zeros(1, 3, 1)),
         r"no-object column", InputError, "api"),
    Case("api-mask-nan-mask-logits", _mask_outputs(mask_logits=torch.full((1, 3, 2, 2), float("nan"))),
         r"mask_logits contain 12 NaN", InputError, "api"),
    Case("api-mask-bad-input-size", _mask_outputs(input_size=(0, 4)), r"input_size must be \(height, width\)",
         InputError, "api"),
    Case("api-mask-bad-upsample", _mask_outputs(upsample="nearest"), r"upsample must be one of bilinear",
         InputError, "api"),
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


# `sml train --resume`: a weights-only file (the published layout without training_state) or a missing one
def _train_resume(env: Env, checkpoint: Path) -> list[str]:
    return ["train", "model.arch=erfnet", f"data.root={env.tmp / 'cityscapes'}", f"train.out_dir={env.tmp / 'run'}",
            "train.device=cpu", "--resume", str(checkpoint)]


CASES += [
    Case("train-resume-weights-only", lambda env: _train_resume(env, env.weights),
         r"erfnet_cityscapes\.pth holds weights only, no training state; .*model\.init_weights="),
    Case("train-resume-missing", lambda env: _train_resume(env, env.tmp / "last.pth"),
         r"cannot resume: .*last\.pth does not exist"),
]

# model cards and network files (issue 19): refused at load, before any frame is read
CARD_INPUT = {"size": [24, 40], "channel_order": "RGB", "scale": 1}
ALIAS_BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'lol'] * 9)}]\n" for i in range(9)) + \
    "name: *l8\nformat: torchscript\n"


def _fixed_output_ts(env: Env) -> Path:
    """A TorchScript file traced at 24x40 whose output stays 24x40 whatever the input (int() made the
    traced size a constant), as many real-time networks' traced files do."""
    import warnings

    import torch.nn.functional as F
    from torch import nn

    class FixedOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, w = int(x.shape[2]), int(x.shape[3])
            return F.interpolate(self.conv(x), size=(h, w), mode="bilinear", align_corners=False)

    p = env.tmp / "fixed.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(FixedOut().eval(), torch.zeros(1, 3, 24, 40)).save(str(p))
    return p


def _card_file(env: Env, text: str | None = None, module: str | None = None, entry: str | None = None,
               **inp: Any) -> Path:
    """A card for the fixed-output TorchScript file (``inp`` overrides input fields), for a ``format:
    python`` entry (``entry``, with ``module`` written beside the card as ``<module name>.py``), or ``text``."""
    import yaml

    p = env.tmp / "card.yaml"
    if text is not None:
        p.write_text(text)
        return p
    card: dict[str, Any] = {"name": "net", "format": "torchscript", "file": _fixed_output_ts(env).name,
                            "input": {**CARD_INPUT, **inp}, "output": {"classes": ["a", "b", "c", "d"]}}
    if entry is not None:
        if module is not None:
            (env.tmp / f"{entry.partition(':')[0]}.py").write_text(module)
        (env.tmp / "w.pth").write_bytes(b"")  # never read: the entry fails first
        del card["file"]
        card.update(format="python", entry=entry, weights="w.pth")
    p.write_text(yaml.safe_dump(card))
    return p


def _card_api(**kw: Any) -> Callable[[Env], Any]:
    def run(env: Env) -> Callable[[], Any]:
        import sml.models as M

        path = _card_file(env, **kw)
        return lambda: M.load(str(path))
    return run


def _card_cli(**kw: Any) -> Callable[[Env], list[str]]:
    return lambda env: ["eval", "--model", str(_card_file(env, **kw)), "--data", f"folder:{env.data()}",
                        "--method", "max_logit", "--out", str(env.tmp / "run")]


def _predict_api(image: Any) -> Callable[[Env], Any]:
    def run(env: Env) -> Callable[[], Any]:
        import sml.models as M

        model = M.wrap(torch.nn.Conv2d(3, 2, 1), num_classes=2)
        return lambda: model.predict(image)
    return run


def _zero_width_png(env: Env) -> Path:
    """A PNG whose header says 0 x 4 pixels (no library writes one; a damaged or hand-made file can)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    p = env.tmp / "empty_frame.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 4, 8, 2, 0, 0, 0))
                  + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return p


UNITS_255_AT_SCALE_1 = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
UNITS_1_AT_SCALE_255 = {"scale": 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
RAISES_AT_IMPORT = "raise RuntimeError('no GPU found')\n"
EXITS_AT_IMPORT = "import sys\nsys.exit(0)\n"
RAISES_AT_BUILD = "def build():\n    raise ValueError('unknown backbone resnet-7')\n"
CASES += [
    Case("card-scale-1-mean-in-0-255", _card_api(**UNITS_255_AT_SCALE_1),
         r"card\.yaml: field input\.mean is \[123\.675, 116\.28, 103\.53\] but scale is 1 .*Set scale: 255, or "
         r"divide both by 255", InputError, "api"),
    Case("eval-card-scale-1-mean-in-0-255", _card_cli(**UNITS_255_AT_SCALE_1),
         r"card\.yaml: field input\.mean is \[123\.675.*but scale is 1"),
    Case("card-scale-1-std-in-0-255", _card_api(mean=[0.0, 0.0, 0.0], std=[58.395, 57.12, 57.375]),
         r"card\.yaml: field input\.std is \[58\.395, 57\.12, 57\.375\] but scale is 1", InputError, "api"),
    Case("card-scale-255-mean-in-0-1", _card_api(**UNITS_1_AT_SCALE_255),
         r"card\.yaml: field input\.mean is \[0\.485, 0\.456, 0\.406\] but scale is 255 .*Set scale: 1, or "
         r"multiply both by 255 \(mean \[123\.675, 116\.28, 103\.53\]", InputError, "api"),
    Case("card-negative-mean", _card_api(mean=[-0.5, 0.0, 0.0], std=[0.5, 0.5, 0.5]),
         r"card\.yaml: field input\.mean is \[-0\.5, 0, 0\], outside the pixel range \[0, 1\]", InputError, "api"),
    Case("card-yaml-alias-bomb", _card_api(text=ALIAS_BOMB),
         r"card\.yaml uses a YAML anchor or alias \(&name / \*name\) at line 1", InputError, "api"),
    Case("eval-card-yaml-alias-bomb", _card_cli(text=ALIAS_BOMB), r"card\.yaml uses a YAML anchor or alias"),
    Case("card-huge-file", _card_api(text="name: x\n" + "# padding\n" * 120_000),
         r"card\.yaml is \d+ bytes; a card is a short YAML file", InputError, "api"),
    Case("card-entry-raises-at-import", _card_api(entry="gpunet:build", module=RAISES_AT_IMPORT),
         r"card\.yaml: entry 'gpunet:build': importing gpunet raised RuntimeError: no GPU found", InputError, "api"),
    Case("card-entry-syntax-error", _card_api(entry="typonet:build", module="def build(:\n"),
         r"card\.yaml: entry 'typonet:build': importing typonet raised SyntaxError", InputError, "api"),
    Case("card-entry-exits-at-import", _card_api(entry="exitnet:build", module=EXITS_AT_IMPORT),
         r"card\.yaml: entry 'exitnet:build': importing exitnet raised SystemExit \(it called sys\.exit\(0\)\)",
         InputError, "api"),
    Case("card-entry-raises-at-build", _card_api(entry="resnet7:build", module=RAISES_AT_BUILD),
         r"card\.yaml: entry resnet7:build raised ValueError: unknown backbone resnet-7 when called to build",
         InputError, "api"),
    Case("eval-card-entry-raises-at-build", _card_cli(entry="resnet7b:build", module=RAISES_AT_BUILD),
         r"entry resnet7b:build raised ValueError: unknown backbone"),
    Case("eval-card-entry-sys-exit", _card_cli(entry="sys:exit"),
         r"card\.yaml: entry sys:exit raised SystemExit \(it called sys\.exit\(None\)\)"),
    Case("subprocess-card-entry-sys-exit", _card_cli(entry="sys:exit"), r"entry sys:exit raised SystemExit",
         via="subprocess"),
    Case("card-traced-size-null", _card_api(size=None),
         r"card\.yaml: field input\.size is null .*fixed\.ts does not follow the input size: a 256x512 input "
         r"gives 24x40 logits, and a 128x256 input also gives 24x40.*likely \[24, 40\]", InputError, "api"),
    Case("eval-card-traced-size-null", _card_cli(size=None), r"field input\.size is null .*does not follow"),
    Case("card-traced-at-another-size", _card_api(size=[30, 50]),
         r"field input\.size is \[30, 50\], but fixed\.ts does not follow the input size", InputError, "api"),
    Case("predict-zero-pixel-image", _predict_api(np.zeros((0, 5, 3), np.uint8)),
         r"an image of shape \(0, 5, 3\) has 0x5 \(HxW\) pixels", InputError, "api"),
    Case("predict-zero-pixel-tensor", _predict_api(torch.zeros((1, 3, 4, 0), dtype=torch.uint8)),
         r"an image of shape \(1, 3, 4, 0\) has 4x0 \(HxW\) pixels", InputError, "api"),
    Case("predict-empty-batch", _predict_api(np.zeros((0, 4, 5, 3), np.uint8)),
         r"a batch of shape \(0, 4, 5, 3\) holds no image", InputError, "api"),
    Case("predict-zero-pixel-png", lambda env: env.predict_args(str(_zero_width_png(env))),
         r"empty_frame\.png is not an image"),
]


# `sml export` (issue 19): damaged or non-finite maps and existing outputs. The bad map is a later frame's,
# so a refusal after the first frame was packed shows that nothing reaches OUT's final name.
FS_SIZE = (1024, 2048)


def _fs_map(nan: int = 0, inf: int = 0, dtype: Any = np.float32, shape: tuple[int, ...] = FS_SIZE) -> np.ndarray:
    a = np.full(shape, 0.5, np.float64)
    a.flat[:nan] = np.nan
    a.flat[nan:nan + inf] = np.inf
    return a.astype(dtype)


def _fishy_run(env: Env, anomaly: Callable[[Path], Any] | None = None,
               segmentation: Callable[[Path], Any] | None = None) -> Path:
    """A run with Fishyscapes maps of frames a (good) and b (its anomaly / segmentation file rewritten)."""
    d = env.tmp / "run" / "fishyscapes" / "sml"
    d.mkdir(parents=True)
    for fid in ("a", "b"):
        np.save(d / f"{fid}_anomaly.npy", _fs_map())
        np.save(d / f"{fid}_segmentation.npy", np.full(FS_SIZE, 7, np.uint8))
    for suffix, bad in (("anomaly", anomaly), ("segmentation", segmentation)):
        if bad is not None:
            bad(d / f"b_{suffix}.npy")
    return env.tmp / "run"


def _saved(make: Callable[[], np.ndarray]) -> Callable[[Path], None]:
    return lambda p: np.save(p, make(), allow_pickle=False)


def _object_array(p: Path) -> None:
    np.save(p, np.array([{"scores": 1.0}, None], dtype=object), allow_pickle=True)


def _cut(keep: int) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(p.read_bytes()[:keep])


def _export_fs(*extra: str, out: Callable[[Env], Any] | None = None, **bad: Any) -> Callable[[Env], list[str]]:
    def run(env: Env) -> list[str]:
        run_dir = _fishy_run(env, **bad)
        if out is not None:
            out(env)
        return ["export", "fishyscapes", str(run_dir), str(env.tmp / "sub"), *extra]
    return run


def _h5(**datasets: Any) -> Callable[[Path], None]:
    def write(p: Path) -> None:
        import h5py

        with h5py.File(p, "w") as h:
            for k, v in datasets.items():
                h.create_dataset(k, data=v)
    return write


def _export_smiyc(*extra: str, bad: Callable[[Path], Any] | None = None,
                  out: Callable[[Env], Any] | None = None) -> Callable[[Env], list[str]]:
    def run(env: Env) -> list[str]:
        from sml.pipelines.writers import write_hdf5
        from sml.data.releases import ANOMALY_SPLITS

        d = env.tmp / "run" / "anomaly_p" / "sml" / "AnomalyTrack-all"
        for fid in ANOMALY_SPLITS["all"]:
            write_hdf5(d / f"{fid}.hdf5", np.full((4, 6), 0.5, np.float32))
        if bad is not None:
            bad(d / "validation0003.hdf5")
        if out is not None:
            out(env)
        return ["export", "smiyc", str(env.tmp / "run"), str(env.tmp / "sub.zip"), *extra]
    return run


def _someone_elses_folder(env: Env) -> None:
    (env.tmp / "sub").mkdir()
    (env.tmp / "sub" / "0000_anomaly.npy").write_bytes(b"theirs")


def _write_map(fmt: str, anomaly: np.ndarray) -> Callable[[Env], Any]:
    from sml.pipelines.writers import write_map

    return lambda env: lambda: write_map(env.tmp / "run", fmt, "max_logit", "folder", "f0", anomaly)


CASES += [
    Case("export-fs-object-array", _export_fs(anomaly=_object_array),
         r"b_anomaly\.npy is not a readable plain \.npy array \(Object arrays cannot be loaded"),
    Case("export-fs-truncated", _export_fs(anomaly=_cut(5000)),
         r"b_anomaly\.npy is not a readable plain \.npy array.*not fully written.*--save-maps fishyscapes"),
    Case("export-fs-truncated-header", _export_fs(segmentation=_cut(30)), r"b_segmentation\.npy is not a readable"),
    Case("export-fs-empty-file", _export_fs(segmentation=_cut(0)), r"b_segmentation\.npy is not a readable"),
    Case("export-fs-pickle", _export_fs(anomaly=lambda p: p.write_bytes(pickle.dumps({"a": 1}))),
         r"b_anomaly\.npy is not a readable plain \.npy array.*pickled"),
    Case("export-fs-npz", _export_fs(anomaly=lambda p: np.savez(open(p, "wb"), a=_fs_map())),
         r"b_anomaly\.npy is an \.npz archive"),
    Case("export-fs-integer-scores", _export_fs(anomaly=_saved(lambda: _fs_map(dtype=np.int32))),
         r"b_anomaly\.npy holds int32 of shape \(1024, 2048\); the submission takes float scores"),
    Case("export-fs-wrong-shape", _export_fs(anomaly=_saved(lambda: _fs_map(shape=(512, 1024)))),
         r"b_anomaly\.npy holds float32 of shape \(512, 1024\).*1024 x 2048"),
    Case("export-fs-float-segmentation", _export_fs(segmentation=_saved(lambda: _fs_map())),
         r"b_segmentation\.npy holds float32.*integer train ids"),
    Case("export-fs-segmentation-ids", _export_fs(segmentation=_saved(lambda: np.full(FS_SIZE, 19, np.int64))),
         r"b_segmentation\.npy: segmentation values 19\.\.19"),
    Case("export-fs-nan", _export_fs(anomaly=_saved(lambda: _fs_map(nan=3))),
         r"b_anomaly\.npy: the map has 3 NaN and 0 infinite score\(s\)"),
    Case("export-fs-all-nan", _export_fs(anomaly=_saved(lambda: _fs_map(nan=FS_SIZE[0] * FS_SIZE[1]))),
         r"b_anomaly\.npy: the map has 2097152 NaN"),
    Case("export-fs-inf", _export_fs(anomaly=_saved(lambda: _fs_map(inf=2))),
         r"b_anomaly\.npy: the map has 0 NaN and 2 infinite"),
    Case("export-fs-float64-overflow", _export_fs(anomaly=_saved(lambda: _fs_map(dtype=np.float64) * 1e300)),
         r"b_anomaly\.npy: the map has 0 NaN and 2097152 infinite"),
    Case("export-fs-out-exists", _export_fs(out=_someone_elses_folder), r"sub exists; pass --overwrite"),
    Case("export-fs-overwrite-someone-elses", _export_fs("--overwrite", out=_someone_elses_folder),
         r"sub exists and was not written by `sml export fishyscapes`"),
    Case("export-fs-out-is-a-file", _export_fs("--overwrite", out=lambda env: env.file("sub")), r"sub is a file"),
    Case("export-smiyc-all-nan", _export_smiyc(bad=_h5(value=np.full((4, 6), np.nan, np.float16))),
         r"validation0003\.hdf5: the map has 24 NaN and 0 infinite score\(s\)"),
    Case("export-smiyc-inf", _export_smiyc(bad=_h5(value=np.array([[np.inf, 1.0]], np.float16))),
         r"validation0003\.hdf5: the map has 0 NaN and 1 infinite"),
    Case("export-smiyc-truncated", _export_smiyc(bad=_cut(300)),
         r"validation0003\.hdf5 is not a usable SegmentMeIfYouCan map: it cannot be read as HDF5"),
    Case("export-smiyc-not-hdf5", _export_smiyc(bad=lambda p: p.write_bytes(b"\x93NUMPY")),
         r"validation0003\.hdf5 is not a usable.*cannot be read as HDF5.*--save-maps hdf5"),
    Case("export-smiyc-float32", _export_smiyc(bad=_h5(value=np.zeros((4, 6), np.float32))),
         r"validation0003\.hdf5 is not a usable.*'value' is float32 of shape \(4, 6\)"),
    Case("export-smiyc-1d", _export_smiyc(bad=_h5(value=np.zeros(24, np.float16))),
         r"'value' is float16 of shape \(24,\)"),
    Case("export-smiyc-no-value", _export_smiyc(bad=_h5(scores=np.zeros((4, 6), np.float16))),
         r"validation0003\.hdf5 is not a usable.*no dataset 'value'"),
    Case("export-smiyc-out-exists", _export_smiyc(out=lambda env: env.file("sub.zip")), r"sub\.zip exists; pass --overwrite"),
    Case("export-smiyc-overwrite-someone-elses", _export_smiyc("--overwrite", out=lambda env: env.file("sub.zip")),
         r"sub\.zip exists and was not written by `sml export smiyc`"),
    Case("writers-hdf5-float16-overflow", _write_map("hdf5", np.full((4, 4), 1e5, np.float32)),
         r"f0\.hdf5: the max_logit map of frame 'f0' has 16 NaN or infinite value\(s\) as float16",
         InputError, "api"),
    Case("writers-fishyscapes-nan", _write_map("fishyscapes", np.array([[np.nan, 1.0]], np.float32)),
         r"f0_anomaly\.npy: the max_logit map of frame 'f0' has 1 NaN or infinite value\(s\) as float32",
         InputError, "api"),
]


# output folders and files that sml did not write (issue 19): refused before any work, nothing
# deleted, replaced or written through a link
def _user_folder(env: Env) -> Path:
    """The tester's folder: results of the user's own, no run.json of sml."""
    u = env.tmp / "mine"
    (u / "report").mkdir(parents=True)
    (u / "npy").mkdir()
    (u / "report" / "x.tex").write_text("\\section{mine}\n")
    np.save(u / "npy" / "a.npy", np.arange(4.0))
    (u / "stats.json").write_text('{"mine": true}\n')
    return u


def _sml_run(env: Env, files: list[str], command: str = "eval", name: str = "run") -> Path:
    """A run folder as sml leaves it: the files (metrics.json a minimal one) and a run.json listing them."""
    root = env.tmp / name
    root.mkdir(parents=True, exist_ok=True)
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text(json.dumps({"dataset": "folder", "methods": {}}) if f == "metrics.json" else f)
    (root / "run.json").write_text(json.dumps({"format": "sml-run/1", "command": command, "run_id": "r",
                                               "files": files}))
    return root


def _linked_maps(env: Env) -> Path:
    """An sml run whose maps/ was replaced by a link to another folder with files of the same names."""
    root = _sml_run(env, ["metrics.json", "maps/sml/f0.npy"])
    (root / "maps").rename(env.tmp / "elsewhere")
    (root / "maps").symlink_to(env.tmp / "elsewhere", target_is_directory=True)
    return root


def _linked_report(env: Env) -> Path:
    root = _sml_run(env, ["metrics.json"])
    (env.tmp / "their_report").mkdir()
    (root / "report").symlink_to(env.tmp / "their_report", target_is_directory=True)
    return root


def _unlisted_index(env: Env) -> Path:
    root = _sml_run(env, ["metrics.json"])
    (root / "report").mkdir()
    (root / "report" / "index.html").write_text("<p>my own page</p>")
    return root


def _escaping_manifest(env: Env) -> Path:
    env.file("victim.txt", b"keep me\n")
    root = _sml_run(env, ["metrics.json"])
    (root / "run.json").write_text(json.dumps({"format": "sml-run/1", "command": "eval", "run_id": "r",
                                               "files": ["metrics.json", "../victim.txt"]}))
    return root


def _stats_args(env: Env, out: Path) -> list[str]:
    return ["stats", "--model", "erfnet", "--weights", str(env.weights), "--data", f"folder:{env.data()}",
            "-o", str(out)]


def _diagnose_over_user_png(env: Env) -> list[str]:
    from sml.diagnostics import ClassDiagnostics

    d = ClassDiagnostics(num_classes=2, class_names=["road", "car"], sml=False)
    d.update_from_predictions(np.array([0, 1, 1]), np.array([5.0, 6.0, 2.0], np.float32), np.array([0, 0, 1]))
    (env.tmp / "run").mkdir()
    d.save(env.tmp / "run" / "diagnostics.json")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(env.tmp / "fig.png")  # the user's, no sml mark
    return ["diagnose", str(env.tmp / "run"), "--out", str(env.tmp / "fig")]


def _train_args(env: Env, out: Path) -> list[str]:
    return ["train", "--config", "erfnet_cityscapes", f"data.root={env.tmp / 'cityscapes'}",
            f"train.out_dir={out}", "train.device=cpu"]


CASES += [
    Case("eval-out-user-folder", lambda env: env.eval_args(method="max_logit", out=_user_folder(env)),
         r"output folder .*mine already holds files that sml did not write .*no run\.json of sml"),
    Case("eval-overwrite-user-folder",
         lambda env: env.eval_args("--overwrite", method="max_logit", out=_user_folder(env)),
         r"mine already holds files that sml did not write"),
    Case("eval-overwrite-linked-maps", lambda env: env.eval_args("--overwrite", method="max_logit",
                                                                 out=_linked_maps(env)),
         r"run/maps is a symbolic link inside the run folder.*nothing was changed"),
    Case("eval-overwrite-manifest-outside",
         lambda env: env.eval_args("--overwrite", method="max_logit", out=_escaping_manifest(env)),
         r"run\.json lists '\.\./victim\.txt', which is not a path inside"),
    Case("eval-into-predict-output",
         lambda env: env.eval_args(method="max_logit", out=_sml_run(env, ["sml/a.npy"], "predict")),
         r"holds the output of `sml predict`"),
    Case("eval-run-json-not-smls",
         lambda env: env.eval_args(method="max_logit", out=(env.tmp / "r").mkdir() or env.file("r/run.json").parent),
         r"r/run\.json is not a run\.json of sml"),
    Case("predict-out-user-folder", lambda env: env.predict_args(str(env.image()), out=_user_folder(env)),
         r"mine already holds files that sml did not write"),
    Case("report-into-linked-report", lambda env: ["report", str(_linked_report(env))],
         r"run/report is a symbolic link"),
    Case("report-over-user-index", lambda env: ["report", str(_unlisted_index(env))],
         r"report/index\.html exists and sml did not write it"),
    Case("diagnose-over-user-figure", _diagnose_over_user_png, r"figure .*fig\.png exists and was not written by sml"),
    Case("stats-over-user-json", lambda env: _stats_args(env, env.file("mine.json", b'{"mine": 1}\n')),
         r"-o .*mine\.json exists and was not written by sml"),
    Case("stats-partial-folder-with-user-files",
         lambda env: _stats_args(env, (env.tmp / "s.json.partial").mkdir() or env.file("s.json.partial/notes.txt")
                                 .parent.with_name("s.json")),
         r"s\.json\.partial .*holds notes\.txt, which sml did not write"),
    Case("demo-out-user-folder", lambda env: ["demo", "--out", str(_user_folder(env)), "--iterations", "20"],
         r"mine already holds files that sml did not write"),
    Case("train-out-user-folder", lambda env: _train_args(env, _user_folder(env)),
         r"mine already holds files that sml did not write"),
]


# disk full while writing (ENOSPC from the write itself): the path is named, no temporary file is left
class _FullDisk:
    """A file whose every write finds the disk full."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)

    def __enter__(self) -> "_FullDisk":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.fh.close()


def _disk_full_during(call: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        real = os.fdopen
        os.fdopen = lambda *a, **k: _FullDisk(real(*a, **k))  # type: ignore[assignment]
        try:
            return call()
        finally:
            os.fdopen = real
    return run


def _full_map(fmt: str) -> Callable[[Env], Any]:
    from sml.pipelines import writers

    return lambda env: _disk_full_during(lambda: writers.write_map(env.tmp / "run", fmt, "sml", "set", "f0",
                                                                   np.ones((4, 6), np.float32),
                                                                   np.zeros((4, 6), np.uint8)))


def _full_figure(env: Env) -> Callable[[], Any]:
    from sml.report import plot_curves

    curves = {"sml": {"roc": {"fpr": [0, 1], "tpr": [0, 1]}, "pr": {"precision": [1, 0.5], "recall": [0, 1]}}}
    return _disk_full_during(lambda: plot_curves(curves, env.tmp / "report" / "img" / "curves"))


def _full_chunk(env: Env) -> Callable[[], Any]:
    from sml.pipelines.resume import write_chunk

    return _disk_full_during(lambda: write_chunk(env.tmp / ".partial" / "g0.r0.c0.npz", {"a": np.ones(3)}))


def _full_copy(env: Env) -> Callable[[], Any]:
    src = env.file("weights.pth", b"w" * 5000)
    return _disk_full_during(lambda: atomic.copy_file(src, env.tmp / "cache" / "weights.pth"))


def _full_in_run(env: Env) -> Callable[[], Any]:
    """Through a run folder: the journal was written, the map was not; the error names the map."""
    from sml.pipelines import writers
    from sml.utils.run_folder import RunFolder

    def call() -> None:
        with RunFolder(env.tmp / "pred", "predict"):
            _disk_full_during(lambda: writers.write_map(env.tmp / "pred", "npy", "sml", "s", "f0",
                                                        np.ones((2, 2))))()
    return call


CASES += [
    Case(f"disk-full-{fmt}-map", _full_map(fmt), rf"cannot write .*{re.escape(where)}: no space left", OutputError,
         "api")
    for fmt, where in (("hdf5", "anomaly_p/sml/set/f0.hdf5"), ("png16", "png16/sml/f0.png"),
                       ("npy", "npy/sml/f0.npy"), ("npy16", "maps/sml/f0.npy"),
                       ("fishyscapes", "fishyscapes/sml/f0_anomaly.npy"))
]
def _full_lock(env: Env) -> Callable[[], Any]:
    """The lock file's record (os.write) finds the disk full: named, and no lock file is left."""
    from sml.utils.run_folder import RunFolder

    def call() -> None:
        def full(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        real, os.write = os.write, full
        try:
            with RunFolder(env.tmp / "out", "predict"):
                pass
        finally:
            os.write = real
    return call


CASES += [
    Case("disk-full-lock-file", _full_lock, r"out/\.sml-run\.lock: no space left", OutputError, "api"),
    Case("disk-full-report-figure", _full_figure, r"report/img/curves\.png: no space left", OutputError, "api"),
    Case("disk-full-resume-chunk", _full_chunk, r"\.partial/g0\.r0\.c0\.npz: no space left", OutputError, "api"),
    Case("disk-full-weights-copy", _full_copy, r"cache/weights\.pth: no space left", OutputError, "api"),
    Case("disk-full-in-a-run-folder", _full_in_run, r"pred/npy/sml/f0\.npy: no space left", OutputError, "api"),
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


# statistics paired with another network, resume state of another run (issue 19). Tiny TorchScript
# networks behind model cards (test_pipeline_fixtures); statistics and runs made here, in the case folder.
REORDERED = ["sidewalk", "road", *ClassStatistics(19).class_names[2:]]


def _card(env: Env, seed: int = 0, classes: list[str] | None = None, name: str | None = None) -> Path:
    """The tiny network ``seed`` behind a card; ``classes`` and ``name`` give a second card for the same file."""
    from test_pipeline_fixtures import make_model

    card = make_model(env.tmp, seed)
    if classes is None and name is None:
        return card
    other = env.tmp / f"{name or card.stem}_{'x' if classes else 'n'}.yaml"
    text = card.read_text().replace(f"name: tiny{seed}", f"name: {name or f'tiny{seed}'}")
    if classes is not None:
        text = text.replace("classes: cityscapes", "classes: " + json.dumps(classes))
    other.write_text(text)
    return other


def _tiny_stats(env: Env, card: Path, name: str = "stats.json") -> Path:
    from sml.cli.main import main
    from test_pipeline_fixtures import make_cityscapes

    cs = make_cityscapes(env.tmp / "cs", n=3)
    out = env.tmp / name
    assert main(["stats", "--model", str(card), "--data", f"cityscapes:{cs}", "-o", str(out)]) == 0
    return out


def _smiyc(env: Env, seed: int = 0) -> Path:
    from test_pipeline_fixtures import make_smiyc

    return make_smiyc(env.tmp / f"smiyc{seed}", n=3, seed=seed)


def _tiny_eval(env: Env, card: Path, stats: Path, *extra: str, data: Path | None = None,
               out: str = "run") -> list[str]:
    return ["eval", "--model", str(card), "--stats", str(stats), "--data",
            f"smiyc-anomaly:{data or _smiyc(env)}", "--out", str(env.tmp / out), "--method", "sml,max_logit",
            *extra]


def _interrupted(args: list[str], after: int) -> None:
    """Run the command in process and stop it (as Ctrl-C does) in the forward pass after ``after`` frames."""
    from sml.cli.main import main
    from sml.pipelines import common

    real, calls = common.forward, {"n": 0}

    def dies(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > after:
            raise KeyboardInterrupt
        return real(*a, **k)

    common.forward = dies
    try:
        assert main(args) == 130
    finally:
        common.forward = real


def _pair_cli(classes: list[str] | None = None, seed: int = 1, predict: bool = False) -> Callable[[Env], Any]:
    """Statistics of tiny network 0, used with tiny network ``seed`` or with the same one's ``classes``."""
    def run(env: Env) -> list[str]:
        stats = _tiny_stats(env, _card(env, 0))
        card = _card(env, 0, classes=classes) if classes is not None else _card(env, seed)
        if predict:
            return ["predict", "--model", str(card), "--stats", str(stats), "--out", str(env.tmp / "pred"),
                    str(env.image())]
        return _tiny_eval(env, card, stats)
    return run


def _unnamed_stats(env: Env) -> list[str]:
    return env.eval_args(stats=env.stats(name="unnamed.json"))   # as older sml wrote them: no network identity


def _published_stats_with_erfnet(env: Env) -> list[str]:
    ref = env.weights.parents[1] / "reference"
    return env.eval_args("--stats-var", str(ref / "cityscapes_var.npy"), stats=ref / "cityscapes_mean.npy")


def _resume_case(change: Callable[[Env, Path, list[str]], Any], after: int = 2) -> Callable[[Env], list[str]]:
    """An eval stopped after ``after`` frames (a chunk per frame), ``change`` applied, then ``--resume``."""
    def run(env: Env) -> list[str]:
        card = _card(env, 0)
        stats = _tiny_stats(env, card)
        args = _tiny_eval(env, card, stats, "--save-every", "1")
        _interrupted(args, after)
        return change(env, env.tmp / "run" / ".partial" / "state", args) or [*args, "--resume"]
    return run


def _chunk_of_other_data(env: Env, state: Path, args: list[str]) -> None:
    other = _tiny_eval(env, _card(env, 0), env.tmp / "stats.json", "--save-every", "1", data=_smiyc(env, 5),
                       out="other")
    _interrupted(other, 1)
    # the foreign chunk replaces one of ours under its listed name (an unlisted name is refused earlier,
    # by the run folder: test_bad_inputs' run-folder cases)
    os.replace(env.tmp / "other" / ".partial" / "state" / "g0.r0.c0.npz", state / "g0.r0.c0.npz")


def _other_data_same_out(env: Env, state: Path, args: list[str]) -> list[str]:
    i = args.index("--data")
    return [*args[:i + 1], f"smiyc-anomaly:{_smiyc(env, 5)}", *args[i + 2:], "--resume"]


def _frame_replaced(env: Env, state: Path, args: list[str]) -> None:
    image = env.tmp / "smiyc0" / "images" / "frame00.png"
    Image.fromarray(np.full((48, 64, 3), 7, np.uint8)).save(image)   # same size, other pixels


def _edit_chunk(edit: Callable[[dict[str, Any]], Any], name: str = "g0.r0.c0.npz"
                ) -> Callable[[Env, Path, list[str]], None]:
    """Rewrite a chunk with ``edit`` applied to its payload, keeping its run identity (a deliberate edit)."""
    def change(env: Env, state: Path, args: list[str]) -> None:
        from sml.pipelines import resume

        chunk = resume.read_chunk(state / name)
        edit(chunk["payload"])
        resume.write_chunk(state / name, chunk)
    return change


def _impossible_anomaly_count(payload: dict[str, Any]) -> None:
    payload["records"][0][1]["pixels"]["anomaly"] = 1000004773


def _diagnostics_beyond_frames(payload: dict[str, Any]) -> None:
    d = payload["diagnostics"]
    for key in ("max_logit_hist", "sml_hist"):   # consistent in itself: both histograms gain the same pixels
        d[key] = d[key].copy()
        d[key][1, 0, 5] += 1000   # the metrics and frame records untouched


def _stats_resume(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Env], list[str]]:
    """`sml stats` stopped after 2 frames (a chunk per frame), its first chunk edited, then ``--resume``."""
    def run(env: Env) -> list[str]:
        from test_pipeline_fixtures import make_cityscapes

        cs = make_cityscapes(env.tmp / "cs", n=3)
        args = ["stats", "--model", str(_card(env, 0)), "--data", f"cityscapes:{cs}", "-o",
                str(env.tmp / "stats.json"), "--save-every", "1"]
        _interrupted(args, 2)
        _edit_chunk(lambda p: edit(next(iter(p["partials"].values()))))(env, env.tmp / "stats.json.partial", args)
        return [*args, "--resume"]
    return run


def _busiest(part: dict[str, Any]) -> int:
    return int(np.argmax(part["n"]))


def _nan_mean(part: dict[str, Any]) -> None:
    part["mean"] = part["mean"].copy()
    part["mean"][_busiest(part)] = np.nan


def _more_pixels_than_the_frame(part: dict[str, Any]) -> None:
    part["n"] = part["n"].copy()
    part["n"][_busiest(part)] += 10 ** 6


def _save_inconsistent_stats(env: Env) -> Callable[[], Any]:
    s = ClassStatistics(19).update_from_predictions(np.array([3, 3, 3]), np.array([1.0, 2.0, 3.5]))
    s._mean[3] = np.nan   # what a tampered chunk produced before: a class with pixels and no mean
    return lambda: s.save(env.tmp / "stats.json")


def _diagnostics_state(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Env], Any]:
    def run(env: Env) -> Callable[[], Any]:
        from sml.diagnostics import ClassDiagnostics

        d = ClassDiagnostics(19, sml=True)
        rng = np.random.default_rng(0)
        d.update_from_predictions(rng.integers(0, 19, (8, 8)), rng.normal(5, 2, (8, 8)),
                                  rng.integers(0, 2, (8, 8)), rng.normal(0, 1, (8, 8)))
        state = d.state_dict()
        edit(state)
        return lambda: ClassDiagnostics(19, sml=True).load_state_dict(state)
    return run


def _component_state(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Env], Any]:
    def run(env: Env) -> Callable[[], Any]:
        from sml.metrics import ComponentMetrics

        labels = np.zeros((20, 20), np.uint8)
        labels[5:12, 5:12] = 1
        cm = ComponentMetrics("obstacle", threshold=0.5)
        cm.update(labels.astype(np.float32), labels)
        state = cm.state_dict()
        edit(state)
        return lambda: ComponentMetrics().load_state_dict(state)
    return run


def _chunk_of_another_run(env: Env) -> Callable[[], Any]:
    from sml.pipelines import resume

    a, b = resume.ResumeStore(env.tmp / "a", {"data": "A"}), resume.ResumeStore(env.tmp / "b", {"data": "B"})
    a.start(resume=False)
    b.start(resume=False)
    a.save({"n": 1})
    os.replace(next((env.tmp / "a").glob("*.npz")), env.tmp / "b" / "g0.r0.c0.npz")
    return lambda: resume.ResumeStore(env.tmp / "b", {"data": "B"}).start(resume=True)


_FIX_PAIR = r"sml stats.*--stats-from-other-network"
CASES += [
    Case("pair-classes-reordered", _pair_cli(classes=REORDERED),
         r"stats\.json do not have the class names of the network 'tiny0'.*2 of 19 classes differ \(class 0 is "
         r"'road' in the statistics but 'sidewalk' in the network.*Compute statistics for this network"),
    Case("pair-classes-other", _pair_cli(classes=[f"thing{i}" for i in range(19)]),
         r"stats\.json do not have the class names.*19 of 19 classes differ.*network: \[thing0, thing1"),
    Case("pair-classes-predict", _pair_cli(classes=REORDERED, predict=True),
         r"stats\.json do not have the class names of the network"),
    Case("pair-other-network", _pair_cli(seed=1),
         r"stats\.json come from another network: they were computed with 'tiny0', tiny0\.pt \(sha256 [0-9a-f]{12}"
         r"\.\.\.\), but the network in use is 'tiny1', tiny1\.pt.*" + _FIX_PAIR),
    Case("pair-other-network-predict", _pair_cli(seed=1, predict=True),
         r"stats\.json come from another network.*'tiny1'.*" + _FIX_PAIR),
    Case("pair-unnamed-stats", _unnamed_stats,
         r"unnamed\.json do not say which network they were computed with.*'erfnet', erfnet_cityscapes\.pth.*"
         + _FIX_PAIR),
    Case("pair-published-stats-other-network", _published_stats_with_erfnet,
         r"cityscapes_mean\.npy come from another network: the published statistics of deeplabv3plus_r101_os8 "
         r"belong to its weights file r101_os8_base_cty\.pth.*'erfnet'.*" + _FIX_PAIR),
    Case("resume-chunk-of-other-data", _resume_case(_chunk_of_other_data),
         r"resume chunk .*g0\.r0\.c0\.npz belongs to another run.*run again without --resume"),
    Case("resume-other-data-same-out", _resume_case(_other_data_same_out),
         r"partial state in .*belongs to a different run.*differs in: data; dataset; frame_files\).*without --resume"),
    Case("resume-frame-replaced", _resume_case(_frame_replaced),
         r"frames changed on disk.*frame frame00: image .*frame00\.png \(.*\).*without --resume"),
    Case("resume-impossible-anomaly-count", _resume_case(_edit_chunk(_impossible_anomaly_count)),
         r"g0\.r0\.c0\.npz records 1000004773 anomaly and \d+ inlier pixels for frame frame00, which has 3072 "
         r"pixels.*run again without --resume"),
    Case("resume-diagnostics-beyond-frames", _resume_case(_edit_chunk(_diagnostics_beyond_frames)),
         r"g0\.r0\.c0\.npz holds diagnostics of \(anomaly, inlier, ignored pixels, frames\) = \(\d+, .*but its "
         r"frames have"),
    Case("stats-resume-nan-mean", _stats_resume(_nan_mean),
         r"resume chunk .*g0\.r0\.c0\.npz holds no valid statistics \(statistics state: class \d+ '[a-z ]+' has "
         r"\d+ pixels but mean nan\).*without --resume"),
    Case("stats-resume-more-pixels-than-frame", _stats_resume(_more_pixels_than_the_frame),
         r"g0\.r0\.c0\.npz counts \d+ pixels for frame testcity_000000_000019, which has 2048"),
    Case("stats-save-inconsistent", _save_inconsistent_stats,
         r"refusing to write inconsistent statistics: .*stats\.json: class 3 'wall' has 3 pixels but mean null",
         InputError, "api"),
    Case("diagnostics-state-histograms-disagree",
         _diagnostics_state(lambda st: st["sml_hist"].__setitem__((0, 0, 0), st["sml_hist"][0, 0, 0] + 1)),
         r"SML-score histograms do not count the same pixels", InputError, "api"),
    Case("diagnostics-state-pixels-without-frames", _diagnostics_state(lambda st: st.__setitem__("frames", 0)),
         r"pixels are counted but no frame", InputError, "api"),
    Case("components-state-siou-above-one",
         _component_state(lambda st: st.__setitem__("siou_gt", np.array([1.5]))),
         r"siou_gt holds values outside \[0, 1\]", InputError, "api"),
    Case("components-state-without-frames", _component_state(lambda st: st.__setitem__("frames", 0)),
         r"recorded but no frame", InputError, "api"),
    Case("resume-api-chunk-of-another-run", _chunk_of_another_run,
         r"g0\.r0\.c0\.npz belongs to another run", InputError, "api"),
]


# mask-classification networks and the section 8 scores (issue 21): refused before the first forward pass
def _mask_ts(env: Env) -> Path:
    """A TorchScript mask-classification network: (class logits 1 x 4 x (3+1), mask logits 1 x 4 x h/4 x w/4)."""
    from torch import nn

    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
            self.cls = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            masks = self.conv(x)
            return self.cls(masks.mean(dim=(2, 3))[:, None, :].expand(-1, 4, -1)), masks

    p = env.tmp / "pair.ts"
    torch.jit.script(Pair().eval()).save(str(p))
    return p


def _mask_card(file: Callable[[Env], Path], **output: Any) -> Callable[[Env], Callable[[], Any]]:
    def run(env: Env) -> Callable[[], Any]:
        import yaml

        import sml.models as M

        card = {"name": "net", "format": "torchscript", "file": file(env).name,
                "input": {**CARD_INPUT, "size": [32, 48]}, "output": {"classes": ["a", "b", "c"], **output}}
        (env.tmp / "card.yaml").write_text(yaml.safe_dump(card))
        return lambda: M.load(str(env.tmp / "card.yaml"))
    return run


CASES += [
    Case("eval-rba-eam-on-a-logits-network", lambda env: env.eval_args(method="max_logit,rba,eam"),
         r"rba, eam: not applicable to this network, whose output kind is logits; rba and eam need a "
         r"mask-classification network's class and mask logits per query .*Leave rba, eam out of --method"),
    Case("predict-eam-on-a-logits-network", lambda env: env.predict_args(str(env.image()), method="eam"),
         r"eam: not applicable to this network, whose output kind is logits"),
    Case("eval-gen-gamma-without-gen", lambda env: env.eval_args("--gen-gamma", "0.2", method="max_logit"),
         r"--gen-gamma sets method gen, which is not in --method \(max_logit\); add gen to --method"),
    Case("eval-gen-m-zero", lambda env: env.eval_args("--gen-m", "0", method="gen"),
         r"--gen-gamma / --gen-m: gen M \(how many of the largest class probabilities are summed\) must be an "
         r"integer >= 1"),
    Case("predict-gen-gamma-negative", lambda env: [*env.predict_args(str(env.image()), method="gen"),
                                                    "--gen-gamma", "-1"],
         r"--gen-gamma / --gen-m: gen gamma must be a positive finite number, got -1"),
    Case("eval-gen-m-above-the-classes", lambda env: env.eval_args("--gen-m", "20", method="gen"),
         r"gen M=20 exceeds the network's 19 classes; give an M of at most 19 \(--gen-m\)"),
    Case("eval-hf-shorthand-without-source", lambda env: ["eval", "--model", "hf:", "--data", f"folder:{env.data()}",
                                                          "--method", "max_logit", "--out", str(env.tmp / "run")],
         r"--model 'hf:': give a transformers hub id or a folder after 'hf:'"),
    Case("card-mask-classification-channel-subset",
         _mask_card(_mask_ts, kind="mask-classification", channels=[0, 1], classes=["a", "b"]),
         r"card\.yaml: field output\.channels is \[0, 1\], but a mask-classification network's classes are all the "
         r"columns of its class logits before 'no object' \(here 3\)", InputError, "api"),
    Case("card-mask-classification-network-returns-logits",
         _mask_card(_fixed_output_ts, kind="mask-classification"),
         r"card\.yaml: a mask-classification network \(output\.kind: mask-classification\) must return a tuple "
         r"\(class logits B x Q x \(K\+1\), mask logits B x Q x h x w\).*it returned a tensor of shape "
         r"\(1, 4, 24, 40\)", InputError, "api"),
    Case("card-logits-network-returns-a-mask-pair", _mask_card(_mask_ts),
         r"card\.yaml: for a 1 x 3 x 32 x 48 input the network returned \(1, 4, 4\), not 1 x K x h x w class "
         r"scores \(a pair \(class logits, mask logits\) is a mask-classification network's output: set "
         r"output\.kind: mask-classification\)", InputError, "api"),
]


# ----------------------------------------------------------------------------- runner

def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if not p.is_dir()}


def _contents(root: Path) -> dict[Path, bytes]:
    """Every file under ``root`` and its bytes (links themselves, not followed)."""
    return {p: (os.readlink(p).encode() if p.is_symlink() else p.read_bytes()) for p in _files(root)
            if p.is_symlink() or p.is_file()}


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
    kept = _contents(tmp_path)
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
    now = _contents(tmp_path)
    changed = sorted(str(p) for p, data in kept.items() if now.get(p) != data)
    assert not changed, f"files deleted or changed by a refused call: {changed}" + "".join(
        f"\n--- {c}\n{kept[Path(c)][:600]!r}\n+++\n{now.get(Path(c), b'')[:600]!r}" for c in changed)
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


class _CornerLogits(torch.nn.Module):
    """19-class logits 0 everywhere except ``value`` for class 3 in the top-left 4 x 4 pixels."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 19, x.shape[2], x.shape[3]) + 0.0 * x.mean()
        out[:, 3, :4, :4] = self.value
        return out


@pytest.mark.parametrize("value, formats, fragment", [
    # the eval side refuses non-finite logits before any score is written (sml.scores)
    (NAN, "hdf5,fishyscapes", r"max_logit contains NaN or infinite values"),
    (INF, "fishyscapes", r"max_logit contains NaN or infinite values"),
    # finite logits whose score overflows float16: the HDF5 writer refuses the map (sml.pipelines.writers)
    (1e5, "hdf5", r"f0\.hdf5: the max_logit map of frame 'f0' has 16 NaN or infinite value\(s\) as float16"),
    (1e5, "fishyscapes", None),  # the positive control: float32 holds it, the map is written
])
def test_eval_never_writes_a_non_finite_submission_map(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       value: float, formats: str, fragment: str | None) -> None:
    torch.jit.script(_CornerLogits(value)).save(str(tmp_path / "net.pt"))
    card = tmp_path / "net.yaml"
    card.write_text("name: corner\nformat: torchscript\nfile: net.pt\ninput:\n  size: null\n  channel_order: RGB\n"
                    "  scale: 1\noutput:\n  classes: cityscapes\n")
    env = Env(tmp_path, tmp_path / "unused.pth")
    run = tmp_path / "run"
    code, err = _run_cli(["eval", "--model", str(card), "--data", f"folder:{env.data()}", "--method", "max_logit",
                          "--save-maps", formats, "--out", str(run)], capsys)
    maps = sorted(run.glob("anomaly_p/**/*.hdf5")) + sorted(run.glob("fishyscapes/**/*.npy"))
    if fragment is None:
        assert code == 0 and len(maps) == 4, err  # 2 frames, anomaly + segmentation
        return
    assert code == 2 and "Traceback" not in err and _search(fragment, err), err
    assert maps == []


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


def test_check_writable_survives_a_concurrent_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two torchrun ranks check the same new folder: one removes it while the other probes (a CI race once)."""
    real, calls = tempfile.mkstemp, []

    def racing(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["dir"])
        if len(calls) == 1:   # the other rank's cleanup, between this rank's mkdir and its probe
            os.rmdir(kwargs["dir"])
        return real(*args, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", racing)
    atomic.check_writable(tmp_path / "two")
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []


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
