"""`sml eval` on a tiny SMIYC-layout set: outputs, metrics vs scikit-learn, resume, errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from sml.cli.main import main
from test_pipeline_fixtures import interrupt_forward_after, make_eval_setup

METHODS = ["sml", "max_logit", "msp", "entropy", "energy"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_eval_setup(tmp_path_factory.mktemp("eval"), n=4, unlabelled=1)


def _eval(s: dict[str, Path], out: Path, *extra: str) -> int:
    return main(["eval", "--model", str(s["model"]), "--stats", str(s["stats"]), "--data",
                 f"smiyc-anomaly:{s['smiyc']}", "--out", str(out), "--method", ",".join(METHODS), *extra])


@pytest.fixture(scope="module")
def run(setup: dict[str, Path]) -> Path:
    out = setup["base"] / "run"
    assert _eval(setup, out, "--components", "--save-maps", "hdf5,fishyscapes,npy,png16",
                 "--save-maps", "npy16", "--frame-ap") == 0
    return out


def test_run_directory(run: Path, setup: dict[str, Path]) -> None:
    for name in ("metrics.json", "metrics.csv", "curves.json", "frames.json", "stats.json"):
        assert (run / name).is_file(), name
    assert not (run / ".partial").exists()
    assert not list(run.rglob("*.tmp"))
    m = json.loads((run / "metrics.json").read_text())
    assert m["dataset"] == "smiyc-anomaly" and m["frames"] == 4 and m["frames_scored"] == 5
    assert m["fpr95_convention"] == "interpolated" and m["protocol"] == "exact" and m["notes"] == []
    assert set(m["methods"]) == set(METHODS)
    for r in m["methods"].values():
        for k in ("auroc", "ap", "fpr95", "fpr95_threshold", "threshold_at_95tpr"):
            assert 0 <= r[k] <= 1 or k == "threshold_at_95tpr"
        assert set(r["components"]) >= {"siou", "ppv", "mean_f1"}
    assert m["methods"]["sml"]["settings"]["boundary_width"] == 4
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["method"] for r in rows] == METHODS and {r["protocol"] for r in rows} == {"exact"}
    assert float(rows[0]["auroc"]) == m["methods"]["sml"]["auroc"]
    # every format, every frame (including the unlabelled one), every method
    for meth in METHODS:
        for i in range(5):
            fid = f"frame{i:02d}"
            # the SegmentMeIfYouCan tool's own folder name (its persistence alias)
            with h5py.File(run / "anomaly_p" / meth / "AnomalyTrack-all" / f"{fid}.hdf5") as h5:
                assert h5["value"].dtype == np.float16 and h5["value"].shape == (48, 64)
            assert (run / "fishyscapes" / meth / f"{fid}_segmentation.npy").is_file()
            assert (run / "png16" / meth / f"{fid}.png").is_file()
            assert np.load(run / "maps" / meth / f"{fid}.npy").dtype == np.float16


def test_metrics_match_sklearn(run: Path, setup: dict[str, Path]) -> None:
    import sml.data

    ds = sml.data.open_dataset(f"smiyc-anomaly:{setup['smiyc']}")
    m = json.loads((run / "metrics.json").read_text())
    frames = {f["id"]: f for f in json.loads((run / "frames.json").read_text())}
    for meth in METHODS:
        scores, labels = [], []
        for f in ds.frames:
            if f.label_path is None:
                continue
            a = np.load(run / "npy" / meth / f"{f.id}.npy")
            lab = ds.load_labels(f)
            keep = lab != 255
            scores.append(a[keep])
            labels.append(lab[keep])
            fa = frames[f.id]["methods"][meth]
            assert fa["ap"] == pytest.approx(average_precision_score(lab[keep] == 1, a[keep]), abs=1e-9)
            thr = m["methods"][meth]["threshold_at_95tpr"]
            assert fa["fp_area"] == pytest.approx(float((a[lab == 0] >= thr).mean()), abs=1e-12)
        s, y = np.concatenate(scores), np.concatenate(labels) == 1
        r = m["methods"][meth]
        assert r["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
        assert r["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        assert r["fpr95"] == pytest.approx(float(np.interp(0.95, tpr, fpr)), abs=1e-9)
    assert m["pixels"]["anomaly"] == int(sum((ds.load_labels(f) == 1).sum() for f in ds.frames if f.label_path))


def test_deterministic_and_resumable(run: Path, setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    again = setup["base"] / "again"
    with monkeypatch.context() as m:
        interrupt_forward_after(m, 3)
        # by time, with a zero interval: a chunk after every frame
        assert _eval(setup, again, "--components", "--save-maps", "npy", "--save-interval", "0", "--frame-ap") == 130
    assert len(list((again / ".partial" / "state").glob("*.npz"))) == 3
    assert not (again / "metrics.json").exists()
    assert _eval(setup, again, "--components", "--save-maps", "npy", "--resume", "--frame-ap") == 0
    a = json.loads((run / "metrics.json").read_text())
    b = json.loads((again / "metrics.json").read_text())
    assert a["methods"] == b["methods"]
    fa = json.loads((run / "frames.json").read_text())
    fb = json.loads((again / "frames.json").read_text())
    assert fa == fb
    # the per-class diagnostics went through the resume chunks too
    assert (run / "diagnostics.json").read_bytes() == (again / "diagnostics.json").read_bytes()
    for meth in METHODS:
        for i in range(5):
            np.testing.assert_array_equal(np.load(run / "npy" / meth / f"frame{i:02d}.npy"),
                                          np.load(again / "npy" / meth / f"frame{i:02d}.npy"))


def test_table_printed(setup: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert _eval(setup, setup["base"] / "small", "--limit", "2") == 0
    out = capsys.readouterr().out
    assert "AUROC %" in out and "smiyc-anomaly: 2 labelled frames" in out
    assert not (setup["base"] / "small" / ".partial").exists()
    for meth in METHODS:
        assert meth in out
    # without --frame-ap (or --report) no frame AP is computed; the pooled numbers do not depend on it
    frames = json.loads((setup["base"] / "small" / "frames.json").read_text())
    assert all("ap" not in f["methods"][meth] for f in frames for meth in METHODS)
    assert _eval(setup, setup["base"] / "small_ap", "--limit", "2", "--frame-ap") == 0
    with_ap = json.loads((setup["base"] / "small_ap" / "frames.json").read_text())
    assert all(0 <= f["methods"][meth]["ap"] <= 1 for f in with_ap for meth in METHODS)
    assert (json.loads((setup["base"] / "small" / "metrics.json").read_text())["methods"]
            == json.loads((setup["base"] / "small_ap" / "metrics.json").read_text())["methods"])


def test_eval_errors(setup: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    base = ["eval", "--model", str(setup["model"]), "--data", f"smiyc-anomaly:{setup['smiyc']}",
            "--out", str(setup["base"] / "err")]
    assert main(base + ["--method", "sml"]) == 2
    assert "--stats" in capsys.readouterr().err
    assert main(base + ["--method", "msp,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(base + ["--method", "msp", "--save-maps", "tiff"]) == 2
    assert "tiff" in capsys.readouterr().err
    assert main(base + ["--method", "sml", "--stats", str(setup["base"] / "missing.json")]) == 2
    assert "sml stats" in capsys.readouterr().err
    assert main(base + ["--method", "sml", "--stats", str(setup["stats"]), "--boundary-width", "3"]) == 2
    assert "multiple of boundary_iterations" in " ".join(capsys.readouterr().err.split())


def test_eval_help_teaches(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    for word in ("examples:", "hdf5", "fishyscapes", "png16", "sml_min", "--resume", "torchrun", "--components"):
        assert word in text


# ---------------------------------------------------------------- refused before any work (issue 12, item 5)
def _no_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any forward pass fails the test: these cases must be refused before the model runs."""
    from sml.pipelines import common

    def forbidden(*a, **k):
        raise AssertionError("the model ran before the options were checked")

    monkeypatch.setattr(common, "forward", forbidden)


