"""The device path of `sml eval` (issue 22): maps stay where they were scored, only compact tables cross.

The device code (torch sorts, counts and histograms where the map lives) runs
here on CPU tensors, switched on with ``sml.utils.device.DEVICE_PATH_ON_CPU``,
and is compared with the host path: the same pooled state and byte-identical
result files. A dispatch hook and a spy on ``Tensor.numpy`` show that no
full-resolution map is copied to the host unless maps are written.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import sml.utils.device
from sml.cli.main import main
from sml.metrics import AnomalyMetrics, FrameLabels
from test_pipeline_fixtures import make_eval_setup

SIZE = (48, 64)


def _canonical(m: AnomalyMetrics) -> dict[str, Any]:
    """The state with every pending key counted: one form per multiset."""
    m._compact_pending(release=True)
    return m.state_dict()


def _assert_same_state(a: AnomalyMetrics, b: AnomalyMetrics) -> None:
    sa, sb = _canonical(a), _canonical(b)
    assert sa.keys() == sb.keys()
    for k in sa.keys() - {"compact_at"}:   # a setting, not the counted pixels
        if isinstance(sa[k], np.ndarray):
            assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k
        else:
            assert sa[k] == sb[k], k


def _frames(seed: int, n: int, levels: int) -> list[tuple[torch.Tensor, np.ndarray]]:
    """Maps with ties (``levels`` distinct values; 0: continuous), -0.0 and +0.0, void and anomaly pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = rng.normal(size=(9, 11)).astype(np.float32)
        if levels:
            s = np.round(s * levels) / levels
        s.reshape(-1)[:2] = [-0.0, 0.0]
        y = (rng.random((9, 11)) < rng.choice([0.0, 0.2, 1.0])).astype(np.uint8)
        y[rng.random((9, 11)) < 0.15] = 255
        out.append((torch.from_numpy(s), y))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 8), levels=st.sampled_from([0, 2, 5, 40]),
       compact_at=st.sampled_from([1, 7, 50, 10_000]), cut=st.integers(0, 8))
def test_device_frames_give_the_host_state(monkeypatch: pytest.MonkeyPatch, seed: int, n: int, levels: int,
                                          compact_at: int, cut: int) -> None:
    """Whatever the ties, compaction points and save points (a state dict mid-way, merged back), the device path
    counts the same multiset and every frame's AP to the bit."""
    frames = _frames(seed, n, levels)
    host = AnomalyMetrics()
    host_ap = [host.update(s.numpy(), FrameLabels(y), frame_ap=True) for s, y in frames]
    monkeypatch.setattr(sml.utils.device, "DEVICE_PATH_ON_CPU", True)
    first, second = AnomalyMetrics(compact_at=compact_at), AnomalyMetrics(compact_at=compact_at)
    dev_ap = [(first if i < cut else second).update(s, FrameLabels(y), frame_ap=True) for i, (s, y) in enumerate(frames)]
    assert np.array_equal(np.array(host_ap, float), np.array(dev_ap, float), equal_nan=True)
    pooled = AnomalyMetrics.from_state_dict(first.state_dict())   # pending runs counted into the chunk's tables
    pooled.merge(second)
    res_dev, res_host = pooled.compute(), host.compute()
    assert json.dumps(res_dev, default=str, sort_keys=True) == json.dumps(res_host, default=str, sort_keys=True)
    _assert_same_state(pooled, host)


def test_device_frames_keep_pending_runs_until_compaction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeated keys wait as runs (no host sort of their pixels); the state they make is the host's."""
    monkeypatch.setattr(sml.utils.device, "DEVICE_PATH_ON_CPU", True)
    s = torch.tensor([[0.5, 0.5, 0.5, 1.0], [2.0, 2.0, -1.0, 3.0]])
    y = np.array([[1, 1, 0, 0], [1, 0, 255, 0]], np.uint8)
    m = AnomalyMetrics()
    m.update(s, FrameLabels(y))
    assert m._n == 2 and m._n_runs == 2           # 1.0 and 3.0 pending as keys; 0.5 (x3), 2.0 (x2) as runs
    assert m.nbytes > 0 and m.distinct == 0
    host = AnomalyMetrics()
    host.update(s.numpy(), y)
    assert m.compute()["ap"] == host.compute()["ap"]
    _assert_same_state(m, host)


# ------------------------------------------------------------------ sml eval, end to end
@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_eval_setup(tmp_path_factory.mktemp("device"), cs_frames=3, n=4, size=SIZE)


def _eval(s: dict[str, Path], out: Path, *extra: str) -> int:
    return main(["eval", "--model", str(s["model"]), "--stats", str(s["stats"]), "--data",
                 f"smiyc-anomaly:{s['smiyc']}", "--out", str(out), "--method", "sml,max_logit,msp,entropy,energy",
                 *extra])


