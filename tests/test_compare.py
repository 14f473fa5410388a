"""`sml compare` / `sml.report.compare`: one table of several run directories.

Real run folders come from `sml eval` with the tiny TorchScript networks of
test_pipeline_fixtures on small SegmentMeIfYouCan-layout sets (seconds); the
slow test uses the real ERFNet on shared Road Anomaly and SMIYC frames. Runs
with chosen numbers (bold, ties, NaN, escaping) are written as the run
directory contract says (docs/design.md): metrics.json, run.json, frames.json.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from sml.cli.main import main
from sml.errors import InputError
from sml.report.compare import compare_runs
from test_bad_inputs import _files, _run_cli, _search
from test_pipeline_fixtures import make_cityscapes, make_model, make_smiyc

NAN = float("nan")


# ----------------------------------------------------------------------------- run folders

@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Five finished runs of `sml eval`: two networks, two data sets, two protocols, two SML settings."""
    base = tmp_path_factory.mktemp("compare")
    tiny0, tiny1 = make_model(base, 0), make_model(base, 1)
    cs = make_cityscapes(base / "cs", n=3)
    assert main(["stats", "--model", str(tiny0), "--data", f"cityscapes:{cs}", "-o", str(base / "stats0.json")]) == 0
    a, b = make_smiyc(base / "a", n=3), make_smiyc(base / "b", n=3, seed=4)
    stats = ["--stats", str(base / "stats0.json")]
    specs = {
        "a0": [tiny0, f"smiyc-anomaly:{a}", "sml,max_logit", *stats],
        "b0": [tiny0, f"smiyc-obstacle:{b}", "sml,max_logit", *stats],
        "a0s": [tiny0, f"smiyc-anomaly:{a}", "max_logit", "--protocol", "smiyc"],
        "a1": [tiny1, f"smiyc-anomaly:{a}", "max_logit,energy"],
        "a0w": [tiny0, f"smiyc-anomaly:{a}", "sml", *stats, "--boundary-width", "2", "--boundary-iterations", "2"],
    }
    out = {}
    for name, (model, data, methods, *extra) in specs.items():
        out[name] = base / "runs" / name
        assert main(["eval", "--model", str(model), "--data", data, "--method", methods, "--out", str(out[name]),
                     "--no-diagnostics", *extra]) == 0
    return out


def _metrics(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text())


def fake_run(root: Path, methods: dict[str, dict[str, Any]], *, model: str = "net", dataset: str = "road-anomaly",
             protocol: str = "exact", frames: tuple[str, ...] = ("f0", "f1"), **top: Any) -> Path:
    """A run folder with chosen numbers, laid out as `sml eval` writes one (no curves.json)."""
    root.mkdir(parents=True)
    metrics = {"dataset": dataset, "frames": len(frames), "frames_scored": len(frames),
               "pixels": {"anomaly": 10, "inlier": 90}, "model": model, "stats": None,
               "fpr95_convention": "interpolated", "methods": methods, "protocol": protocol, "notes": [], **top}
    (root / "metrics.json").write_text(json.dumps(metrics))
    (root / "run.json").write_text(json.dumps({"run_id": "0" * 32, "files": []}))
    (root / "frames.json").write_text(json.dumps([{"id": f, "image": f"{f}.png", "labels": None, "methods": {}}
                                                  for f in frames]))
    return root


def _m(auroc: float, ap: float, fpr95: float) -> dict[str, float]:
    return {"auroc": auroc, "ap": ap, "fpr95": fpr95}


# ----------------------------------------------------------------------------- the table

