"""Output writers (datasets.md formats) and the resume store (atomic, code-free state files)."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from sml.errors import InputError
from sml.pipelines import resume, writers


@pytest.fixture
def amap() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(20, 30)).astype(np.float32) * 3


def test_hdf5_smiyc_layout(tmp_path: Path, amap: np.ndarray) -> None:
    p = writers.write_map(tmp_path, "hdf5", "sml", "smiyc-anomaly", "validation0001", amap)
    assert p == tmp_path / "anomaly_p" / "sml" / "smiyc-anomaly" / "validation0001.hdf5"
    with h5py.File(p) as h5:
        v = h5["value"]
        assert v.dtype == np.float16 and v.compression == "gzip"
        np.testing.assert_array_equal(v[()], amap.astype(np.float16))


def test_fishyscapes_pair(tmp_path: Path, amap: np.ndarray) -> None:
    pred = np.random.default_rng(1).integers(0, 19, size=amap.shape)
    p = writers.write_map(tmp_path, "fishyscapes", "msp", "fishyscapes-laf", "f_0", amap, pred)
    assert p.name == "f_0_anomaly.npy"
    a = np.load(p)
    s = np.load(p.with_name("f_0_segmentation.npy"))
    assert a.dtype == np.float32 and np.array_equal(a, amap)
    assert s.dtype == np.uint8 and np.array_equal(s, pred)


def test_npy_and_npy16(tmp_path: Path, amap: np.ndarray) -> None:
    p = writers.write_map(tmp_path, "npy", "energy", "x", "a", amap)
    assert np.load(p).dtype == np.float32 and np.array_equal(np.load(p), amap)
    p16 = writers.write_map(tmp_path, "npy16", "energy", "x", "a", amap)
    assert p16 == tmp_path / "maps" / "energy" / "a.npy"
    assert np.load(p16).dtype == np.float16


def test_png16_round_trip(tmp_path: Path, amap: np.ndarray) -> None:
    p = writers.write_map(tmp_path, "png16", "sml", "x", "a", amap)
    back = writers.read_png16(p)
    span = amap.max() - amap.min()
    assert np.abs(back - amap).max() <= span / 65535 * 0.51 + 1e-6
    # order within the frame is kept
    assert back.argmax() == amap.argmax() and back.argmin() == amap.argmin()


def test_png16_constant_map(tmp_path: Path) -> None:
    p = writers.write_map(tmp_path, "png16", "sml", "x", "c", np.full((4, 5), 2.5, np.float32))
    assert np.allclose(writers.read_png16(p), 2.5)


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--save-maps"):
        writers.parse_formats(["hdf5,jpeg"])
    assert writers.parse_formats(["hdf5,npy", "hdf5"]) == ["hdf5", "npy"]
    with pytest.raises(InputError, match="H x W"):
        writers.write_map(tmp_path, "npy", "m", "d", "f", np.zeros((1, 2, 3)))
    assert writers.safe_name("a/b c") == "a_b_c"


def test_no_partial_file_after_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, amap: np.ndarray) -> None:
    def boom(*a, **k):  # the write dies half-way
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError):
        writers.write_map(tmp_path, "npy", "m", "d", "f", amap)
    assert not list(tmp_path.rglob("*.npy")) and not list(tmp_path.rglob("*.tmp"))


# ---------------------------------------------------------------- resume state
def test_chunk_round_trip_keeps_bits(tmp_path: Path) -> None:
    obj = {"x": np.arange(5, dtype=np.float64) / 3, "k": [np.array([1, -2], np.int32), [1, "a"]],
           "none": None, "nan": float("nan"), "nested": {"y": np.zeros((2, 3), np.uint8)}}
    resume.write_chunk(tmp_path / "c.npz", obj)
    back = resume.read_chunk(tmp_path / "c.npz")
    assert np.array_equal(back["x"], obj["x"]) and back["x"].dtype == np.float64
    assert back["k"][0].dtype == np.int32 and back["k"][1] == [1, "a"]
    assert back["nested"]["y"].shape == (2, 3) and back["none"] is None and np.isnan(back["nan"])


def test_chunk_holds_no_objects_and_loads_without_pickle(tmp_path: Path) -> None:
    """Objects cannot be written; a chunk holding a pickled object array is refused as damaged, naming it."""
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(TypeError):
        resume.write_chunk(tmp_path / "a.npz", {"a": Evil()})
    with pytest.raises(TypeError):
        resume.write_chunk(tmp_path / "a.npz", {"a": np.array([Evil()], dtype=object)})
    np.savez(tmp_path / "evil.npz", __json__=np.frombuffer(b'{"a": {"__array__": "o"}}', np.uint8),
             o=np.array([Evil()], dtype=object))
    with pytest.raises(InputError, match="evil.npz is damaged.*delete that file"):
        resume.read_chunk(tmp_path / "evil.npz")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_json"])
def test_damaged_chunk_is_refused_naming_the_file_and_the_recovery(tmp_path: Path, damage: str) -> None:
    s = resume.ResumeStore(tmp_path / "st", {"run": 1})
    s.start(resume=False)
    s.save({"n": 1, "a": np.arange(1000)})
    (chunk,) = (tmp_path / "st").glob("*.npz")
    if damage == "truncate":
        chunk.write_bytes(chunk.read_bytes()[:200])
    elif damage == "garbage":
        chunk.write_bytes(b"not a zip file at all")
    else:
        np.savez(chunk, a=np.arange(3))
    with pytest.raises(InputError, match=f"{chunk.name} is damaged.*--resume"):
        resume.ResumeStore(tmp_path / "st", {"run": 1}).start(resume=True)


def test_store_chunks(tmp_path: Path) -> None:
    s = resume.ResumeStore(tmp_path / "st", {"run": 1})
    assert s.start(resume=False) == []
    s.save({"n": 1})
    s.save({"n": 2})  # append-only: a new chunk, the first is kept
    s2 = resume.ResumeStore(tmp_path / "st", {"run": 1})
    assert s2.start(resume=True) == [{"n": 1}, {"n": 2}]
    s2.save({"n": 3})
    assert len(list((tmp_path / "st").glob("*.npz"))) == 3
    assert [p["n"] for p in resume.ResumeStore(tmp_path / "st", {"run": 1}).start(resume=True)] == [1, 2, 3]
    with pytest.raises(InputError, match="different run"):
        resume.ResumeStore(tmp_path / "st", {"run": 2}).start(resume=True)
    s3 = resume.ResumeStore(tmp_path / "st", {"run": 2})
    assert s3.start(resume=False) == []  # a fresh start clears the old state
    assert not list((tmp_path / "st").glob("*.npz"))
    s3.clear()
    assert not (tmp_path / "st").exists()


def test_save_policy_by_frames_or_time(monkeypatch: pytest.MonkeyPatch) -> None:
    now = {"t": 1000.0}
    monkeypatch.setattr(resume.time, "monotonic", lambda: now["t"])
    every = resume.SavePolicy(every=3, interval=0.0)  # a frame count wins over the interval
    assert [n for n in range(1, 10) if every.due(n)] == [3, 6, 9]
    timed = resume.SavePolicy(interval=60.0)
    assert not timed.due(1)
    now["t"] += 59.9
    assert not timed.due(2)
    now["t"] += 0.2
    assert timed.due(3)
    timed.saved()  # the interval restarts at the save
    now["t"] += 30
    assert not timed.due(4)
    for bad in ({"every": 0}, {"interval": -1.0}, {"interval": float("nan")}):
        with pytest.raises(InputError):
            resume.SavePolicy(**bad)


def test_state_keeps_a_metric_exactly_and_sends_only_its_used_keys(tmp_path: Path) -> None:
    """A metric's state_dict() in a resume chunk: used keys only, restored bit-identically and growable."""
    from sml.metrics import AnomalyMetrics

    rng = np.random.default_rng(1)
    m = AnomalyMetrics()
    for _ in range(3):
        m.update(rng.normal(size=(40, 50)).astype(np.float32), (rng.random((40, 50)) < 0.2).astype(np.uint8))
    m._reserve(100_000)  # spare capacity that must not travel
    s = resume.ResumeStore(tmp_path / "st", {"run": 1})
    s.start(resume=False)
    s.save({"metrics": {"a": m.state_dict()}})
    (chunk,) = (tmp_path / "st").glob("*.npz")
    assert chunk.stat().st_size < 3 * 40 * 50 * 4 + 20_000
    (back,) = resume.ResumeStore(tmp_path / "st", {"run": 1}).start(resume=True)
    r = AnomalyMetrics.from_state_dict(back["metrics"]["a"])
    assert r.compute() == m.compute()
    r.update(np.zeros((2, 2), np.float32), np.eye(2, dtype=np.uint8))  # restored buffer is ours to grow


