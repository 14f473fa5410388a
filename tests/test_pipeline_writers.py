"""Output writers (datasets.md formats) and the resume store (atomic, code-free state files)."""
from __future__ import annotations

import pickle
import time
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
def test_state_round_trip_keeps_bits() -> None:
    from sml.pipelines.common import Timer

    t = Timer({"a": 0.1 + 0.2})
    obj = {"x": np.arange(5, dtype=np.float64) / 3, 3: [torch.tensor([1.0 / 3], dtype=torch.float64), (1, "a")],
           "t": t, "none": None, "nan": float("nan")}
    back = resume.loads(resume.dumps(obj))
    assert np.array_equal(back["x"], obj["x"])
    assert back[3][0].dtype == torch.float64 and back[3][0].item() == 1.0 / 3
    assert back[3][1] == (1, "a")
    assert isinstance(back["t"], Timer) and back["t"].seconds["a"] == 0.1 + 0.2
    assert np.isnan(back["nan"])


def test_state_loader_runs_no_code() -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError):
        resume.loads(pickle.dumps({"a": Evil()}))
    with pytest.raises(TypeError):
        resume.dumps({"a": Evil()})


def test_store_chunks(tmp_path: Path) -> None:
    s = resume.ResumeStore(tmp_path / "st", {"run": 1})
    assert s.start(resume=False) == []
    s.save({"n": 1})
    s.save({"n": 2})  # append-only: a new chunk, the first is kept
    s2 = resume.ResumeStore(tmp_path / "st", {"run": 1})
    assert s2.start(resume=True) == [{"n": 1}, {"n": 2}]
    s2.save({"n": 3})
    assert len(list((tmp_path / "st").glob("*.state"))) == 3
    assert [p["n"] for p in resume.ResumeStore(tmp_path / "st", {"run": 1}).start(resume=True)] == [1, 2, 3]
    with pytest.raises(InputError, match="different run"):
        resume.ResumeStore(tmp_path / "st", {"run": 2}).start(resume=True)
    s3 = resume.ResumeStore(tmp_path / "st", {"run": 2})
    assert s3.start(resume=False) == []  # a fresh start clears the old state
    assert not list((tmp_path / "st").glob("*.state"))
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
    """A metric in a resume chunk: its own pickle state (used keys only), restored bit-identically."""
    from sml.metrics import AnomalyMetrics

    rng = np.random.default_rng(1)
    m = AnomalyMetrics()
    for _ in range(3):
        m.update_frame(rng.normal(size=(40, 50)).astype(np.float32), (rng.random((40, 50)) < 0.2).astype(np.uint8))
    m._reserve(100_000)  # spare capacity that must not travel
    s = resume.ResumeStore(tmp_path / "st", {"run": 1})
    s.start(resume=False)
    s.save({"metrics": {"a": m}})
    (chunk,) = (tmp_path / "st").glob("*.state")
    assert chunk.stat().st_size < 3 * 40 * 50 * 4 + 20_000
    (back,) = resume.ResumeStore(tmp_path / "st", {"run": 1}).start(resume=True)
    r = back["metrics"]["a"]
    assert r.compute() == m.compute()
    r.update_frame(np.zeros((2, 2), np.float32), np.eye(2, dtype=np.uint8))  # restored buffer is ours to grow
    # a protocol-5 chunk with a foreign global is still refused
    with pytest.raises(pickle.UnpicklingError):
        resume.loads(pickle.dumps({"a": print}, protocol=5))


def test_score_frame_side_by_side_equals_inline() -> None:
    """Scoring the methods on worker threads gives the very maps of the one-thread path."""
    from sml.pipelines.evaluate import _Workers, build_scorers, score_frame
    from sml.stats import ClassStatistics

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 6, 37, 41, generator=g) * 3
    stats = ClassStatistics(6)
    stats.update(torch.randn(2, 6, 20, 20, generator=g) * 3)
    scorers = build_scorers(["sml", "max_logit", "msp", "entropy", "energy"], stats, {})
    one = score_frame(scorers, logits)
    inline, pred = one.maps, one.pred
    assert one.results == dict.fromkeys(scorers)
    with torch.inference_mode():
        want_pred = logits.argmax(1)
    assert torch.equal(pred.long(), want_pred)
    prev = torch.get_num_threads()
    for n in (1, 2):
        torch.set_num_threads(n)  # the worker count follows torch's thread count
        try:
            got = score_frame(scorers, logits, _Workers(5), then=lambda m, a: (m, float(a.sum())))
        finally:
            torch.set_num_threads(prev)
        par = got.maps
        assert list(par) == list(inline)
        assert got.results == {m: (m, float(inline[m].sum())) for m in inline}  # then() saw each method's map
        for m in inline:
            assert np.array_equal(par[m], inline[m]), m
            assert np.array_equal(inline[m], scorers[m](logits)[0].numpy()), m


def test_workers_run_hands_parts_to_idle_threads_and_never_waits_on_its_own_queue() -> None:
    """_Workers.run: results in order; inside a task of a busy pool the parts run inline (no deadlock)."""
    import threading

    from sml.pipelines.evaluate import _Workers

    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        w = _Workers(5)
    finally:
        torch.set_num_threads(prev)
    assert w.size == 2
    me = threading.get_ident
    # idle pool: the second part may run on a worker, the first always on the caller
    where = w.run([me, me])
    assert where[0] == me()
    # every worker busy with a task that itself splits: each task runs its parts itself
    gate = threading.Barrier(2)

    def task(i: int) -> list:
        gate.wait(timeout=10)  # both workers are inside a task now: nobody is idle
        return w.run([lambda: (i, 0, me()), lambda: (i, 1, me()), lambda: (i, 2, me())])

    got: list = []
    caller = threading.Thread(target=lambda: got.extend(w.map(task, [0, 1])), daemon=True)
    caller.start()
    caller.join(timeout=30)
    assert not caller.is_alive(), "run() waited on parts queued behind the tasks that submitted them"
    for i, parts in enumerate(got):
        assert [p[:2] for p in parts] == [(i, 0), (i, 1), (i, 2)]
    # an exception reaches the caller, and no part of the call is still running afterwards
    ran = []

    def boom() -> None:
        raise ValueError("boom")

    def slow() -> None:
        time.sleep(0.05)
        ran.append("slow")

    with pytest.raises(ValueError, match="boom"):
        w.run([boom, slow, slow])
    n = len(ran)
    time.sleep(0.1)
    assert len(ran) == n  # whatever had started had finished before run() raised
