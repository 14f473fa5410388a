"""ClassDiagnostics.update_from_predictions: the device path (torch, where the maps live) and the faster host
path, both against a literal copy of the NumPy implementation they replaced.

The device code runs here on CPU tensors (``sml.utils.device.DEVICE_PATH_ON_CPU``).
Maps hold values on and next to every bin edge, outside the bins' range, void and
anomaly pixels; counts must be bit-identical, bad frames refused with the same
errors, and no full-resolution map may come to the host on the device path.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import sml.utils.device
from sml.diagnostics import MAX_LOGIT_BINS, SML_BINS, Bins, ClassDiagnostics
from sml.diagnostics import core
from sml.errors import InputError

# the reference (Bins.index, float64) multiplies float64's extremes too
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning")

C = 5
COUNTED = ("max_logit_hist", "sml_hist", "frames", "ignored")


def _reference_update(self: ClassDiagnostics, pred: Any, max_logit: Any, labels: Any,
                      sml_score: Any = None) -> ClassDiagnostics:
    """``ClassDiagnostics.update_from_predictions`` before the device path (literal copy, ``core.`` added)."""
    p = core._np(pred, "pred")
    v = core._np(max_logit, "max_logit")
    y = core._np(labels, "labels")
    shapes = {"pred": p.shape, "max_logit": v.shape, "labels": y.shape}
    s = None
    if self.sml:
        if sml_score is None:
            raise InputError("these diagnostics track the SML score (sml=True): pass sml_score, or build "
                             "them with ClassDiagnostics(..., sml=False)")
        s = core._np(sml_score, "sml_score")
        shapes["sml_score"] = s.shape
    elif sml_score is not None:
        raise InputError("sml_score given but these diagnostics were built with sml=False")
    if len(set(shapes.values())) != 1:
        raise InputError(f"pred, max_logit, labels (and sml_score) must share one shape, got {shapes}")
    if p.dtype.kind not in "iu":
        raise InputError(f"pred must hold integer class indices, got dtype {p.dtype}")
    if v.dtype.kind != "f" or (s is not None and s.dtype.kind != "f"):
        raise InputError("max_logit and sml_score must be floating point maps")
    if y.dtype.kind == "b":
        y = y.view(np.uint8)
    if y.dtype.kind not in "iu":
        raise InputError(f"labels must be integers (1 anomaly, 0 inlier, {self.ignore_index} void), "
                         f"got dtype {y.dtype}")
    p, v, y = p.reshape(-1), v.reshape(-1), y.reshape(-1)
    inlier, anomaly = y == 0, y == 1
    void = y == self.ignore_index
    other = y.size - int(np.count_nonzero(inlier)) - int(np.count_nonzero(anomaly)) - int(np.count_nonzero(void))
    if other:
        raise InputError(f"labels hold {other} pixels with values other than 0, 1 and {self.ignore_index}; "
                         "map the data set's raw labels first (sml.data loaders do)")
    keep = inlier | anomaly
    p, v, kind = p[keep], v[keep], anomaly[keep]
    if p.size and (int(p.min()) < 0 or int(p.max()) >= self.num_classes):
        raise InputError(f"pred holds class indices outside 0..{self.num_classes - 1}")
    if not np.isfinite(v).all():
        raise InputError("max_logit holds NaN or infinite values at labelled pixels; check the model output")
    # one bincount over (kind, class, slot) per histogram
    base = (kind.astype(np.int64) * self.num_classes + p.astype(np.int64))
    self.max_logit_hist += np.bincount(base * MAX_LOGIT_BINS.size + MAX_LOGIT_BINS.index(v),
                                       minlength=self.max_logit_hist.size).reshape(self.max_logit_hist.shape)
    if s is not None:
        sv = s.reshape(-1)[keep]
        if not np.isfinite(sv).all():
            raise InputError("sml_score holds NaN or infinite values at labelled pixels")
        self.sml_hist += np.bincount(base * SML_BINS.size + SML_BINS.index(sv),
                                     minlength=self.sml_hist.size).reshape(self.sml_hist.shape)
    self.frames += 1 if len(shapes["pred"]) <= 2 else int(shapes["pred"][0])
    self.ignored += int(np.count_nonzero(void))
    return self


@pytest.fixture
def device_path(monkeypatch):
    """CPU tensors take the device path (torch ops; only histograms come to the host)."""
    monkeypatch.setattr(sml.utils.device, "DEVICE_PATH_ON_CPU", True)


def _near_edges(bins: Bins, dtype: Any, ulps: int = 3) -> np.ndarray:
    """Every edge in ``dtype`` and its ``ulps`` neighbours on both sides (ties at the edges)."""
    e = bins.edges.astype(dtype)
    out = [e]
    lo, hi = e.copy(), e.copy()
    for _ in range(ulps):
        lo, hi = np.nextafter(lo, dtype(-np.inf)), np.nextafter(hi, dtype(np.inf))
        out += [lo, hi]
    return np.concatenate(out)


def _values(rng: np.random.Generator, n: int, bins: Bins, dtype: Any = np.float32) -> np.ndarray:
    """``n`` values: on and next to the edges, within the bins, outside their range, extremes."""
    fi = np.finfo(dtype)
    extremes = np.array([0.0, -0.0, fi.tiny, -fi.tiny, fi.smallest_subnormal, -fi.smallest_subnormal,
                         fi.max, -fi.max, 2 * bins.hi, 2 * bins.lo] + ([1e30, -1e30] if float(fi.max) > 1e30 else []),
                        dtype=dtype)
    pool = np.concatenate([_near_edges(bins, dtype), extremes,
                           rng.uniform(bins.lo - 3, bins.hi + 3, n).astype(dtype)])
    return rng.choice(pool, n).astype(dtype)


def _frame(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any = np.float32,
           void: float = 0.15, anomaly: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = int(np.prod(shape))
    pred = rng.integers(0, C, n).reshape(shape)
    ml = _values(rng, n, MAX_LOGIT_BINS, dtype).reshape(shape)
    sml = _values(rng, n, SML_BINS, dtype).reshape(shape)
    u = rng.random(shape)
    y = np.where(u < anomaly, 1, 0).astype(np.uint8)
    y[u > 1 - void] = 255
    return pred, ml, y, sml


def _state(d: ClassDiagnostics) -> dict[str, np.ndarray]:
    st = d.state_dict()
    return {k: np.asarray(st[k]) for k in COUNTED}


def _assert_same(a: ClassDiagnostics, b: ClassDiagnostics) -> None:
    sa, sb = _state(a), _state(b)
    for k in COUNTED:
        assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k


# ---------------------------------------------------------------------------------------------- the slot of a value
@pytest.mark.parametrize("bins", [MAX_LOGIT_BINS, SML_BINS, Bins(-1.0, 3.0, 7), Bins(-1000.0, 1000.0, 3000)],
                         ids=str)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_slot_of_each_value_equals_bins_index(bins, dtype):
    rng = np.random.default_rng(3)
    x = np.concatenate([_near_edges(bins, dtype, ulps=8), _values(rng, 20000, bins, dtype)])
    want = bins.index(x)
    assert np.array_equal(want, np.searchsorted(bins.edges, x.astype(np.float64), side="right"))
    host = core._host_index(x, bins, np.zeros(x.size, np.float32), 1)
    assert np.array_equal(host, want)
    # device: one row per value, so the counts say each value's slot
    t = torch.from_numpy(x)
    counts = core._device_counts(t, bins, torch.arange(x.size) * bins.size, x.size).reshape(x.size, bins.size)
    assert counts.sum(dim=1).eq(1).all()
    assert np.array_equal(counts.argmax(dim=1).numpy(), want)


# ---------------------------------------------------------------------------------- host path: same counts as before
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(37, 53), (1, 37, 53), (3, 41, 29), (300, 500)], ids=str)
@pytest.mark.parametrize("sml", [False, True])
def test_host_path_counts_equal_the_reference(seed, shape, sml):
    rng = np.random.default_rng(seed)
    new, ref = ClassDiagnostics(C, sml=sml), ClassDiagnostics(C, sml=sml)
    for _ in range(2):
        pred, ml, y, s = _frame(rng, shape, void=rng.choice([0.0, 0.15]), anomaly=rng.choice([0.0, 0.1, 1.0]))
        if seed % 2:
            pred = pred.astype(np.uint8)
        new.update_from_predictions(pred, ml, y, s if sml else None)
        _reference_update(ref, pred, ml, y, s if sml else None)
    _assert_same(new, ref)
    assert new.max_logit_hist.sum() > 0


@pytest.mark.parametrize("case", ["nan-at-void", "pred-out-of-range-at-void", "float16", "float64", "bool-labels",
                                  "int64-labels", "ignore-minus-one", "ignore-is-one", "empty", "strided",
                                  "torch-cpu"])
def test_host_path_special_frames_equal_the_reference(case):
    rng = np.random.default_rng(11)
    pred, ml, y, s = _frame(rng, (2, 45, 70))
    kw: dict[str, Any] = {}
    if case == "nan-at-void":
        ml[y == 255] = np.nan
        s[(y == 255) & (rng.random(y.shape) < 0.5)] = -np.inf
    elif case == "pred-out-of-range-at-void":
        pred[y == 255] = -3
    elif case in ("float16", "float64"):
        pred, ml, y, s = _frame(rng, (2, 45, 70), dtype=np.dtype(case).type)
    elif case == "bool-labels":
        y = y == 1
    elif case == "int64-labels":
        y = y.astype(np.int64)
    elif case == "ignore-minus-one":
        y = np.where(y == 255, -1, y.astype(np.int16))
        kw["ignore_index"] = -1
    elif case == "ignore-is-one":
        y[y == 1] = 0
        y[y == 255] = 0
        kw["ignore_index"] = 1
    elif case == "empty":
        pred, ml, y, s = pred[:, :0], ml[:, :0], y[:, :0], s[:, :0]
    elif case == "strided":
        pred, ml, y, s = pred[:, ::2, ::-3], ml[:, ::2, ::-3], y[:, ::2, ::-3], s[:, ::2, ::-3]
    new, ref = ClassDiagnostics(C, **kw), ClassDiagnostics(C, **kw)
    args = (pred, ml, y, s)
    if case == "torch-cpu":
        args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in args)
    new.update_from_predictions(*args)
    _reference_update(ref, *args)
    _assert_same(new, ref)


def test_host_path_many_blocks_equal_the_reference(monkeypatch):
    """Frames of several blocks, a block with something to refuse only at void pixels."""
    monkeypatch.setattr(core, "_BLOCK", 1000)
    rng = np.random.default_rng(5)
    pred, ml, y, s = _frame(rng, (120, 97))
    ml.reshape(-1)[np.flatnonzero(y.reshape(-1) == 255)[-5:]] = np.nan
    new, ref = ClassDiagnostics(C), ClassDiagnostics(C)
    new.update_from_predictions(pred, ml, y, s)
    _reference_update(ref, pred, ml, y, s)
    _assert_same(new, ref)


# ------------------------------------------------------------------------------- device path: same counts as the host
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shape", [(37, 53), (1, 37, 53), (3, 41, 29)], ids=str)
@pytest.mark.parametrize("sml", [False, True])
@pytest.mark.parametrize("labels_as", ["numpy", "tensor"])
def test_device_path_equals_host_path(device_path, seed, shape, sml, labels_as):
    rng = np.random.default_rng(100 + seed)
    dev, host = ClassDiagnostics(C, sml=sml), ClassDiagnostics(C, sml=sml)
    for _ in range(2):
        pred, ml, y, s = _frame(rng, shape, void=rng.choice([0.0, 0.15]), anomaly=rng.choice([0.0, 0.1, 1.0]))
        ml[y == 255] = rng.choice([np.nan, np.inf, 5.0])     # anything goes at void pixels
        pred[(y == 255) & (rng.random(shape) < 0.3)] = 77
        lab = torch.from_numpy(y) if labels_as == "tensor" else y
        dev.update_from_predictions(torch.from_numpy(pred), torch.from_numpy(ml), lab,
                                    torch.from_numpy(s) if sml else None)
        _reference_update(host, pred, ml, y, s if sml else None)
    _assert_same(dev, host)
    assert dev.max_logit_hist.sum() > 0


@pytest.mark.parametrize("case", ["bfloat16", "float16", "float64", "uint8-pred", "int32-pred", "bool-labels",
                                  "ignore-minus-one", "mixed-numpy-pred", "batch-of-one"])
def test_device_path_dtypes_equal_host_path(device_path, case):
    rng = np.random.default_rng(21)
    pred, ml, y, s = _frame(rng, (2, 33, 47))
    tp, tv, ts = torch.from_numpy(pred), torch.from_numpy(ml), torch.from_numpy(s)
    lab: Any = y
    kw: dict[str, Any] = {}
    if case in ("bfloat16", "float16", "float64"):  # float32's extremes would be inf in 16 bits
        tv, ts = (t.clamp(-6e4, 6e4).to(getattr(torch, case)) for t in (tv, ts))
    elif case == "uint8-pred":
        tp = tp.to(torch.uint8)
    elif case == "int32-pred":
        tp = tp.int()
    elif case == "bool-labels":
        lab = y == 1
    elif case == "ignore-minus-one":
        lab = np.where(y == 255, -1, y.astype(np.int8))
        kw["ignore_index"] = -1
    elif case == "mixed-numpy-pred":
        tp = pred   # a NumPy map beside tensors: copied to their device
    elif case == "batch-of-one":
        tp, tv, ts, lab = tp[:1], tv[:1], ts[:1], y[0]
    dev, host = ClassDiagnostics(C, **kw), ClassDiagnostics(C, **kw)
    dev.update_from_predictions(tp, tv, lab, ts)
    # the host path reads the same tensors through NumPy (bfloat16 / float16 as float32: exact)
    sml.utils.device.DEVICE_PATH_ON_CPU = False
    try:
        host.update_from_predictions(tp, tv, lab, ts)
    finally:
        sml.utils.device.DEVICE_PATH_ON_CPU = True
    _assert_same(dev, host)


# ---------------------------------------------------------------------------------------- bad frames: the same errors
def _bad_cases() -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(7)
    pred, ml, y, s = _frame(rng, (2, 6, 8))
    y[0, 0, :3] = [0, 1, 255]
    ok = {"pred": pred, "max_logit": ml, "labels": y, "sml_score": s}

    def edit(**kw: Any) -> dict[str, Any]:
        return {**ok, **kw}

    def at(a: np.ndarray, value: Any, where: tuple[int, ...] = (0, 0, 1)) -> np.ndarray:
        a = a.copy()
        a[where] = value
        return a

    return {
        "label-2": edit(labels=at(y, 2)),
        "label-7-many": edit(labels=np.full_like(y, 7)),
        "class-out-of-range": edit(pred=at(pred, C)),
        "class-negative": edit(pred=at(pred, -1)),
        "nan-max-logit": edit(max_logit=at(ml, np.nan)),
        "inf-max-logit": edit(max_logit=at(ml, -np.inf, (0, 0, 0))),
        "nan-sml": edit(sml_score=at(s, np.nan)),
        "inf-sml-and-bad-class": edit(sml_score=at(s, np.inf), pred=at(pred, 99, (0, 0, 0))),
        "no-sml": edit(sml_score=None),
        "shapes": edit(max_logit=ml[:, :5]),
        "float-pred": edit(pred=pred.astype(np.float32)),
        "bool-pred": edit(pred=pred > 1),
        "int-max-logit": edit(max_logit=pred.copy()),
        "int-sml": edit(sml_score=pred.copy()),
        "float-labels": edit(labels=y.astype(np.float32)),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_frames_are_refused_alike_and_change_nothing(device_path, case):
    args = _bad_cases()[case]
    rng = np.random.default_rng(8)
    first = _frame(rng, (2, 6, 8))

    def error(path: str) -> str:
        d = ClassDiagnostics(C)
        d.update_from_predictions(*first)   # a counted frame: a refused one must leave it as it is
        before = _state(d)
        call = dict(args)
        if path == "device":
            call = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) and k != "labels" else v)
                    for k, v in call.items()}
        sml.utils.device.DEVICE_PATH_ON_CPU = path == "device"
        try:
            with pytest.raises(InputError) as exc:
                d.update_from_predictions(**call)
        finally:
            sml.utils.device.DEVICE_PATH_ON_CPU = True
        after = _state(d)
        assert all(np.array_equal(before[k], after[k]) for k in COUNTED), path
        return str(exc.value)

    ref = ClassDiagnostics(C)
    with pytest.raises(InputError) as exc:
        _reference_update(ref, **args)
    assert error("host") == str(exc.value)
    assert error("device") == str(exc.value)


def test_sml_score_given_without_sml_is_refused_alike(device_path):
    pred, ml, y, s = _frame(np.random.default_rng(1), (4, 5))
    for args in ((pred, ml, y, s), (torch.from_numpy(pred), torch.from_numpy(ml), y, torch.from_numpy(s))):
        with pytest.raises(InputError, match="built with sml=False"):
            ClassDiagnostics(C, sml=False).update_from_predictions(*args)


# ------------------------------------------------------------------------------- device path: no map to the host
def test_device_path_copies_no_map_to_the_host(device_path, monkeypatch):
    shape = (2, 96, 128)
    n_map = int(np.prod(shape))
    pred, ml, y, s = _frame(np.random.default_rng(2), shape)
    tensors = [torch.from_numpy(a) for a in (pred, ml, s)]
    sizes: list[int] = []
    real_numpy = torch.Tensor.numpy

    def spy(t: torch.Tensor, *a: Any, **k: Any) -> np.ndarray:
        sizes.append(t.numel())
        return real_numpy(t, *a, **k)

    monkeypatch.setattr(torch.Tensor, "numpy", spy)
    d = ClassDiagnostics(C)
    d.update_from_predictions(tensors[0], tensors[1], y, tensors[2])
    assert sizes, "the histograms come to the host through Tensor.numpy (sml.utils.device.to_host)"
    assert max(sizes) < n_map / 2, sizes
    # the spy sees a whole map where one is converted: the host path reads CPU tensors through NumPy
    sizes.clear()
    monkeypatch.setattr(sml.utils.device, "DEVICE_PATH_ON_CPU", False)
    ClassDiagnostics(C).update_from_predictions(tensors[0], tensors[1], y, tensors[2])
    assert max(sizes) == n_map