def test_score_frame_equals_each_scorer() -> None:
    """The shared LogitContext gives every method the very map of its own scorer, and the argmax."""
    from sml.pipelines.evaluate import build_scorers, score_frame
    from sml.stats import ClassStatistics

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 6, 37, 41, generator=g) * 3
    stats = ClassStatistics(6)
    stats.update(torch.randn(2, 6, 20, 20, generator=g) * 3)
    scorers = build_scorers(["sml", "max_logit", "msp", "entropy", "energy"], stats, {})
    got = score_frame(scorers, logits)
    assert list(got.maps) == list(scorers)
    assert torch.equal(got.pred.long(), logits.argmax(1))
    for m, sc in scorers.items():
        assert np.array_equal(got.maps[m], sc(logits)[0].numpy()), m


def test_damaged_kept_map_names_the_file(tmp_path: Path) -> None:
    from sml.pipelines.threshold_metrics import load_map

    good = tmp_path / "good.npy"
    np.save(good, np.ones((2, 3), np.float16))
    assert load_map(good).dtype == np.float32
    bad = tmp_path / "bad.npy"
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(InputError, match="bad.npy is missing or damaged.*--overwrite"):
        load_map(bad)
    with pytest.raises(InputError, match="gone.npy is missing"):
        load_map(tmp_path / "gone.npy")


