"""sml.diagnostics: per-class counts and histograms against literal NumPy, merging, files, reading, figure."""
from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sml.diagnostics import (MAX_LOGIT_BINS, SML_BINS, ClassDiagnostics, box_numbers, diagnostics_table,
                             explain, plot_diagnostics)
from sml.errors import InputError
from sml.stats import ClassStatistics

C = 5
NAMES = ["road", "car", "person", "sky", "tree"]


def _frames(n: int = 4, h: int = 48, w: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pred = rng.integers(0, C, (h, w)).astype(np.uint8)
        ml = rng.normal(5.0, 8.0, (h, w)).astype(np.float32)
        ml[0, :5] = [-40.0, 40.0, -30.0, 30.0, 29.95]          # under/overflow and the range ends
        ml[1, :3] = MAX_LOGIT_BINS.edges[[7, 300, 599]]        # values exactly on edges
        sml = rng.normal(0.0, 6.0, (h, w)).astype(np.float32)
        sml[0, :2] = [-20.0, 15.0]
        y = (rng.random((h, w)) < 0.2).astype(np.uint8)
        y[-3:] = 255
        out.append((pred, ml, y, sml))
    return out


def _literal(frames, which: str, kind: int, cls: int) -> np.ndarray:
    """Histogram [under, bins..., over] of one (kind, class) by np.histogram on the pooled pixels."""
    bins = MAX_LOGIT_BINS if which == "max_logit" else SML_BINS
    vals = []
    for pred, ml, y, sml in frames:
        v = ml if which == "max_logit" else sml
        vals.append(v[(pred == cls) & (y == kind)].astype(np.float64))
    v = np.concatenate(vals)
    inner = v[(v >= bins.lo) & (v < bins.hi)]
    h, _ = np.histogram(inner, bins=bins.count, range=(bins.lo, bins.hi))
    return np.r_[np.count_nonzero(v < bins.lo), h, np.count_nonzero(v >= bins.hi)]


def _filled(frames, **kw) -> ClassDiagnostics:
    d = ClassDiagnostics(C, NAMES, **kw)
    for pred, ml, y, sml in frames:
        d.update_from_predictions(pred, ml, y, sml)
    return d


def test_bins_index_equals_searchsorted_on_edges():
    b = MAX_LOGIT_BINS
    rng = np.random.default_rng(1)
    e = b.edges
    x = np.r_[rng.normal(0, 20, 10000), e, np.nextafter(e, -np.inf), np.nextafter(e, np.inf), -1e30, 1e30]
    assert np.array_equal(b.index(x), np.searchsorted(e, x, side="right"))
    assert b.index(np.array([-30.0, 30.0, -30.0001, 29.999]).astype(np.float32)).tolist() == [1, 601, 0, 600]
    assert b.width == pytest.approx(0.1) and SML_BINS.width == pytest.approx(0.05)


def test_counts_and_histograms_equal_literal_numpy():
    frames = _frames()
    d = _filled(frames)
    for kind in (0, 1):
        for c in range(C):
            assert np.array_equal(d.max_logit_hist[kind, c], _literal(frames, "max_logit", kind, c))
            assert np.array_equal(d.sml_hist[kind, c], _literal(frames, "sml", kind, c))
    inl = sum(np.bincount(p[y == 0], minlength=C) for p, _, y, _ in frames)
    ano = sum(np.bincount(p[y == 1], minlength=C) for p, _, y, _ in frames)
    assert d.inlier_pixels.tolist() == inl.tolist() and d.anomaly_pixels.tolist() == ano.tolist()
    np.testing.assert_array_equal(d.anomaly_share, ano / ano.sum())
    assert d.frames == 4 and d.ignored == sum(int((y == 255).sum()) for *_, y, _ in frames)
    assert d.max_logit_hist.dtype == np.int64
    # a batch B x H x W counts the same as its frames one by one
    b = ClassDiagnostics(C, NAMES)
    b.update_from_predictions(*(np.stack([f[i] for f in frames]) for i in range(4)))
    assert np.array_equal(b.max_logit_hist, d.max_logit_hist) and b.frames == 4


def test_update_from_logits_uses_argmax_and_max():
    import torch

    rng = np.random.default_rng(3)
    logits = torch.from_numpy(rng.normal(0, 5, (2, C, 16, 20)).astype(np.float32))
    y = (rng.random((2, 16, 20)) < 0.3).astype(np.uint8)
    sml = rng.normal(size=(2, 16, 20)).astype(np.float32)
    a = ClassDiagnostics(C, NAMES).update(logits, y, sml)
    values, pred = torch.max(logits, dim=1)
    b = ClassDiagnostics(C, NAMES).update_from_predictions(pred.numpy(), values.numpy(), y, sml)
    assert np.array_equal(a.max_logit_hist, b.max_logit_hist) and np.array_equal(a.sml_hist, b.sml_hist)


def test_merge_of_halves_equals_one_pass_and_state_round_trips(tmp_path):
    frames = _frames(6)
    one = _filled(frames)
    a, b = _filled(frames[:2]), _filled(frames[2:])
    a.merge(b)
    assert np.array_equal(a.max_logit_hist, one.max_logit_hist) and np.array_equal(a.sml_hist, one.sml_hist)
    assert (a.frames, a.ignored) == (one.frames, one.ignored)
    # resume: a state_dict (plain arrays, picklable) restores the counts exactly
    state = pickle.loads(pickle.dumps(_filled(frames[:2]).state_dict()))
    assert all(isinstance(v, (np.ndarray, list, str, int, bool)) for v in state.values())
    r = ClassDiagnostics(C, NAMES).load_state_dict(state)
    for f in frames[2:]:
        r.update_from_predictions(*f)
    assert np.array_equal(r.max_logit_hist, one.max_logit_hist) and r.frames == 6
    # the JSON file rebuilds the same object
    one.save(tmp_path / "diagnostics.json")
    back = ClassDiagnostics.load(tmp_path / "diagnostics.json")
    assert np.array_equal(back.max_logit_hist, one.max_logit_hist) and np.array_equal(back.sml_hist, one.sml_hist)
    assert json.dumps(back.to_json()) == json.dumps(one.to_json())
    # resume chunks: a fresh state per save period, merged from plain state dicts
    chunks = []
    for k in range(0, len(frames), 2):
        period = ClassDiagnostics(C, NAMES)
        for f in frames[k:k + 2]:
            period.update_from_predictions(*f)
        chunks.append(pickle.loads(pickle.dumps(period.state_dict())))
    resumed = ClassDiagnostics(C, NAMES)
    for st in chunks:
        resumed.merge(st)
    assert np.array_equal(resumed.max_logit_hist, one.max_logit_hist) and resumed.frames == 6
    assert np.array_equal(resumed.sml_hist, one.sml_hist) and resumed.ignored == one.ignored
    with pytest.raises(InputError, match="merge"):
        a.merge(a)
    with pytest.raises(InputError, match="classes"):
        a.merge(ClassDiagnostics(3))


def test_box_numbers_match_numpy_quantiles_within_a_bin():
    rng = np.random.default_rng(5)
    v = rng.normal(4.0, 3.0, 50000)
    hist = np.bincount(MAX_LOGIT_BINS.index(v), minlength=MAX_LOGIT_BINS.size)
    box = box_numbers(hist, MAX_LOGIT_BINS)
    for key, q in (("p05", 0.05), ("q1", 0.25), ("median", 0.5), ("q3", 0.75), ("p95", 0.95)):
        assert abs(box[key] - np.quantile(v, q)) <= MAX_LOGIT_BINS.width
    assert box["pixels"] == 50000 and box["min"] <= v.min() and box["max"] >= v.max()
    assert abs(box["mean"] - v.mean()) < 0.01
    empty = box_numbers(np.zeros(MAX_LOGIT_BINS.size, np.int64), MAX_LOGIT_BINS)
    assert empty["pixels"] == 0 and math.isnan(empty["median"])
    over = np.zeros(MAX_LOGIT_BINS.size, np.int64)
    over[-1] = 3
    assert box_numbers(over, MAX_LOGIT_BINS)["median"] == math.inf


@pytest.mark.parametrize("kw, match", [
    ({"labels": np.full((4, 4), 2, np.uint8)}, "values other than"),
    ({"pred": np.full((4, 4), 9, np.uint8)}, "outside"),
    ({"max_logit": np.full((4, 4), np.nan, np.float32)}, "NaN"),
    ({"sml_score": None}, "pass sml_score"),
    ({"max_logit": np.zeros((4, 5), np.float32)}, "one shape"),
    ({"pred": np.zeros((4, 4), np.float32)}, "integer"),
])
def test_bad_input_is_refused(kw, match):
    args = {"pred": np.zeros((4, 4), np.uint8), "max_logit": np.zeros((4, 4), np.float32),
            "labels": np.zeros((4, 4), np.uint8), "sml_score": np.zeros((4, 4), np.float32)}
    args.update(kw)
    with pytest.raises(InputError, match=match):
        ClassDiagnostics(C, NAMES).update_from_predictions(**args)


def test_load_refuses_other_files(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"format": "something else"}')
    with pytest.raises(InputError, match="not a diagnostics file"):
        ClassDiagnostics.load(p)
    with pytest.raises(InputError, match="cannot read"):
        ClassDiagnostics.load(tmp_path / "missing.json")
    with pytest.raises(InputError, match="state"):
        ClassDiagnostics(C).load_state_dict({"max_logit_hist": np.zeros(3)})


def _person_case(anomaly_above_mean: bool, sml: bool = False) -> ClassDiagnostics:
    """Road inliers confident (max logit ~10), persons low (~3). Anomalies: 90% predicted person above the
    person mean (the Road Anomaly effect), or else 90% predicted road well below the road mean."""
    stats = ClassStatistics(C, NAMES)
    rng = np.random.default_rng(7)
    for c, mu in enumerate([10.0, 8.0, 3.0, 9.0, 7.0]):
        stats.update_from_predictions(np.full(500, c), rng.normal(mu, 1.0, 500))
    d = ClassDiagnostics(stats=stats, sml=sml)
    n = 4000
    pred = np.r_[np.zeros(n), np.full(800, 2), np.full(900, 2 if anomaly_above_mean else 0),
                 np.full(100, 1)].astype(np.uint8)
    ml = np.r_[rng.normal(10, 1, n), rng.normal(3, 1, 800),
               rng.normal(4.5 if anomaly_above_mean else 6.0, 0.5, 900), rng.normal(8, 1, 100)].astype(np.float32)
    y = np.r_[np.zeros(n + 800), np.ones(1000)].astype(np.uint8)
    score = -(ml - stats.mean[pred]) / stats.std[pred] if sml else None  # the plain standardized max logit
    return d.update_from_predictions(pred, ml, y, None if score is None else score.astype(np.float32))


def test_explain_names_the_person_effect_and_its_opposite():
    text = explain(_person_case(True))
    assert "Of the 1,000 anomaly pixels in 1 frame, 90% are predicted as person." in text
    assert "Person: the anomalies' median max logit 4.5 lies above the class's training mean 3.0" in text
    assert "look like ordinary person pixels to SML" in text
    other = explain(_person_case(False))
    assert "lies below" in other and "standardization makes them stand out" in other
    assert "AUROC" in text and "SML score separates" not in text  # no SML histograms: no SML verdict
    # with SML scores: the verdict from the binned AUROCs, and why
    text = explain(_person_case(True, sml=True))
    assert "SML trails max logit here, because anomalies taken for person are as confident" in text
    assert "SML beats max logit here" in explain(_person_case(False, sml=True))
    table = diagnostics_table(_person_case(True))
    lines = table.splitlines()
    assert lines[1].split()[0] == "person" and lines[1].split()[1] == "90.0"
    assert "no anomaly pixels" in explain(ClassDiagnostics(C, NAMES, sml=False))


def test_plot_diagnostics_writes_png_and_svg(tmp_path):
    from PIL import Image

    files = plot_diagnostics(_person_case(True), tmp_path / "diagnostics")
    assert [f.name for f in files] == ["diagnostics.png", "diagnostics.svg"]
    with Image.open(files[0]) as im:
        assert im.width > 600 and im.height > 500
    svg = files[1].read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg


def test_diagnostics_import_nothing_from_the_report():
    """diagnostics sits below report (the report draws the diagnostics section): its figures are saved
    through sml.utils.figures, never through report's (private) helpers."""
    import ast

    import sml.diagnostics

    for path in Path(sml.diagnostics.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not any(n == "sml.report" or n.startswith("sml.report.") for n in names), (path.name, names)


def test_cli_diagnose(tmp_path, capsys):
    from sml.cli.main import main

    _person_case(True).save(tmp_path / "diagnostics.json")
    assert main(["diagnose", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "person" in out and "look like ordinary person pixels" in out
    assert (tmp_path / "diagnostics.png").is_file() and (tmp_path / "diagnostics.svg").is_file()
    assert main(["diagnose", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sml: error:") and "diagnostics.json" in err
    # a diagnostics.json that the folder's run.json does not list is an earlier run's: refused
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "x", "files": []}))
    assert main(["diagnose", str(tmp_path)]) == 2
    assert "earlier run" in " ".join(capsys.readouterr().err.split())


@pytest.mark.distributed
def test_sync_with_gloo_equals_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(f"""
import pickle, sys, torch.distributed as dist
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_diagnostics import _frames, C, NAMES
from sml.diagnostics import ClassDiagnostics
r = int(sys.argv[1])
dist.init_process_group("gloo", rank=r, world_size=2, init_method="file://{tmp_path}/rdv")
d = ClassDiagnostics(C, NAMES)
for f in _frames(5)[r::2]:
    d.update_from_predictions(*f)
d.sync()
pickle.dump(d.state_dict(), open("{tmp_path}/out%d.pkl" % r, "wb"))
dist.destroy_process_group()
""")
    procs = [subprocess.Popen([sys.executable, str(script), str(r)]) for r in range(2)]
    assert all(p.wait(timeout=180) == 0 for p in procs)
    single = _filled(_frames(5)).state_dict()
    for r in range(2):
        got = pickle.loads((tmp_path / f"out{r}.pkl").read_bytes())
        for k, v in single.items():
            assert (np.array_equal(got[k], v, equal_nan=True) if isinstance(v, np.ndarray) else got[k] == v), k


def test_binned_auroc_and_share_above_mean_match_sklearn_and_numpy():
    from sklearn.metrics import roc_auc_score

    from sml.diagnostics.core import binned_auroc, count_at_or_above

    frames = _frames(3)
    d = _filled(frames)
    y = np.concatenate([f[2][f[2] != 255] for f in frames])
    ml = np.concatenate([f[1][f[2] != 255] for f in frames]).astype(np.float64)
    sm = np.concatenate([f[3][f[2] != 255] for f in frames]).astype(np.float64)
    au = d.compute()["pooled"]["binned_auroc"]
    # a pair of pixels in one bin counts half: the binned AUROC moves by at most the share of such pairs
    assert abs(au["max_logit"] - roc_auc_score(y, -ml)) < 0.01
    assert abs(au["sml"] - roc_auc_score(y, sm)) < 0.01
    assert au["max_logit"] == binned_auroc(d.max_logit_hist[0].sum(0), d.max_logit_hist[1].sum(0), False)
    v = np.random.default_rng(2).normal(3, 2, 20000)
    h = np.bincount(MAX_LOGIT_BINS.index(v), minlength=MAX_LOGIT_BINS.size)
    for t in (-1.234, 3.0, 3.05, 7.77):
        assert abs(count_at_or_above(h, MAX_LOGIT_BINS, t) - np.count_nonzero(v >= t)) < 0.02 * 20000 * 0.1 + 60