def test_table_values_are_the_runs_metrics(runs: dict[str, Path]) -> None:
    names = ["a0", "b0", "a0s", "a1"]
    c = compare_runs([runs[n] for n in names])
    assert [col.label for col in c.columns] == ["smiyc-anomaly (protocol exact)", "smiyc-obstacle (protocol exact)",
                                                "smiyc-anomaly (protocol smiyc)"]
    assert [(r.network, r.method) for r in c.rows] == [("tiny0", "sml"), ("tiny0", "max_logit"),
                                                       ("tiny1", "max_logit"), ("tiny1", "energy")]
    filled = 0
    for (row, col), cell in c.cells.items():
        expected = _metrics(runs[cell.run.name])["methods"][row.method]
        assert cell.run.metrics["protocol"] == col.protocol
        for key in ("auroc", "ap", "fpr95"):
            assert c.shown(row, col, key) == f"{100 * expected[key]:.2f}"
            filled += 1
    assert filled == 3 * (2 + 2 + 1 + 2)
    table = c.to_markdown()
    for n in names:
        for method, r in _metrics(runs[n])["methods"].items():
            assert f"{100 * r['auroc']:.2f}" in table
    # the CSV: one line per run and method, the fractions of metrics.json exactly
    rows = list(csv.DictReader(io.StringIO(c.to_csv())))
    assert len(rows) == 7
    for line in rows:
        expected = _metrics(runs[line["run"]])["methods"][line["method"]]
        assert {k: float(line[k]) for k in ("auroc", "ap", "fpr95")} == {k: expected[k] for k in ("auroc", "ap", "fpr95")}
        assert line["protocol"] == _metrics(runs[line["run"]])["protocol"]


def test_protocols_are_separate_labelled_columns_with_a_note(runs: dict[str, Path]) -> None:
    mixed = compare_runs([runs["a0"], runs["a0s"]])
    assert [(col.dataset, col.protocol) for col in mixed.columns] == [("smiyc-anomaly", "exact"),
                                                                       ("smiyc-anomaly", "smiyc")]
    assert all(f"protocol {col.protocol}" in col.label for col in mixed.columns)
    assert "different protocols (exact, smiyc)" in mixed.notes[0]
    text = mixed.to_markdown()
    assert "smiyc-anomaly (protocol smiyc) AUROC %" in text and "smiyc-anomaly (protocol exact) AUROC %" in text
    assert "different protocols" in mixed.to_latex() and "different protocols" in mixed.to_html()
    # the protocol's own notes go with the table
    assert any(n.startswith("smiyc-anomaly (protocol smiyc): smiyc:") for n in mixed.notes)
    same = compare_runs([runs["a0"], runs["a1"]])
    assert [col.label for col in same.columns] == ["smiyc-anomaly"]
    assert same.notes[0].startswith("protocol exact for every run")


def test_differing_settings_are_listed_and_split_rows(runs: dict[str, Path]) -> None:
    c = compare_runs([runs["a0"], runs["a0w"], runs["a1"]])
    # a2's tiny network is another network (its identity), and without statistics nothing is paired
    assert c.differing == ["model", "stats", "network", "stats_pairing", "sml.boundary_width",
                           "sml.boundary_iterations"]
    sml_rows = [r for r in c.rows if r.method == "sml"]
    assert [r.variant for r in sml_rows] == ["boundary_width=4; boundary_iterations=4",
                                             "boundary_width=2; boundary_iterations=2"]
    # max_logit does not read the statistics: tiny0's max_logit is one row, not split by --stats
    assert [r.label for r in c.rows if r.method == "max_logit"] == ["tiny0 / max_logit", "tiny1 / max_logit"]
    md = c.to_markdown()
    settings = md.split("## Settings that differ", 1)[1]
    assert "| setting | a0 | a0w | a1 |" in settings
    assert "| sml.boundary_width | 4 | 2 | - |" in settings  # a1 has no sml
    assert re.search(r"\| stats \| stats0\.json #[0-9a-f]{8} \| stats0\.json #[0-9a-f]{8} \| none \|", settings)
    header = next(csv.reader(io.StringIO(c.to_csv())))
    extra = [k for k in c.differing if k not in header[:8]]  # "network" is a fixed column already
    assert header[-len(extra):] == extra and len(extra) == 5
    html = c.to_html()
    assert "Settings that differ" in html and "sml.boundary_iterations" in html
    one = compare_runs([runs["a0"]])
    assert one.differing == [] and "None: a single run." in one.to_markdown()


