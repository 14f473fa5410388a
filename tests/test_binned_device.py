"""SmiycPixelMetric's device path (torch maps rounded, sorted and binned where they live) equals the NumPy path.

``sml.utils.device.DEVICE_PATH_ON_CPU`` sends CPU tensors through the device
code, so it runs here without a GPU; every state is compared bit for bit with
the host path's (NumPy maps).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import sml.utils.device
from sml.errors import InputError
from sml.metrics.binned import SmiycPixelMetric
from sml.metrics.labels import FrameLabels
from sml.metrics.smiyc_bins import device_submission, to_submission


@pytest.fixture
def device_path(monkeypatch):
    monkeypatch.setattr(sml.utils.device, "DEVICE_PATH_ON_CPU", True)


def _host(x):
    """A map as the host path gets it: NumPy (bfloat16, which NumPy lacks, as its exact float32)."""
    return (x.float() if x.dtype == torch.bfloat16 else x).numpy() if isinstance(x, torch.Tensor) else x


def _same_state(a: SmiycPixelMetric, b: SmiycPixelMetric) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k, v in sa.items():
        if isinstance(v, np.ndarray):
            assert v.dtype == sb[k].dtype and np.array_equal(v, sb[k]), k
            assert v.tobytes() == sb[k].tobytes(), k  # bit for bit (the sign of a zero threshold too)
        else:
            assert type(v) is type(sb[k]) and v == sb[k], k


def _same_result(a: SmiycPixelMetric, b: SmiycPixelMetric) -> None:
    ra, rb = a.compute(), b.compute()
    assert ra.keys() == rb.keys()
    for k, v in ra.items():
        if isinstance(v, float) and math.isnan(v):
            assert math.isnan(rb[k]), k
        else:
            assert v == rb[k], k


def _both(frames, num_bins: int = 768) -> tuple[SmiycPixelMetric, SmiycPixelMetric]:
    """(host, device) metrics fed the same ``(map tensor, labels)`` pairs; the device one with tensors."""
    host, dev = SmiycPixelMetric(num_bins=num_bins), SmiycPixelMetric(num_bins=num_bins)
    for s, y in frames:
        host.update(_host(s), y)
        dev.update(s, y)
    return host, dev


def _frame(rng, shape, kind: str, p_ignore: float = 0.0):
    """A random map (float64 tensor) and its labels; ``kind``: how its scores tie."""
    y = (rng.random(shape) < 0.2).astype(np.uint8)
    y[rng.random(shape) < p_ignore] = 255
    s = rng.normal(size=shape) + 1.5 * (y == 1)
    if kind == "ties":
        s = np.round(s * 2) / 2  # a dozen distinct scores
    elif kind == "zeros":
        s = np.where(rng.random(shape) < 0.6, np.where(rng.random(shape) < 0.5, 0.0, -0.0), s)  # both zeros
    elif kind == "spread":
        s = s * 3000.0  # float16 steps of 2 to 32
    return torch.from_numpy(s), y


@pytest.mark.parametrize("kind", ["normal", "ties", "zeros", "spread"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_frames_equal_host(device_path, kind, dtype) -> None:
    rng = np.random.default_rng([ord(c) for c in kind + str(dtype)])
    frames = [(s.to(dtype), y) for s, y in (_frame(rng, (40, 50), kind, p_ignore=0.1 * (i % 2)) for i in range(6))]
    host, dev = _both(frames)
    _same_state(host, dev)
    _same_result(host, dev)


def test_ignore_inlier_only_and_many_frames(device_path) -> None:
    rng = np.random.default_rng(7)
    frames = []
    for i in range(40):
        shape = (int(rng.integers(1, 30)), int(rng.integers(1, 40)))
        y = (rng.random(shape) < (0.0 if i % 5 == 0 else 0.3)).astype(np.uint8)  # every 5th: inliers only
        y[rng.random(shape) < (0.95 if i % 7 == 3 else 0.2)] = 255
        if i == 11:
            y[:] = 255  # nothing evaluated
        frames.append((torch.from_numpy(rng.normal(size=shape).astype(np.float32) + y), y))
    host, dev = _both(frames)
    assert dev.frames == 40 and dev.ignored == host.ignored > 0
    _same_state(host, dev)
    _same_result(host, dev)
    small_h, small_d = _both(frames[:10], num_bins=6)  # fewer bins than pixels: real quantiles
    _same_state(small_h, small_d)


def test_all_inlier_metric_state_equal(device_path) -> None:
    rng = np.random.default_rng(2)
    frames = [(torch.from_numpy(rng.normal(size=(20, 30))), np.zeros((20, 30), np.uint8)) for _ in range(3)]
    host, dev = _both(frames)
    _same_state(host, dev)
    _same_result(host, dev)
    assert "no anomaly pixel" in dev.compute()["reason"]


def test_batch_and_frame_labels(device_path) -> None:
    rng = np.random.default_rng(5)
    s = torch.from_numpy(rng.normal(size=(4, 24, 32)).astype(np.float32))
    y = (rng.random((4, 24, 32)) < 0.25).astype(np.uint8)
    y[:, :3] = 255
    host = SmiycPixelMetric()
    host.update(s.numpy(), y)
    dev = SmiycPixelMetric()
    dev.update(s[:2], torch.from_numpy(y[:2]))         # a batch, tensor labels
    dev.update(s[2], FrameLabels(torch.from_numpy(y[2])))  # labels already where the map is
    dev.update(s[3], FrameLabels(y[3]))                # host labels, copied over
    _same_state(host, dev)
    _same_result(host, dev)
    assert dev.best_f1_threshold() == host.best_f1_threshold()


def test_float16_overflow_and_nonfinite_refused(device_path) -> None:
    y = np.array([[0, 1, 255, 0]], np.uint8)
    for bad in (1e6, -7e4, float("inf"), float("nan")):
        for dtype in (torch.float32, torch.float64):
            s = torch.tensor([[0.1, 0.2, 0.3, bad]], dtype=dtype)
            for m, x in ((SmiycPixelMetric(), s), (SmiycPixelMetric(), _host(s))):
                with pytest.raises(InputError, match="not finite in float16"):
                    m.update(x, y)
                assert m.frames == 0
    # the same scores at an ignored pixel are not evaluated
    s = torch.tensor([[0.1, 0.2, 1e6, 0.4]])
    host, dev = _both([(s, y)])
    _same_state(host, dev)
    with pytest.raises(InputError, match="real numbers"):
        SmiycPixelMetric().update(torch.zeros(2, 3, dtype=torch.complex64), np.zeros((2, 3), np.uint8))
    with pytest.raises(InputError, match="does not match"):
        SmiycPixelMetric().update(torch.zeros(2, 3), np.zeros((2, 4), np.uint8))
    with pytest.raises(InputError, match="labels contain"):
        SmiycPixelMetric().update(torch.zeros(2, 3), np.full((2, 3), 7, np.uint8))
    with pytest.raises(InputError, match="H x W or B x H x W"):
        SmiycPixelMetric().update(torch.zeros(1, 2, 3, 4), np.zeros((1, 2, 3, 4), np.uint8))


def test_float64_rounds_to_float16_as_numpy() -> None:
    """torch casts float64 -> float16 through a float32 (double rounding); device_submission rounds as NumPy."""
    h = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)
    mids = (h[:-1] + h[1:]) / 2
    x = np.concatenate([mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf), -mids,
                        [65519.99, 65520.0, 1e300, -1e300, np.inf, -np.inf, np.nan, 1e-40, 2.0**-25, -0.0]])
    with np.errstate(over="ignore"):
        ref = to_submission(x)
    got = device_submission(torch.from_numpy(x)).numpy()
    assert got.dtype == np.float16 and np.array_equal(got.view(np.uint16), ref.view(np.uint16))
    ints = torch.tensor([0, 2049, -2051, 65504, 65519, 65520, 2**40])
    assert np.array_equal(device_submission(ints).numpy().view(np.uint16),
                          to_submission(ints.numpy()).view(np.uint16))


def test_no_full_map_crosses_to_the_host(device_path, monkeypatch) -> None:
    rng = np.random.default_rng(9)
    s = torch.from_numpy(rng.normal(size=(2, 60, 80)).astype(np.float32))
    y = (rng.random((2, 60, 80)) < 0.3).astype(np.uint8)
    y[:, :5] = 255
    fl = FrameLabels(torch.from_numpy(y[1]))  # made before the recorder: FrameLabels reads its labels on the host
    sizes = []
    numpy = torch.Tensor.numpy

    def recording(self, *args, **kwargs):
        sizes.append(self.numel())
        return numpy(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "numpy", recording)
    m = SmiycPixelMetric()
    m.update(s[:1], y[:1])
    m.update(s[1], fl)
    monkeypatch.undo()
    assert sizes, "the bins cross through to_host (Tensor.numpy)"
    assert max(sizes) <= 2 * (768 + 2) < s[0].numel()  # per-frame bins and read values only
    host = SmiycPixelMetric()
    host.update(s.numpy(), y)
    _same_state(host, m)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-40, 40), st.sampled_from([0, 0, 1, 255])), min_size=1, max_size=60),
       st.sampled_from([torch.float32, torch.float64, torch.float16]), st.integers(2, 20))
def test_small_maps_equal_host(pixels, dtype, num_bins) -> None:
    s = torch.tensor([p[0] / 8 for p in pixels], dtype=dtype).reshape(1, -1)
    y = np.array([[p[1] for p in pixels]], np.uint8)
    host = SmiycPixelMetric(num_bins=num_bins)
    host.update(_host(s), y)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sml.utils.device, "DEVICE_PATH_ON_CPU", True)
        dev = SmiycPixelMetric(num_bins=num_bins)
        dev.update(s, y)
    _same_state(host, dev)
    _same_result(host, dev)
