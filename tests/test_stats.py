"""ClassStatistics (spec 2) against float64 NumPy two-pass results; files; the safe .npy reader."""
from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import sml
from sml.errors import InputError
from sml.stats import ClassStatistics


def _two_pass(logits: np.ndarray, c: int, valid: np.ndarray | None = None):
    """float64 NumPy two-pass per-class count / mean / unbiased var over argmax predictions."""
    x = logits.astype(np.float64)
    pred, val = x.argmax(1).ravel(), x.max(1).ravel()
    if valid is not None:
        pred, val = pred[valid.ravel()], val[valid.ravel()]
    n = np.array([(pred == k).sum() for k in range(c)], float)
    mean = np.array([val[pred == k].mean() if n[k] else np.nan for k in range(c)])
    var = np.array([val[pred == k].var(ddof=1) if n[k] > 1 else np.nan for k in range(c)])
    return n, mean, var


def _data(seed=0, b=12, c=6, h=7, w=9):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b, c, h, w)).astype(np.float32) * 2 + 5
    x[:, 3] -= 4  # a rare class
    x[:, 5] = -100  # a class never predicted
    return x


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10 ** 6), data=st.data())
def test_streaming_equals_two_pass_for_any_split_and_order(seed, data):
    x = _data(seed % 7)
    c = x.shape[1]
    n, mean, var = _two_pass(x, c)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(x) - 1), max_size=6)))
    parts = np.split(x, cuts)
    order = data.draw(st.permutations(range(len(parts))))
    # one object streaming the batches in the drawn order
    s1 = ClassStatistics(c)
    for i in order:
        s1.update(torch.from_numpy(parts[i]))
    # partial objects merged in another order (as workers would)
    partials = [ClassStatistics(c).update(torch.from_numpy(p)) for p in parts]
    s2 = ClassStatistics(c)
    for i in reversed(order):
        s2.merge(partials[i])
    for s in (s1, s2):
        np.testing.assert_array_equal(s.count, n)
        np.testing.assert_allclose(s.mean, mean, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(s.var, var, rtol=1e-10, equal_nan=True)
        np.testing.assert_allclose(s.std, np.sqrt(var), rtol=1e-10, equal_nan=True)
    assert s1.usable.tolist() == [bool(k >= 2) and bool(np.isfinite(v)) and v > 0 for k, v in zip(n, var)]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10 ** 6), data=st.data())