def test_the_same_cell_twice_keeps_a_row_per_run_folder(runs: dict[str, Path], tmp_path: Path) -> None:
    again = tmp_path / "again"
    shutil.copytree(runs["a1"], again)
    c = compare_runs([runs["a1"], again, runs["b0"]])
    labels = [r.label for r in c.rows]
    assert "tiny1 / max_logit [run=a1]" in labels and "tiny1 / max_logit [run=again]" in labels
    assert "tiny0 / max_logit" in labels  # b0 collides with nothing
    assert any(n.startswith("run=NAME") for n in c.notes)
    assert len(c.cells) == 2 + 2 + 2


def test_best_per_column_is_bold_ties_all_nan_never(tmp_path: Path) -> None:
    r1 = fake_run(tmp_path / "r1", {"sml": _m(0.9, 0.12341, 0.30), "max_logit": _m(0.5, 0.12344, NAN)})
    r2 = fake_run(tmp_path / "r2", {"sml": _m(0.9, 0.10, 0.20), "max_logit": _m(NAN, NAN, 0.20004)}, model="net2")
    c = compare_runs([r1, r2])
    col = c.columns[0]
    rows = {r.label: r for r in c.rows}
    assert c.best(col, "auroc") == {rows["net / sml"], rows["net2 / sml"]}      # a tie: both
    assert c.best(col, "ap") == {rows["net / sml"], rows["net / max_logit"]}    # equal at 2 decimals
    assert c.best(col, "fpr95") == {rows["net2 / sml"], rows["net2 / max_logit"]}  # min; 20.00 both
    md = c.to_markdown()
    assert "| net | sml | **90.00** | **12.34** | 30.00 |" in md
    assert "| net | max_logit | 50.00 | **12.34** | n/a |" in md
    assert "| net2 | max_logit | n/a | n/a | **20.00** |" in md
    tex = c.to_latex()
    assert r"net2 & sml & \textbf{90.00} & 10.00 & \textbf{20.00} \\" in tex
    assert r"\textbf{n/a}" not in tex and "**n/a**" not in md
    assert md.count("**") == 2 * 6 and tex.count(r"\textbf") == 6 and c.to_html().count("<strong>") == 6
    only_nan = compare_runs([fake_run(tmp_path / "r3", {"msp": _m(NAN, NAN, NAN)})])
    assert only_nan.best(only_nan.columns[0], "auroc") == set() and "**" not in only_nan.to_markdown().split("Notes")[0]


def _tex_body_lines(tex: str) -> list[str]:
    lines = tex.splitlines()
    return lines[lines.index(r"\midrule") + 1:lines.index(r"\bottomrule")]


def test_latex_is_booktabs_with_escaped_names(tmp_path: Path) -> None:
    r1 = fake_run(tmp_path / "r1", {"sml": _m(0.9, 0.1, 0.3)}, model="my_net&co 100%", dataset="road-anomaly")
    r2 = fake_run(tmp_path / "r2", {"max_logit": _m(0.8, 0.2, 0.4)}, model="other#1", dataset="fishyscapes-laf",
                  protocol="fishyscapes")
    tex = compare_runs([r1, r2]).to_latex()
    body = [ln for ln in tex.splitlines() if not ln.startswith("%")]
    assert body[0] == r"\begin{tabular}{llrrrrrr}" and body[-1] == r"\end{tabular}"
    order = [body.index(x) for x in (r"\toprule", r"\midrule", r"\bottomrule")]
    assert order == sorted(order)
    assert r"\cmidrule(lr){3-5} \cmidrule(lr){6-8}" in body
    assert r"my\_net\&co 100\% & sml & \textbf{90.00}" in tex and r"other\#1 & max\_logit" in tex
    assert r"\multicolumn{3}{c}{fishyscapes-laf (protocol fishyscapes)}" in tex and r"AUROC \%" in tex
    text = "\n".join(body)
    assert text.count("{") == text.count("}")
    for line in body[body.index(r"\toprule") + 1:body.index(r"\bottomrule")]:
        if line.startswith(r"\cmidrule") or line == r"\midrule":
            continue
        assert line.endswith(r" \\")
        cells = re.split(r"(?<!\\)&", line)   # unescaped & separate cells
        width = sum(int(m) for m in re.findall(r"\\multicolumn\{(\d+)\}", line)) + len(cells) - len(
            re.findall(r"\\multicolumn", line))
        assert width == 8, line
    # an unescaped special character would break the document
    for line in _tex_body_lines(tex):
        assert not re.search(r"(?<!\\)[%#_$]", line), line