_VOLATILE = {"created", "run_id", "out", "seconds", "timings", "started", "finished"}


def _strip(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k not in _VOLATILE}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _same_files(a: Path, b: Path) -> list[str]:
    """Every result file of two runs: JSON equal but for times and names of the run, the rest byte-identical."""
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file() and p.name != "run.json")
    assert names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file() and p.name != "run.json")
    for n in names:
        if n.endswith(".json"):
            ja = _strip(json.loads((a / n).read_text()))
            jb = _strip(json.loads((b / n).read_text()))
            if n == "metrics.json":
                ja, jb = (json.loads(json.dumps(j).replace(str(p), "RUN")) for j, p in ((ja, a), (jb, b)))
            assert ja == jb, n
        elif not n.endswith((".html", ".png")):   # the report page and figures carry the run's name and time
            assert (a / n).read_bytes() == (b / n).read_bytes(), n
    return names


@pytest.mark.parametrize("extra", [
    ("--frame-ap", "--components"),
    ("--protocol", "smiyc", "--components", "--save-maps", "npy16"),
    ("--frame-ap", "--batch-size", "2"),
])
def test_device_path_writes_the_host_path_files(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                extra: tuple[str, ...]) -> None:
    tag = "_".join(e.strip("-") for e in extra)
    host, dev = setup["base"] / f"host_{tag}", setup["base"] / f"dev_{tag}"
    assert _eval(setup, host, *extra) == 0
    monkeypatch.setattr(sml.utils.device, "DEVICE_PATH_ON_CPU", True)
    assert _eval(setup, dev, *extra) == 0
    names = _same_files(host, dev)
    assert {"metrics.json", "frames.json", "curves.json", "diagnostics.json"} <= set(names)


class _HostCopies(TorchDispatchMode):
    """Records every copy to the host (``_to_copy`` / ``copy_`` landing on the CPU): shape and dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[tuple[tuple[int, ...], torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        to_cpu = str(kwargs.get("device", "")) == "cpu"
        if (name == "_to_copy" and to_cpu) or (name == "to" and to_cpu and kwargs.get("copy")):  # `to`: inference mode
            self.copies.append((tuple(out.shape), out.dtype))
        elif name == "copy_" and args[1].device != args[0].device and args[0].device.type == "cpu":
            self.copies.append((tuple(args[0].shape), args[0].dtype))
        return out


def _full_size(shape: tuple[int, ...], dtype: torch.dtype) -> bool:
    """A map-sized copy: two or more dimensions of the frame, or a float array with a frame's pixels."""
    h, w = SIZE
    n = int(np.prod(shape)) if shape else 1
    return (len(shape) >= 2 and n >= h * w) or (dtype.is_floating_point and n >= h * w // 2)


def test_eval_loop_copies_no_map_to_the_host(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Scores, exact metrics with each frame's AP, the SMIYC bins and the diagnostics: no full map crosses;
    with --save-maps, exactly one copy per method and frame (the one written)."""
    monkeypatch.setattr(sml.utils.device, "DEVICE_PATH_ON_CPU", True)
    numpy_calls: list[tuple[tuple[int, ...], torch.dtype]] = []
    real_numpy = torch.Tensor.numpy

    def spy(t: torch.Tensor, *a: Any, **k: Any) -> np.ndarray:
        numpy_calls.append((tuple(t.shape), t.dtype))
        return real_numpy(t, *a, **k)

    import sml.pipelines.evaluate as E

    loop = E.score_frames
    hooks: list[_HostCopies] = []

    def watched(*a: Any, **k: Any) -> None:   # only the per-frame loop: not the network's loading, not the results
        with _HostCopies() as mode:
            monkeypatch.setattr(torch.Tensor, "numpy", spy)
            try:
                loop(*a, **k)
            finally:
                monkeypatch.setattr(torch.Tensor, "numpy", real_numpy)
        hooks.append(mode)

    monkeypatch.setattr(E, "score_frames", watched)
    for protocol in ("exact", "smiyc"):
        numpy_calls.clear()
        assert _eval(setup, setup["base"] / f"watched_{protocol}", "--frame-ap", "--protocol", protocol) == 0
        copies = hooks[-1].copies
        assert copies and not [c for c in copies if _full_size(*c)], copies
        assert numpy_calls and not [c for c in numpy_calls if _full_size(*c)], numpy_calls
    numpy_calls.clear()
    assert _eval(setup, setup["base"] / "watched_maps", "--save-maps", "npy16") == 0
    written = [c for c in hooks[-1].copies if _full_size(*c)]
    assert written and all(c == (SIZE, torch.float32) for c in written) and len(written) == 4 * 5
