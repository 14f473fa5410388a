"""The PixelMetric interface: the exact and the SMIYC-binned pixel metrics answer the same calls the same way.

``sml eval`` (``pipelines.evaluate._score_one``, ``finalize``, ``threshold_metrics``)
never asks which one it holds; this test is the contract it relies on.
"""
from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest

from sml.errors import InputError
from sml.metrics import AnomalyMetrics, FrameLabels, PixelMetric, SmiycPixelMetric
from sml.protocols import PROTOCOLS, component_threshold, pixel_metric

KINDS = [AnomalyMetrics, SmiycPixelMetric]
COMMON = ("auroc", "ap", "fpr95", "fpr95_convention", "threshold_at_95tpr", "best_f1", "best_f1_threshold",
          "pixels", "ignored", "images", "reason")


def _frames(n: int = 4, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        y = (rng.random((24, 32)) < 0.25).astype(np.uint8)
        y[:3] = 255
        out.append(((rng.normal(size=y.shape) + 1.5 * y).astype(np.float32), y))
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (isinstance(v, float) and math.isnan(v) and math.isnan(b[k])) or v == b[k] for k, v in a.items())


def _fed(cls: type, frames, prepared: bool = False) -> PixelMetric:
    m = cls()
    for s, y in frames:
        m.update(s, FrameLabels(y) if prepared else y)
    return m


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
def test_one_interface(cls: type) -> None:
    frames = _frames()
    m = cls()
    assert isinstance(m, PixelMetric)
    # update: same signature and return convention (an AP only where the metric defines one)
    assert m.update(*frames[0]) is None and m.update(*frames[1], frame_ap=False) is None
    ap = m.update(frames[2][0], FrameLabels(frames[2][1]), frame_ap=True)
    assert ap is None or 0.0 <= ap <= 1.0
    m.update(*frames[3], frame_ap=False)
    # a prepared FrameLabels and raw labels give the same state
    assert _same(m.compute(), _fed(cls, frames, prepared=True).compute())
    r = m.compute()
    assert set(COMMON) <= set(r) and r["reason"] is None and r["images"] == 4
    assert r["pixels"] == {"anomaly": sum(int((y == 1).sum()) for _, y in frames),
                           "inlier": sum(int((y == 0).sum()) for _, y in frames)}
    assert r["ignored"] == sum(int((y == 255).sum()) for _, y in frames)
    assert m.totals() == {**r["pixels"], "ignored": r["ignored"], "images": 4}
    assert 0.5 < r["auroc"] <= 1.0 and 0.0 < r["ap"] <= 1.0
    # curves: one layout, roc from the highest threshold to (1, 1), pr in increasing threshold order
    c = m.curves(50)
    roc, pr = c["roc"], c["pr"]
    assert set(roc) == {"fpr", "tpr", "threshold"} and set(pr) == {"precision", "recall", "threshold"}
    assert all(v.size <= 50 for part in c.values() for v in part.values())
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(roc["threshold"]) < 0) and np.all(np.diff(pr["threshold"]) > 0)
    assert np.all(np.diff(roc["fpr"]) >= 0) and np.all(np.diff(roc["tpr"]) >= 0)
    with pytest.raises(InputError, match="max_points"):
        m.curves(2)
    res, cur = m.summary(50)
    assert _same(res, r) and all(np.array_equal(cur[p][k], c[p][k]) for p in c for k in c[p])
    # the best-F1 threshold is compute()'s (the binned one as float16, as the tool compares)
    t = m.best_f1_threshold()
    assert isinstance(t, float) and t == pytest.approx(r["best_f1_threshold"], rel=1e-3)
    assert component_threshold("smiyc" if cls is SmiycPixelMetric else "exact", m) == t
    assert m.nbytes > 0


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
def test_state_methods(cls: type) -> None:
    frames = _frames(seed=1)
    whole = _fed(cls, frames)
    a, b = _fed(cls, frames[:2]), _fed(cls, frames[2:])
    assert _same(a.merge(cls.from_state_dict(b.state_dict())).compute(), whole.compute())
    for back in (pickle.loads(pickle.dumps(whole)), copy.copy(whole), cls().load_state_dict(whole.state_dict()),
                 whole.sync()):  # one process: sync changes nothing
        assert type(back) is cls and _same(back.compute(), whole.compute())
    with pytest.raises(InputError, match="itself"):
        whole.merge(whole)
    other = SmiycPixelMetric if cls is AnomalyMetrics else AnomalyMetrics
    with pytest.raises(InputError, match=f"can only merge another {cls.__name__}"):
        whole.merge(other())
    with pytest.raises(InputError, match="ignore_index"):
        whole.merge(cls(ignore_index=254))
    whole.reset()
    assert _same(whole.compute(), cls().compute()) and whole.compute()["images"] == 0


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
def test_missing_class(cls: type) -> None:
    m = cls()
    assert m.summary()[1] is None and m.compute()["reason"]
    s, y = _frames(1)[0]
    y = np.where(y == 1, 0, y).astype(np.uint8)  # inliers only
    m.update(s, y)
    assert m.compute()["reason"] and math.isnan(m.compute()["auroc"]) and math.isnan(m.best_f1_threshold())
    with pytest.raises(InputError, match="no curves"):
        m.curves()
    res, cur = m.summary()
    assert cur is None and _same(res, m.compute())


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
def test_prepared_labels_are_checked(cls: type) -> None:
    s, y = _frames(1)[0]
    m = cls()
    with pytest.raises(InputError, match="does not match labels shape"):
        m.update(s[:10], FrameLabels(y))
    with pytest.raises(InputError, match="ignore_index 254"):
        m.update(s, FrameLabels(np.where(y == 255, 254, y), ignore_index=254))
    assert m.compute()["images"] == 0


def test_every_protocol_makes_a_pixel_metric() -> None:
    for name in PROTOCOLS:
        assert isinstance(pixel_metric(name), PixelMetric)


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
def test_refused_state_leaves_the_metric_as_it_was(cls: type) -> None:
    m = _fed(cls, _frames(seed=2))
    before = m.compute()
    bad = dict(m.state_dict())
    key = "n_pos" if cls is AnomalyMetrics else "num_pos"
    bad[key] += 1
    with pytest.raises(InputError, match="do not match|not the stated"):
        m.load_state_dict(bad)
    assert _same(m.compute(), before)