def _refused(capsys: pytest.CaptureFixture, code: int, *fragments: str) -> str:
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "sml: error:" in err and "Traceback" not in err, err
    err = err[err.index("sml: error:"):]  # progress bars of an earlier run may come first
    for f in fragments:
        assert f in err, (f, err)
    return err


@pytest.mark.parametrize("extra, fragments", [
    (["--method", "msp", "--track", "obstacle"], ["--track", "--components"]),
    (["--method", "msp", "--save-every", "0"], ["--save-every"]),
    (["--method", "msp", "--limit", "0"], ["--limit"]),
    (["--method", "msp", "--save-maps", "tiff"], ["tiff"]),
    (["--method", "sml"], ["--stats"]),
    (["--method", "msp,bogus"], ["bogus"]),
])
def test_bad_options_refused_before_the_forward_pass(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture, extra: list[str],
                                                     fragments: list[str]) -> None:
    _no_forward(monkeypatch)
    out = setup["base"] / "refused"
    code = main(["eval", "--model", str(setup["model"]), "--data", f"smiyc-anomaly:{setup['smiyc']}",
                 "--out", str(out), *extra])
    _refused(capsys, code, *fragments)
    assert not (out / "metrics.json").exists()


def test_stats_var_with_json_statistics_refused(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    _no_forward(monkeypatch)
    code = _eval(setup, setup["base"] / "sv", "--stats-var", str(setup["stats"]))
    _refused(capsys, code, "--stats-var", "leave --stats-var out")


def test_cityscapes_refused_up_front(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture) -> None:
    _no_forward(monkeypatch)
    code = main(["eval", "--model", str(setup["model"]), "--data", f"cityscapes:{setup['cs']}",
                 "--out", str(setup["base"] / "cs_eval"), "--method", "msp", "--allow-subset"])
    _refused(capsys, code, "cityscapes", "not an anomaly benchmark", "sml stats", "road-anomaly:")
    assert not (setup["base"] / "cs_eval").exists()


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (links not followed) with its content."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def test_one_run_per_folder_lock_finished_and_overwrite(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    out = setup["base"] / "once"
    assert _eval(setup, out, "--limit", "2", "--save-maps", "npy16") == 0
    manifest = json.loads((out / "run.json").read_text())
    # run.json lists every file the run wrote, and nothing else is in the folder
    assert set(manifest["files"]) == set(_tree(out)) - {"run.json"}
    assert {f"maps/{m}/frame{i:02d}.npy" for m in METHODS for i in range(2)} <= set(manifest["files"])
    assert {"metrics.json", "metrics.csv", "curves.json", "frames.json", "stats.json",
            "diagnostics.json"} <= set(manifest["files"])
    assert manifest["command"] == "eval" and manifest["format"] == "sml-run/1"
    from sml.report.rundir import run_files

    assert run_files(out) == set(manifest["files"])
    before = (out / "metrics.json").read_bytes()
    with monkeypatch.context() as m:
        _no_forward(m)
        # a finished run is kept unless --overwrite
        _refused(capsys, _eval(setup, out, "--limit", "2"), str(out), "--overwrite")
        assert (out / "metrics.json").read_bytes() == before
        # a lock of a run that is alive (here: an earlier sml's lock naming pid 1) refuses a second one
        (out / ".sml-run.lock").write_text("1 x\n")
        _refused(capsys, _eval(setup, out, "--limit", "2", "--overwrite"), "another sml command", "pid 1",
                 ".sml-run.lock")
        assert (out / "maps").is_dir()
        (out / ".sml-run.lock").unlink()
    # the user adds files of their own beside the run's
    (out / "notes.txt").write_text("mine")
    (out / "maps" / "sml" / "mine.npy").write_bytes(b"mine")
    # --overwrite removes exactly the files run.json lists: no map of run 1 survives beside run 2's,
    # the user's files do
    assert _eval(setup, out, "--limit", "1", "--overwrite", "--method", "msp") == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "maps" / "sml" / "mine.npy").read_bytes() == b"mine"
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["sml"]   # the emptied folders are gone
    assert not (out / ".sml-run.lock").exists()
    second = json.loads((out / "run.json").read_text())
    assert second["run_id"] != manifest["run_id"]
    assert set(second["files"]) == set(_tree(out)) - {"run.json", "notes.txt", "maps/sml/mine.npy"}