def test_device_path_equals_float64_numpy(seed, data):
    """The path for CUDA tensors (per-class float64 index_add on the device, Chan merge), run on the CPU:
    same counts, mean and variance as float64 NumPy two-pass, with and without a valid mask."""
    import sml.stats.class_stats as cs

    x = _data(seed % 7)
    c = x.shape[1]
    masked = data.draw(st.booleans())
    valid = np.random.default_rng(seed).random((x.shape[0], x.shape[2], x.shape[3])) < 0.7 if masked else None
    n, mean, var = _two_pass(x, c, valid)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(x) - 1), max_size=4)))
    host = ClassStatistics(c)
    from unittest import mock

    # the device path must not fall back to the host one
    with mock.patch.object(cs, "_sum_on_host", lambda device: False), mock.patch.object(cs, "_host_moments", None):
        dev = ClassStatistics(c)
        for a, b in zip([0, *cuts], [*cuts, len(x)]):
            dev.update(torch.from_numpy(x[a:b]), None if valid is None else torch.from_numpy(valid[a:b]))
    for a, b in zip([0, *cuts], [*cuts, len(x)]):
        host.update(torch.from_numpy(x[a:b]), None if valid is None else torch.from_numpy(valid[a:b]))
    np.testing.assert_array_equal(dev.count, n)
    np.testing.assert_allclose(dev.mean, mean, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(dev.var, var, rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(dev.m2, host.m2, rtol=1e-11, atol=1e-12)


def test_device_moments_move_only_class_vectors(monkeypatch):
    """Nothing of the frame comes to the host: only the 3 x C moments (one transfer)."""
    import sml.stats.class_stats as cs

    pred = torch.randint(0, 4, (2, 30, 40), dtype=torch.uint8)
    values = torch.randn(2, 30, 40)
    sizes = []
    numpy = torch.Tensor.numpy

    def spy(t, *a, **k):
        sizes.append(t.numel())
        return numpy(t, *a, **k)
    monkeypatch.setattr(torch.Tensor, "numpy", spy)
    moments = cs._device_moments(pred, values, pred > 0, 4)
    assert sizes == [3 * 4] and all(m.shape == (4,) for m in moments)


def test_same_partials_same_order_are_bit_identical_and_batching_independent():
    x = _data(1)
    frames = [ClassStatistics(6).update(torch.from_numpy(f[None])) for f in x]
    a, b = ClassStatistics(6), ClassStatistics(6)
    for f in frames:
        a.merge(f)
    for f in frames:
        b.merge(ClassStatistics.from_dict(json.loads(json.dumps(f.to_dict()))))
    for attr in ("count", "mean", "var", "m2"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
    whole = ClassStatistics(6).update(torch.from_numpy(x))
    np.testing.assert_allclose(whole.mean, a.mean, rtol=1e-13, equal_nan=True)
    np.testing.assert_allclose(whole.var, a.var, rtol=1e-11, equal_nan=True)
    # merging into / from an empty object is exact
    e = ClassStatistics(6).merge(frames[0])
    np.testing.assert_array_equal(e.m2, frames[0].m2)
    np.testing.assert_array_equal(frames[0].copy().merge(ClassStatistics(6)).mean, frames[0].mean)


def test_valid_mask_and_predictions_entry_point():
    x = _data(2)
    rng = np.random.default_rng(0)
    valid = rng.random((x.shape[0], x.shape[2], x.shape[3])) > 0.3
    n, mean, var = _two_pass(x, 6, valid)
    s = ClassStatistics(6).update(torch.from_numpy(x), valid=torch.from_numpy(valid))
    np.testing.assert_array_equal(s.count, n)
    np.testing.assert_allclose(s.var, var, rtol=1e-10, equal_nan=True)
    v, p = torch.max(torch.from_numpy(x), 1)
    s2 = ClassStatistics(6).update_from_predictions(p, v, valid=torch.from_numpy(valid))
    np.testing.assert_array_equal(s2.m2, s.m2)
    s3 = ClassStatistics(6).update_from_predictions(p.numpy(), v.numpy())  # NumPy works too
    np.testing.assert_array_equal(s3.count, _two_pass(x, 6)[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_update_dtypes(dtype):
    x = torch.from_numpy(_data(3)).to(dtype)
    s = ClassStatistics(6).update(x)
    n, mean, var = _two_pass(x.double().numpy(), 6)
    np.testing.assert_array_equal(s.count, n)
    np.testing.assert_allclose(s.var, var, rtol=1e-10, equal_nan=True)


def test_invalid_updates():
    s = ClassStatistics(6)
    with pytest.raises(InputError, match="7 classes.*6"):
        s.update(torch.randn(1, 7, 2, 2))
    x = torch.randn(1, 6, 2, 2)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        s.update(x)
    with pytest.raises(InputError, match="outside"):
        s.update_from_predictions(torch.tensor([6]), torch.tensor([1.0]))
    with pytest.raises(InputError, match="bool mask"):
        s.update(torch.randn(1, 6, 2, 2), valid=torch.ones(1, 2, 3, dtype=torch.bool))
    with pytest.raises(InputError, match="merge statistics of 5"):
        s.merge(ClassStatistics(5))
    with pytest.raises(InputError, match="class_names"):
        ClassStatistics(3, ["a"])
    assert s.total == 0


def test_save_load_roundtrip_is_exact_and_readable(tmp_path):
    s = ClassStatistics(6, [f"c{i}" for i in range(6)], model="erfnet", data="cityscapes:/x")
    s.update(torch.from_numpy(_data(4)))
    path = tmp_path / "stats.json"
    s.save(path)
    d = json.loads(path.read_text())
    for key in ("num_classes", "class_names", "count", "mean", "var", "model", "data", "created", "m2"):
        assert key in d
    assert d["count"][5] == 0 and d["mean"][5] is None and d["usable"][5] is False
    assert "NaN" not in path.read_text()  # strict JSON
    t = ClassStatistics.load(path)
    for attr in ("count", "mean", "var", "m2", "usable"):
        np.testing.assert_array_equal(getattr(t, attr), getattr(s, attr))
    assert (t.model, t.data, t.class_names, t.created) == (s.model, s.data, s.class_names, s.created)
    # resuming: merging the reloaded object equals merging the original
    more = ClassStatistics(6).update(torch.from_numpy(_data(5)))
    np.testing.assert_array_equal(t.merge(more).m2, s.merge(more).m2)
    # files without m2 are accepted (m2 rebuilt from var)
    del d["m2"]
    np.testing.assert_allclose(ClassStatistics.from_dict(d).var, ClassStatistics.from_dict(json.loads(
        path.read_text())).var, rtol=1e-12, equal_nan=True)


def test_load_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        ClassStatistics.load(bad)
    bad.write_text(json.dumps({"num_classes": 2, "count": [1, 2]}))
    with pytest.raises(InputError, match="missing key.*mean"):
        ClassStatistics.load(bad)
    bad.write_text(json.dumps({"num_classes": 2, "count": [1], "mean": [0, 0], "var": [1, 1]}))
    with pytest.raises(InputError, match="count"):
        ClassStatistics.load(bad)
    with pytest.raises(InputError, match="cannot read"):
        ClassStatistics.load(tmp_path / "missing.json")


def test_pooled_fallback_matches_all_pixels():
    x = _data(6)
    s = ClassStatistics(6).update(torch.from_numpy(x))
    assert not s.usable[5]
    allv = x.astype(np.float64).max(1).ravel()
    pm, ps = s.pooled()
    assert pm == pytest.approx(allv.mean(), rel=1e-12) and ps == pytest.approx(allv.std(ddof=1), rel=1e-10)
    mean, std = s.scoring_tensors()
    assert mean.dtype == torch.float64 and float(mean[5]) == pytest.approx(pm) and float(std[5]) == pytest.approx(ps)
    assert s.unusable_classes() == ["class_5"]


def test_reference_files(shared):
    ref = shared / "reference"
    s = sml.ClassStatistics.from_reference_npy(ref / "cityscapes_mean.npy", ref / "cityscapes_var.npy")
    # the shared files are trusted: NumPy's own pickle loading is the independent reference
    mean = np.load(ref / "cityscapes_mean.npy", allow_pickle=True).item()
    var = np.load(ref / "cityscapes_var.npy", allow_pickle=True).item()
    assert s.num_classes == 19 and s.class_names[0] == "road" and s.usable.all() and not s.has_counts
    np.testing.assert_array_equal(s.mean, [mean[i] for i in range(19)])
    np.testing.assert_array_equal(s.var, [var[i] for i in range(19)])
    np.testing.assert_array_equal(s.std, np.sqrt([var[i] for i in range(19)]))
    with pytest.raises(InputError, match="no pixel"):
        s.merge(ClassStatistics(19))
    d = s.to_dict()
    t = ClassStatistics.from_dict(json.loads(json.dumps(d)))
    np.testing.assert_array_equal(t.var, s.var)
    assert not t.has_counts


def _npy_with_payload(path, payload: bytes) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    path.write_bytes(buf.getvalue() + payload)


def test_malicious_npy_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil_mean.npy"
    arr = np.empty((), dtype=object)
    arr[()] = {0: Evil()}
    np.save(evil, arr, allow_pickle=True)
    good = tmp_path / "var.npy"
    arr2 = np.empty((), dtype=object)
    arr2[()] = {0: 1.0}
    np.save(good, arr2, allow_pickle=True)
    with pytest.raises(InputError, match="refusing.*open.*not allowed"):
        ClassStatistics.from_reference_npy(evil, good)
    assert not marker.exists()
    # the same pickle also hidden directly in the payload
    _npy_with_payload(tmp_path / "raw.npy", pickle.dumps(Evil(), protocol=2))
    with pytest.raises(InputError, match="refusing"):
        ClassStatistics.from_reference_npy(tmp_path / "raw.npy", good)
    assert not marker.exists()
    # positive control: NumPy's unrestricted loader does run it, so the test file is really malicious
    subprocess.run([sys.executable, "-c", f"import numpy as np; np.load({str(evil)!r}, allow_pickle=True)"],
                   check=False, capture_output=True)
    assert marker.exists()


def test_numpy2_written_reference_style_files(tmp_path):
    mean = {np.int64(i): np.float64(i + 0.5) for i in range(3)}  # NumPy scalars: another allowed global
    var = {i: float(i + 1) for i in range(3)}
    for name, d in (("m.npy", mean), ("v.npy", var)):
        a = np.empty((), dtype=object)
        a[()] = d
        np.save(tmp_path / name, a, allow_pickle=True)
    s = ClassStatistics.from_reference_npy(tmp_path / "m.npy", tmp_path / "v.npy")
    assert s.mean.tolist() == [0.5, 1.5, 2.5] and s.var.tolist() == [1.0, 2.0, 3.0]
    np.save(tmp_path / "plain.npy", np.array([1.0, 2.0, 3.0]))
    assert ClassStatistics.from_reference_npy(tmp_path / "m.npy", tmp_path / "plain.npy").var.tolist() == [1, 2, 3]
    (tmp_path / "junk.npy").write_bytes(b"not an npy file")
    with pytest.raises(InputError, match="not a valid .npy"):
        ClassStatistics.from_reference_npy(tmp_path / "junk.npy", tmp_path / "v.npy")
    with pytest.raises(InputError, match="cannot read"):
        ClassStatistics.from_reference_npy(tmp_path / "none.npy", tmp_path / "v.npy")


def test_sync_merges_in_rank_order(monkeypatch):
    """sync() gathers every rank's state and merges them in rank order (simulated 3 ranks)."""
    import sml.utils.distributed as dist

    x = _data(8)
    parts = [ClassStatistics(6).update(torch.from_numpy(p)) for p in np.split(x, [3, 7])]
    monkeypatch.setattr(dist, "is_distributed", lambda: True)
    monkeypatch.setattr(dist, "all_gather_object", lambda obj: [p.state_dict() for p in parts])
    synced = parts[1].copy().sync()
    want = ClassStatistics(6)
    for p in parts:
        want.merge(p)
    np.testing.assert_array_equal(synced.m2, want.m2)
    np.testing.assert_array_equal(synced.mean, want.mean)


@pytest.mark.distributed
def test_sync_with_gloo(tmp_path):
    """Two real gloo processes end with the identical statistics of all frames."""
    script = tmp_path / "worker.py"
    script.write_text(f"""
import os, sys, json, numpy as np, torch, torch.distributed as dist
sys.path.insert(0, {os.path.dirname(__file__)!r})
from test_stats import _data
from sml.stats import ClassStatistics
dist.init_process_group("gloo", rank=int(sys.argv[1]), world_size=2, init_method="file://{tmp_path}/rdv")
x = _data(9)[int(sys.argv[1])::2]
s = ClassStatistics(6).update(torch.from_numpy(x)).sync()
json.dump(s.to_dict(), open("{tmp_path}/out%s.json" % sys.argv[1], "w"))
dist.destroy_process_group()
""")
    procs = [subprocess.Popen([sys.executable, str(script), str(r)]) for r in range(2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    outs = [json.loads((tmp_path / f"out{r}.json").read_text()) for r in range(2)]
    assert outs[0]["m2"] == outs[1]["m2"] and outs[0]["mean"] == outs[1]["mean"]
    n, mean, var = _two_pass(_data(9), 6)
    np.testing.assert_allclose(ClassStatistics.from_dict(outs[0]).var, var, rtol=1e-10, equal_nan=True)


def test_state_dict_round_trip_through_a_resume_chunk(tmp_path):
    """ClassStatistics follows the shared state pattern: plain arrays in a .npz chunk, back bit for bit."""
    from sml.pipelines.resume import read_chunk, write_chunk
    from sml.utils.state import Stateful

    st = ClassStatistics(6).update(torch.from_numpy(_data(3)))
    assert isinstance(st, Stateful)
    write_chunk(tmp_path / "c.npz", {"s": st.state_dict()})
    back = ClassStatistics.from_state_dict(read_chunk(tmp_path / "c.npz")["s"])
    for k in ("count", "mean", "m2", "var"):
        np.testing.assert_array_equal(getattr(back, k), getattr(st, k))
    assert back.class_names == st.class_names
    bad = st.state_dict()
    bad["m2"] = bad["m2"][:3]
    with pytest.raises(InputError, match="6 entries"):
        ClassStatistics.from_state_dict(bad)