# ---------------------------------------------------------------- writers inside a run folder (issue 19)
def test_writers_in_a_run_folder_record_every_file_and_replace_only_their_own(tmp_path: Path,
                                                                               amap: np.ndarray) -> None:
    import json

    from sml.errors import OutputError
    from sml.utils.run_folder import RunFolder, listing

    out = tmp_path / "run"
    with RunFolder(out, "predict"):
        for fmt in writers.FORMATS:
            writers.write_map(out, fmt, "sml", "set", "f0", amap, np.zeros(amap.shape, np.uint8))
        # a journal lists each name before its bytes are written: a killed run's files are known
        assert listing(out) == {f.relative_to(out).as_posix() for fmt in writers.FORMATS
                                for f in writers.map_files(out, fmt, "sml", "set", "f0")}
        writers.write_map(out, "npy", "sml", "set", "f0", amap * 2)   # its own file: replaced
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert set(json.loads((out / "run.json").read_text())["files"]) == files - {"run.json"}
    assert not any(p.name.endswith((".tmp", ".journal", ".lock")) for p in out.rglob("*"))
    np.testing.assert_array_equal(np.load(out / "npy" / "sml" / "f0.npy"), amap * 2)

    # a file of the user's in the folder is never replaced; a linked folder is never written through
    (out / "npy" / "sml" / "mine.npy").write_bytes(b"mine")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "png16").rename(tmp_path / "old_png16")
    (out / "png16").symlink_to(elsewhere, target_is_directory=True)
    with RunFolder(out, "predict"):
        with pytest.raises(OutputError, match=r"mine\.npy: a file sml did not write is there"):
            writers.write_map(out, "npy", "sml", "set", "mine", amap)
        with pytest.raises(OutputError, match=r"run/png16 is a symbolic link"):
            writers.write_map(out, "png16", "sml", "set", "f1", amap)
    assert (out / "npy" / "sml" / "mine.npy").read_bytes() == b"mine" and not list(elsewhere.iterdir())
    assert "npy/sml/mine.npy" not in json.loads((out / "run.json").read_text())["files"]


def test_a_live_lock_refuses_a_second_command_and_a_killed_ones_is_taken_over(tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys

    from sml.utils.run_folder import LOCK, RunFolder

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom sml.utils.run_folder import RunFolder\n"
         f"with RunFolder({str(out)!r}, 'predict'):\n    print('held', flush=True)\n    time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    try:
        assert holder.stdout.readline().strip() == "held"
        record = json.loads((out / LOCK).read_text())
        assert record["pid"] == holder.pid and record["host"] and record["started"]
        with pytest.raises(InputError, match=rf"another sml command \(pid {holder.pid} on "):
            RunFolder(out, "predict").check()
        with pytest.raises(InputError, match=rf"pid {holder.pid}"):
            with RunFolder(out, "predict"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK).is_file()   # left behind by kill -9
    with RunFolder(out, "predict") as folder:
        assert folder.took_over is not None and folder.took_over["pid"] == holder.pid
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("took over") == 1 and f"pid {holder.pid}" in err
    assert not (out / LOCK).exists()