def test_overwrite_never_deletes_through_a_symlink(setup: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert _eval(setup, out, "--limit", "1", "--method", "msp", "--save-maps", "npy16") == 0
    # maps/ replaced by a link to a folder elsewhere holding files of the same names
    elsewhere = tmp_path / "elsewhere"
    (out / "maps").rename(elsewhere)
    (out / "maps").symlink_to(elsewhere, target_is_directory=True)
    before, kept = _tree(out), _tree(elsewhere)
    with monkeypatch.context() as m:
        _no_forward(m)
        _refused(capsys, _eval(setup, out, "--limit", "1", "--method", "msp", "--overwrite"),
                 str(out / "maps"), "symbolic link", "nothing was changed")
    assert _tree(out) == before and _tree(elsewhere) == kept and (out / "maps").is_symlink()
    # a report into a linked report/ folder is refused too, and writes nothing through the link
    (out / "maps").unlink()
    elsewhere.rename(out / "maps")
    (tmp_path / "other_report").mkdir()
    (out / "report").symlink_to(tmp_path / "other_report", target_is_directory=True)
    _refused(capsys, main(["report", str(out)]), str(out / "report"), "symbolic link")
    assert not list((tmp_path / "other_report").iterdir())


def test_a_run_killed_with_sigkill_resumes(setup: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    """The documented recovery after kill -9 (the same command with --resume) works: the stale lock is taken over."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out, marker = tmp_path / "killed", tmp_path / "stuck"
    args = ["eval", "--model", str(setup["model"]), "--stats", str(setup["stats"]), "--data",
            f"smiyc-anomaly:{setup['smiyc']}", "--out", str(out), "--method", "sml,msp", "--save-every", "1"]
    script = (  # a run that hangs in its third forward pass, after two frames were saved
        "import sys, time\n"
        "from sml.pipelines import common\n"
        "real, n = common.forward, [0]\n"
        "def forward(*a, **k):\n"
        "    n[0] += 1\n"
        "    if n[0] > 2:\n"
        f"        open({str(marker)!r}, 'w').close()\n"
        "        time.sleep(600)\n"
        "    return real(*a, **k)\n"
        "common.forward = forward\n"
        "from sml.cli.main import main\n"
        f"sys.exit(main({args!r}))\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not get to its third frame"
            time.sleep(0.2)
        # while it runs, a second command into the folder is refused, naming the live process
        _refused(capsys, main([*args, "--resume"]), "another sml command", f"pid {proc.pid}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / ".sml-run.lock").is_file() and len(list((out / ".partial" / "state").glob("*.npz"))) == 2
    assert main([*args, "--resume"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "took over" in err and f"pid {proc.pid}" in err and err.count("took over") == 1
    # the same numbers as a run that was never interrupted
    assert main([*args[:-4], "--out", str(tmp_path / "whole"), "--method", "sml,msp"]) == 0
    got = json.loads((out / "metrics.json").read_text())["methods"]
    want = json.loads((tmp_path / "whole" / "metrics.json").read_text())["methods"]
    assert {m: got[m]["auroc"] for m in got} == {m: want[m]["auroc"] for m in want}
    assert not (out / ".sml-run.lock").exists() and not (out / ".partial").exists()
    assert set(json.loads((out / "run.json").read_text())["files"]) == set(_tree(out)) - {"run.json"}


def test_interrupted_run_leaves_no_metrics_and_no_lock(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    out = setup["base"] / "cut"
    with monkeypatch.context() as m:
        interrupt_forward_after(m, 1)
        assert _eval(setup, out, "--save-every", "1") == 130
    assert "--resume" in capsys.readouterr().err
    assert not (out / "metrics.json").exists() and not (out / ".sml-run.lock").exists()
    # a damaged chunk is refused, naming the file and the recovery
    (chunk,) = (out / ".partial" / "state").glob("*.npz")
    chunk.write_bytes(chunk.read_bytes()[:100])
    _refused(capsys, _eval(setup, out, "--resume"), chunk.name, "delete that file")


def test_unwritable_output_is_one_message(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    _no_forward(monkeypatch)
    blocker = setup["base"] / "a_file"
    blocker.write_text("x")
    _refused(capsys, _eval(setup, blocker, "--method", "msp"), str(blocker), "is a file")
    _refused(capsys, _eval(setup, blocker / "sub", "--method", "msp"), str(blocker))


def test_smiyc_protocol_resumes_and_equals_the_binned_metric(run: Path, setup: dict[str, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from sml.protocols import SmiycPixelMetric, headline
    import sml.data

    out = setup["base"] / "smiyc_protocol"
    with monkeypatch.context() as m:
        interrupt_forward_after(m, 2)
        assert _eval(setup, out, "--protocol", "smiyc", "--components", "--save-interval", "0") == 130
    # a resume under another protocol is refused: its chunks hold another state
    assert _eval(setup, out, "--protocol", "exact", "--components", "--resume") == 2
    assert _eval(setup, out, "--protocol", "smiyc", "--components", "--resume") == 0
    got = json.loads((out / "metrics.json").read_text())
    assert got["protocol"] == "smiyc" and got["fpr95_convention"] == "threshold" and got["notes"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {r["protocol"] for r in rows} == {"smiyc"}
    # the same numbers as the binned metric fed directly with the exact run's float32 maps
    ds = sml.data.open_dataset(f"smiyc-anomaly:{setup['smiyc']}")
    for meth in METHODS:
        ref = SmiycPixelMetric()
        for f in ds.frames:
            if f.label_path is not None:
                ref.update(np.load(run / "npy" / meth / f"{f.id}.npy"), ds.load_labels(f))
        want = headline("smiyc", ref.compute())
        for k in ("auroc", "ap", "fpr95", "threshold_at_95tpr", "best_f1_threshold"):
            assert got["methods"][meth][k] == pytest.approx(want[k], abs=1e-12), (meth, k)
        assert got["methods"][meth]["components"]["threshold"] == ref.best_f1_threshold()


def test_report_protocol_must_match_the_run(run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(run), "--protocol", "smiyc", "--max-frames", "0"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--protocol exact" in err and "sml eval ... --protocol smiyc" in err
    assert not (run / "report").exists()


def test_eval_then_export_smiyc(setup: dict[str, Path], tmp_path: Path) -> None:
    """What `sml eval --save-maps hdf5` writes is what `sml export smiyc` packs, under the tool's names."""
    import zipfile

    from PIL import Image

    from sml.data.releases import ANOMALY_SPLITS

    data = tmp_path / "dataset_AnomalyTrack"
    (data / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for fid in ANOMALY_SPLITS["all"]:  # the release's 110 published names, tiny images
        Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(data / "images" / f"{fid}.jpg")
    out = tmp_path / "run"
    assert main(["eval", "--model", str(setup["model"]), "--data", f"smiyc-anomaly:{data}", "--split", "all",
                 "--method", "max_logit", "--save-maps", "hdf5", "--out", str(out)]) == 0
    assert main(["export", "smiyc", str(out), str(tmp_path / "sub.zip")]) == 0
    with zipfile.ZipFile(tmp_path / "sub.zip") as z:
        names = set(z.namelist())
    assert names == {f"anomaly_p/max_logit/AnomalyTrack-all/{fid}.hdf5" for fid in ANOMALY_SPLITS["all"]}


def test_reference_npy_statistics_are_kept_as_stats_json(setup: dict[str, Path], tmp_path: Path) -> None:
    """Statistics given as the reference code's .npy pair land in the run as stats.json, which `sml report`
    reads (they were once copied byte for byte, so the run's stats.json held a NumPy pickle)."""
    from sml.report.rundir import load_run
    from sml.stats import ClassStatistics

    ref = ClassStatistics.load(setup["stats"])
    mean, var = tmp_path / "m.npy", tmp_path / "v.npy"
    m, v = np.nan_to_num(np.asarray(ref.mean), nan=1.0), np.nan_to_num(np.asarray(ref.var), nan=1.0)  # empty classes
    np.save(mean, {i: float(x) for i, x in enumerate(m)}, allow_pickle=True)
    np.save(var, {i: float(x) for i, x in enumerate(v)}, allow_pickle=True)
    out = tmp_path / "run"
    assert main(["eval", "--model", str(setup["model"]), "--stats", str(mean), "--stats-var", str(var),
                 "--stats-from-other-network", "--data", f"smiyc-anomaly:{setup['smiyc']}", "--out", str(out),
                 "--method", "sml", "--limit", "2"]) == 0
    kept = json.loads((out / "stats.json").read_text())
    assert kept["mean"] == pytest.approx(list(m)) and kept["num_classes"] == ref.num_classes
    assert load_run(out).stats is not None