def test_markdown_and_csv_keep_odd_names(tmp_path: Path) -> None:
    r1 = fake_run(tmp_path / "r1", {"sml": _m(0.9, 0.1, 0.3)}, model='a|b, "c"')
    c = compare_runs([r1])
    assert "| a\\|b, \"c\" | sml |" in c.to_markdown()
    (line,) = list(csv.DictReader(io.StringIO(c.to_csv())))
    assert line["network"] == 'a|b, "c"' and float(line["fpr95"]) == 0.3


# ----------------------------------------------------------------------------- files

def _links(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', page)


def test_write_html_figures_manifest(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", str(runs["a0"]), str(runs["b0"]), str(runs["a0s"]), str(runs["a1"]),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / "compare.json").read_text())
    assert manifest["written_by"] == "sml compare"
    assert {p.name for p in out.iterdir()} == {*manifest["files"], "compare.json"}
    figures = [f for f in manifest["files"] if f.endswith(".png")]
    assert len(figures) == 3  # one per data set and protocol
    page = (out / "compare.html").read_text()
    links = [x for x in _links(page) if not x.startswith("data:")]
    assert sorted(x for x in links if x.endswith(".png")) == sorted(figures)
    for link in links:
        assert not re.match(r"^[a-z]+:|^/|\.\.", link), link   # relative, inside the folder
        assert (out / link).is_file(), link
    assert "<strong>" in page and "Settings that differ" in page
    assert (out / "compare.md").read_text() in printed
    assert list(csv.DictReader((out / "compare.csv").open()))
    assert (out / "compare.tex").read_text().count(r"\toprule") == 1


def test_rewrite_replaces_only_its_own_files(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    (out).mkdir()
    (out / "notes.txt").write_text("mine")
    compare_runs([runs["a0"], runs["a0s"]]).write(out)
    first = set(json.loads((out / "compare.json").read_text())["files"])
    compare_runs([runs["a0"]]).write(out)     # one column, unlabelled: the old figures were sml's and go
    second = set(json.loads((out / "compare.json").read_text())["files"])
    gone = first - second
    assert len(gone) == 4 and all(f.startswith("compare-") for f in gone)
    assert not any((out / f).exists() for f in gone)
    assert (out / "notes.txt").read_text() == "mine"
    assert {p.name for p in out.iterdir()} == {*second, "compare.json", "notes.txt"}


def test_without_out_nothing_is_written(runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    before = {p: p.stat().st_mtime_ns for r in runs.values() for p in r.rglob("*")}
    assert main(["compare", str(runs["a0"]), str(runs["a1"])]) == 0
    assert "| tiny0 | sml |" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    assert before == {p: p.stat().st_mtime_ns for r in runs.values() for p in r.rglob("*")}


# ----------------------------------------------------------------------------- refusals (test_bad_inputs style)

def _good(tmp: Path, name: str = "run") -> Path:
    return fake_run(tmp / name, {"sml": _m(0.9, 0.1, 0.3)})


def _edit(name: str, text: str | bytes | None = None, mutate: Callable[[dict[str, Any]], Any] | None = None) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        run = _good(tmp)
        path = run / name
        if mutate is not None:
            data = json.loads(path.read_text())
            mutate(data)
            text_ = json.dumps(data)
        else:
            text_ = text
        if text_ is None:
            path.unlink()
        else:
            path.write_bytes(text_ if isinstance(text_, bytes) else text_.encode())
        return ["compare", str(run)]
    return make


def _extra(name: str, content: str = "", folder: bool = False, drop: str | None = None) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        run = _good(tmp)
        (run / name).mkdir() if folder else (run / name).write_text(content)
        if drop:
            (run / drop).unlink()
        return ["compare", str(run)]
    return make


def _out_with(name: str, content: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        run = _good(tmp)
        (tmp / "out").mkdir()
        (tmp / "out" / name).write_text(content)
        return ["compare", str(run), "--out", str(tmp / "out")]
    return make


REFUSALS: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("missing-folder", lambda tmp: ["compare", str(tmp / "nothing")], r"run directory .*nothing does not exist"),
    ("not-a-run", lambda tmp: ["compare", str((tmp / "photos").mkdir() or tmp / "photos")],
     r"photos is not a run directory of sml \(no metrics\.json\)"),
    ("interrupted", _extra(".partial", folder=True, drop="metrics.json"),
     r"run holds an interrupted run .*--resume"),
    ("locked", _extra(".sml-run.lock", "123 abc\n"), r"run is still being written by `sml eval` \(\.sml-run\.lock"),
    ("metrics-not-json", _edit("metrics.json", "{nope"), r"metrics\.json is not valid JSON.*--overwrite"),
    ("metrics-binary", _edit("metrics.json", b"\x93NUMPY\x01\x00\xff"), r"metrics\.json is not valid JSON"),
    ("metrics-a-list", _edit("metrics.json", "[1, 2]"), r"metrics\.json has no 'methods' object"),
    ("no-methods", _edit("metrics.json", mutate=lambda d: d.pop("methods")), r"metrics\.json has no 'methods'"),
    ("empty-methods", _edit("metrics.json", mutate=lambda d: d.__setitem__("methods", {})),
     r"metrics\.json holds no methods"),
    ("unknown-protocol", _edit("metrics.json", mutate=lambda d: d.__setitem__("protocol", "kaggle")),
     r"unknown protocol 'kaggle' \(this sml knows exact, "),
    ("no-dataset", _edit("metrics.json", mutate=lambda d: d.pop("dataset")), r"metrics\.json names no 'dataset'"),
    ("metric-a-string", _edit("metrics.json", mutate=lambda d: d["methods"]["sml"].__setitem__("ap", "high")),
     r"sml ap is 'high', not a fraction"),
    ("metric-a-percent", _edit("metrics.json", mutate=lambda d: d["methods"]["sml"].__setitem__("auroc", 91.2)),
     r"sml auroc is 91\.2, not a fraction in \[0, 1\]"),
    ("no-run-json", _edit("run.json"), r"run has no run\.json: it was not written by this version's `sml eval`"),
    ("foreign-run-json", _edit("run.json", '["a"]'), r"run\.json is not a run\.json of sml \(no 'files' list\)"),
    ("curves-a-list", _extra("curves.json", "[]"), r"curves\.json must hold an object of curves"),
    ("curve-lengths-differ", _extra("curves.json", '{"sml": {"roc": {"fpr": [0, 1], "tpr": [1]}}}'),
     r"curves\.json: the roc curve of 'sml' is not two equal-length lists 'fpr' and 'tpr'"),
    ("curve-not-an-object", _extra("curves.json", '{"sml": [1, 2]}'), r"the roc curve of 'sml' is not"),
    ("frames-without-ids", _extra("frames.json", '[{"image": "x.png"}]'), r"frames\.json must be a list of objects"),
    ("given-twice", lambda tmp: ["compare", str(_good(tmp)), str(tmp / "." / "run")], r"run is given twice"),
    ("out-foreign-file", _out_with("compare.md", "my notes"), r"compare\.md exists and was not written by `sml compare`"),
    ("out-foreign-manifest", _out_with("compare.json", '{"files": []}'), r"compare\.json was not written by `sml compare`"),
    ("out-manifest-escapes", _out_with("compare.json", '{"written_by": "sml compare", "files": ["../x"]}'),
     r"compare\.json was not written by `sml compare`"),
    ("out-is-a-file", lambda tmp: ["compare", str(_good(tmp)), "--out", str((tmp / "f").write_text("x") and tmp / "f")],
     r"cannot use .*f as the output folder: it is a file"),
]


@pytest.mark.parametrize("make,match", [pytest.param(m, x, id=i) for i, m, x in REFUSALS])
def test_damaged_or_foreign_input_is_refused(make: Callable[[Path], list[str]], match: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    args = make(tmp_path)
    before = {p: p.read_bytes() for p in _files(tmp_path)}
    code, err = _run_cli(args, capsys)
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("sml: error:"), err
    assert _search(match, err), f"{match!r} not in {err}"
    assert {p: p.read_bytes() for p in _files(tmp_path)} == before  # nothing written, nothing changed


def test_api_refuses_with_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no run directory given"):
        compare_runs([])
    run = _good(tmp_path)
    (run / "run.json").unlink()
    with pytest.raises(InputError, match=r"has no run\.json"):
        compare_runs([run])


# ----------------------------------------------------------------------------- the real network

@pytest.mark.slow
def test_real_erfnet_runs(shared: Path, erfnet_weights: Path, tmp_path: Path) -> None:
    ra = f"road-anomaly:{shared}/data/road_anomaly/RoadAnomaly_jpg"
    sm = f"smiyc-anomaly:{shared}/data/smiyc/dataset_AnomalyTrack"
    for name, data, extra in (("ra", ra, []), ("sm", sm, ["--protocol", "smiyc"])):
        assert main(["eval", "--model", "erfnet", "--weights", str(erfnet_weights), "--data", data, "--limit", "2",
                     "--method", "max_logit,energy", "--out", str(tmp_path / name), "--no-diagnostics", *extra]) == 0
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "ra"), str(tmp_path / "sm"), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert {(r["dataset"], r["protocol"]) for r in rows} == {("road-anomaly", "exact"), ("smiyc-anomaly", "smiyc")}
    for r in rows:
        expected = _metrics(tmp_path / r["run"])["methods"][r["method"]]
        assert float(r["auroc"]) == expected["auroc"] and math.isfinite(expected["auroc"])
        assert f"{100 * expected['ap']:.2f}" in (out / "compare.md").read_text()
    page = (out / "compare.html").read_text()
    assert len([x for x in _links(page) if x.endswith(".png") and (out / x).is_file()]) == 2
    assert "road-anomaly (protocol exact)" in page and "smiyc-anomaly (protocol smiyc)" in page


def test_other_frames_of_one_data_set_are_another_column(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path / "all", {"sml": _m(0.9, 0.1, 0.3)}, frames=("f0", "f1", "f2")),
            fake_run(tmp_path / "two", {"sml": _m(0.8, 0.1, 0.3)}, frames=("f0", "f1")),
            fake_run(tmp_path / "other", {"sml": _m(0.7, 0.1, 0.3)}, frames=("f7", "f8")),
            fake_run(tmp_path / "same", {"max_logit": _m(0.6, 0.1, 0.3)}, frames=("f1", "f0"))]
    c = compare_runs(runs)
    labels = [col.label for col in c.columns]
    assert labels[0] == "road-anomaly (3 frames)"
    assert re.fullmatch(r"road-anomaly \(2 frames #[0-9a-f]{6}\)", labels[1]) and labels[1] != labels[2]
    assert len(labels) == 3  # "same" evaluated the frames of "two": one column
    assert "frames" in c.differing
