"""sml.protocols: hand-built cases of the SMIYC binned metric, state round trips, and `exact` = scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from sml.errors import InputError
from sml.protocols import PROTOCOLS, SmiycPixelMetric, get_protocol, headline, pixel_metric
from sml.metrics.smiyc_bins import _quantiles, frame_bins


def _frame(scores, labels):
    return np.asarray(scores, np.float32)[None, :], np.asarray(labels, np.uint8)[None, :]


def test_perfect_separation_by_hand() -> None:
    # edges -0.03, 0, 1, 2, 3, 3.03 (eps = 0.01 * range); curve (fpr, tpr): (0,0) (0,.5) (0,1) (.5,1) (1,1)
    m = SmiycPixelMetric()
    m.update(*_frame([0, 1, 2, 3], [0, 0, 1, 1]))
    r = m.compute()
    assert (r["auroc"], r["ap"], r["fpr95"], r["best_f1"], r["best_f1_threshold"]) == (1.0, 1.0, 0.0, 1.0, 2.0)
    b = frame_bins(np.array([0, 1, 2, 3], np.float16), np.array([0, 0, 1, 1], bool))
    np.testing.assert_allclose(b["thresholds"], [3, 2, 1, 0, -0.03])
    assert b["tp_rel"].tolist() == [1, 1, 0, 0, 0] and b["fp_rel"].tolist() == [0, 0, 1, 1, 0]


def test_tie_by_hand() -> None:
    # bins [0,1) inlier, [1,2) one of each, [2,2.02] anomaly: AUROC .875, AP .5 + .5 * 2/3,
    # FPR at the first point with TPR >= .95 is .5, best F1 = 2*2 / (2*2 + 1) at threshold 1
    m = SmiycPixelMetric()
    m.update(*_frame([0, 1, 1, 2], [0, 1, 0, 1]))
    r = m.compute()
    assert r["auroc"] == pytest.approx(0.875, abs=1e-15)
    assert r["ap"] == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-15)
    assert r["fpr95"] == 0.5 and r["best_f1"] == pytest.approx(0.8) and r["best_f1_threshold"] == 1.0
    assert r["protocol"] == "smiyc" and r["fpr95_convention"] == "threshold" and r["notes"]


def test_binning_differs_from_exact_on_large_frames() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random((60, 80)) < 0.2).astype(np.uint8)
    s = rng.normal(size=y.shape) + 1.2 * y
    m = SmiycPixelMetric()
    m.update(s, y)
    r = m.compute()
    s16 = s.astype(np.float16).astype(np.float64).ravel()
    exact = roc_auc_score(y.ravel(), s16)
    assert r["auroc"] != exact and abs(r["auroc"] - exact) < 2e-3  # 768 bins for 4800 pixels


def test_float16_rounding_and_void() -> None:
    m = SmiycPixelMetric()
    m.update(np.array([[0.1, 0.2, 7.0, 0.3]]), np.array([[0, 1, 255, 0]], np.uint8))
    assert m.compute()["ignored"] == 1
    with pytest.raises(InputError, match="float16"):
        m.update(np.array([[1e6, 0.0]]), np.array([[1, 0]], np.uint8))
    with pytest.raises(InputError, match="labels must be"):
        m.update(np.array([[1.0, 0.0]]), np.array([[2, 0]], np.uint8))


def test_missing_class_reason() -> None:
    m = SmiycPixelMetric()
    m.update(*_frame([0.1, 0.2], [0, 0]))
    r = m.compute()
    assert math.isnan(r["auroc"]) and "no anomaly pixel" in r["reason"]
    assert math.isnan(m.best_f1_threshold())  # as AnomalyMetrics (the PixelMetric convention)
    with pytest.raises(InputError, match="no curves"):
        m.curves()


def test_merge_and_state_dict_equal_one_pass() -> None:
    rng = np.random.default_rng(0)
    frames = [((rng.normal(size=(20, 30)) + 2 * (y := (rng.random((20, 30)) < 0.3))), y.astype(np.uint8))
              for _ in range(4)]
    one = SmiycPixelMetric()
    for s, y in frames:
        one.update(s, y)
    a, b = SmiycPixelMetric(), SmiycPixelMetric()
    for s, y in frames[:2]:
        a.update(s, y)
    for s, y in frames[2:]:
        b.update(s, y)
    a.merge(b)
    st_ = a.state_dict()
    assert all(isinstance(v, (int, str, np.ndarray)) for v in st_.values())
    c = SmiycPixelMetric().load_state_dict({k: (np.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in st_.items()})
    ref = one.compute()
    for m in (a, c):
        got = m.compute()
        for k in ("auroc", "ap", "fpr95", "best_f1", "best_f1_threshold"):
            assert got[k] == ref[k], k
    assert c.nbytes <= 4 * 769 * 24  # small by construction: at most 769 bins per frame
    with pytest.raises(InputError):
        SmiycPixelMetric().load_state_dict({"protocol": "exact"})


def test_best_f1_threshold_is_float16() -> None:
    m = SmiycPixelMetric()
    m.update(*_frame([0.1, 0.3333, 0.7, 0.9], [0, 1, 0, 1]))
    t = m.best_f1_threshold()
    assert float(np.float16(t)) == t


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-200, 200), min_size=1, max_size=300), st.integers(1, 384))
def test_quantiles_match_numpy_when_differences_are_exact(values, k) -> None:
    # small integers: float16 differences are exact, so NumPy's float64 quantile is the reference
    x = np.sort(np.array(values, np.float32))
    np.testing.assert_array_equal(_quantiles(x, k), np.quantile(x.astype(np.float64), np.linspace(0, 1, k)))


def test_registry() -> None:
    assert set(PROTOCOLS) == {"exact", "sml-reference", "fishyscapes", "smiyc"}
    with pytest.raises(InputError, match="choose one of"):
        get_protocol("cityscapes")
    assert isinstance(pixel_metric("smiyc"), SmiycPixelMetric)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.booleans()), min_size=2, max_size=120))
def test_exact_and_sml_reference_equal_sklearn(pairs) -> None:
    s = np.array([p[0] for p in pairs], np.float32) / 4
    y = np.array([p[1] for p in pairs], np.uint8)
    if y.min() == y.max():
        return
    for name in ("exact", "sml-reference", "fishyscapes"):
        m = pixel_metric(name)
        m.update(s[None, :], y[None, :])
        r = headline(name, m.compute())
        assert r["protocol"] == name
        assert r["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert r["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_fishyscapes_headline_is_threshold_fpr() -> None:
    m = pixel_metric("fishyscapes")
    s = np.array([[0.1, 0.4, 0.35, 0.8, 0.2, 0.7]], np.float32)
    y = np.array([[0, 0, 1, 1, 0, 1]], np.uint8)
    m.update(s, y)
    raw = m.compute()
    r = headline("fishyscapes", raw)
    assert r["fpr95"] == raw["fpr95_threshold"] and r["fpr95_interpolated"] == raw["fpr95"]
    assert r["fpr95_convention"] == "threshold"


def test_pipeline_calls() -> None:
    rng = np.random.default_rng(1)
    m = SmiycPixelMetric()
    frames = [(rng.normal(size=(8, 9)) + (y := (rng.random((8, 9)) < 0.3)), y.astype(np.uint8)) for _ in range(3)]
    for s, y in frames:
        m.update(s, y)
    whole = SmiycPixelMetric()
    for s, y in frames:
        whole.update(s, y)
    # a resume chunk per frame (plain state dicts), merged back in order
    first = SmiycPixelMetric()
    for s, y in frames:
        part = SmiycPixelMetric()
        part.update(s, y)
        first.merge(SmiycPixelMetric().load_state_dict(part.state_dict()))
    assert first.compute()["ap"] == whole.compute()["ap"]
    r, curves = m.sync().summary(50)
    assert r["auroc"] == whole.compute()["auroc"] and curves["roc"]["fpr"][0] == 0 and curves["roc"]["tpr"][-1] == 1
