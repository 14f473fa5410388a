"""AnomalyMetrics against scikit-learn (float64 reference) and the reference evaluation's fpr_at_95_tpr."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from sml.errors import InputError
from sml.metrics import FrameLabels
from sml.metrics import AnomalyMetrics, anomaly_metrics, keys_to_scores, scores_to_keys

TOL = 1e-9


# ---------------------------------------------------------------- independent references
def ref_fpr_at_95_tpr(preds: np.ndarray, labels: np.ndarray) -> float:
    """Literal copy of the reference evaluation's ``ood_metrics.fpr_at_95_tpr``."""
    fpr, tpr, _ = roc_curve(labels, preds)
    if all(tpr < 0.95):
        return 0
    elif all(tpr >= 0.95):
        idxs = [i for i, x in enumerate(tpr) if x >= 0.95]
        return min(map(lambda idx: fpr[idx], idxs))
    return np.interp(0.95, tpr, fpr)


def ref_fpr_threshold(preds: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """FPR and score at the highest threshold with TPR >= 0.95 (SegmentMeIfYouCan convention)."""
    fpr, tpr, thr = roc_curve(labels, preds, drop_intermediate=False)
    i = int(np.argmax(tpr >= 0.95))
    return float(fpr[i]), float(thr[i])


def ref_best_f1(preds: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    p, r, t = precision_recall_curve(labels, preds)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * p * r / (p + r)
    f1 = np.nan_to_num(f1[:-1], nan=-1.0)
    i = int(np.argmax(f1))
    return float(f1[i]), float(t[i])


def reference(scores: np.ndarray, labels: np.ndarray, ignore: int = 255) -> dict[str, float]:
    v = labels.reshape(-1) != ignore
    y, s = labels.reshape(-1)[v], np.asarray(scores, np.float32).reshape(-1)[v]
    out = {"auroc": roc_auc_score(y, s), "ap": average_precision_score(y, s), "fpr95": ref_fpr_at_95_tpr(s, y)}
    out["fpr95_threshold"], out["threshold_at_95tpr"] = ref_fpr_threshold(s, y)
    out["best_f1"], out["best_f1_threshold"] = ref_best_f1(s, y)
    return out


def assert_matches(res: dict, ref: dict, keys=("auroc", "ap", "fpr95", "fpr95_threshold", "threshold_at_95tpr",
                                               "best_f1")) -> None:
    for k in keys:
        assert abs(res[k] - ref[k]) <= TOL, (k, res[k], ref[k])


def random_case(rng: np.random.Generator, n: int, levels: int | None, pos_rate: float, void_rate: float):
    if levels is None:
        s = rng.normal(size=n).astype(np.float32)
    else:
        s = (rng.integers(0, levels, n) / levels - 0.5).astype(np.float32)
    y = (rng.random(n) < pos_rate).astype(np.uint8)
    s[y == 1] += np.float32(0.3)
    y[rng.random(n) < void_rate] = 255
    return s, y


# ---------------------------------------------------------------- exactness
@pytest.mark.parametrize("levels", [None, 2, 7, 100, 5000])
@pytest.mark.parametrize("pos_rate", [0.015, 0.3])
def test_matches_sklearn_random(levels, pos_rate):
    rng = np.random.default_rng(hash((levels, pos_rate)) % 2**32)
    s, y = random_case(rng, 20_000, levels, pos_rate, void_rate=0.1)
    m = AnomalyMetrics()
    for part in np.array_split(np.arange(s.size), 7):  # streaming in uneven pieces
        m.update(s[part], y[part])
    res = m.compute()
    assert_matches(res, reference(s, y))
    assert res["pixels"] == {"anomaly": int((y == 1).sum()), "inlier": int((y == 0).sum())}
    assert res["ignored"] == int((y == 255).sum())
    assert res["reason"] is None and res["fpr95_convention"] == "interpolated"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_matches_sklearn_hypothesis(data):
    n = data.draw(st.integers(2, 60))
    levels = data.draw(st.sampled_from([1, 2, 3, 10, 1000]))
    s = np.array(data.draw(st.lists(st.integers(0, levels - 1), min_size=n, max_size=n)), np.float32) / levels
    y = np.array(data.draw(st.lists(st.sampled_from([0, 1, 1, 255]), min_size=n, max_size=n)), np.uint8)
    v = y != 255
    if not ((y[v] == 1).any() and (y[v] == 0).any()):
        res = anomaly_metrics(s, y)
        assert math.isnan(res["auroc"]) and res["reason"]
        return
    assert_matches(anomaly_metrics(s, y), reference(s, y))


def test_all_equal_scores():
    y = np.array([0, 1, 0, 0, 1, 0, 255], np.uint8)
    s = np.full(y.shape, 0.25, np.float32)
    res = anomaly_metrics(s, y)
    assert_matches(res, reference(s, y))
    assert res["auroc"] == 0.5 and res["fpr95_threshold"] == 1.0


def test_single_positive():
    rng = np.random.default_rng(3)
    s = rng.normal(size=1000).astype(np.float32)
    y = np.zeros(1000, np.uint8)
    y[17] = 1
    assert_matches(anomaly_metrics(s, y), reference(s, y))


def test_tpr_exactly_095():
    # 20 anomaly pixels, 19 above a block of inliers: the ROC curve has a point with TPR == 0.95 exactly
    pos = np.concatenate([np.linspace(5, 6, 19), [0.5]]).astype(np.float32)
    neg = np.concatenate([np.linspace(1, 4, 30), np.linspace(-1, 0.4, 50), [0.5, 0.5]]).astype(np.float32)
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(20, np.uint8), np.zeros(neg.size, np.uint8)])
    assert (roc_curve(y, s)[1] == 0.95).any()
    res = anomaly_metrics(s, y)
    ref = reference(s, y)
    assert_matches(res, ref)
    assert res["fpr95"] == pytest.approx(30 / 82, abs=1e-15)  # last point of the vertical run at TPR 0.95


def test_heavy_ties_across_classes_and_zero_sign():
    # -0.0 and +0.0 are the same score; scikit-learn ties them, so must we
    s = np.array([-0.0, 0.0, 0.0, -0.0, 1.0, 1.0, -1.0, -0.0], np.float32)
    y = np.array([1, 0, 1, 0, 0, 1, 0, 0], np.uint8)
    assert_matches(anomaly_metrics(s, y), reference(s, y))
    k = scores_to_keys(np.array([-np.inf, -2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0, np.inf], np.float32))
    assert np.all(np.diff(k[[0, 1, 2, 3, 5, 6, 7]]) > 0) and k[3] == k[4]
    vals = np.array([-3.5, -0.0, 0.0, 2.25, np.inf], np.float32)
    assert np.array_equal(keys_to_scores(scores_to_keys(vals)), vals + np.float32(0))


def test_float64_and_torch_inputs_use_float32_values():
    rng = np.random.default_rng(5)
    s64 = rng.normal(size=(2, 30, 40))
    y = (rng.random((2, 30, 40)) < 0.2).astype(np.uint8)
    ref = reference(s64.astype(np.float32), y)
    assert_matches(anomaly_metrics(s64, y), ref)
    assert_matches(anomaly_metrics(torch.from_numpy(s64), torch.from_numpy(y).long()), ref)
    res16 = anomaly_metrics(torch.from_numpy(s64).to(torch.bfloat16), torch.from_numpy(y))
    assert_matches(res16, reference(torch.from_numpy(s64).to(torch.bfloat16).float().numpy(), y))


# ---------------------------------------------------------------- undefined cases and errors
def test_no_positives_or_no_negatives_are_nan_with_reason():
    s = np.arange(10, dtype=np.float32)
    for y, word in [(np.zeros(10, np.uint8), "anomaly"), (np.ones(10, np.uint8), "inlier"),
                    (np.full(10, 255, np.uint8), "no evaluated")]:
        res = anomaly_metrics(s, y)
        for k in ("auroc", "ap", "fpr95", "fpr95_threshold", "threshold_at_95tpr"):
            assert math.isnan(res[k])
        assert word in res["reason"]
    assert AnomalyMetrics().compute()["reason"].startswith("no evaluated")
    m = AnomalyMetrics()
    m.update(s, np.zeros(10, np.uint8))
    assert math.isnan(m.best_f1_threshold())
    with pytest.raises(InputError, match="anomaly"):
        m.curves()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_an_error(bad):
    s = np.zeros((4, 4), np.float32)
    y = np.zeros((4, 4), np.uint8)
    y[0, 0] = 1
    s[2, 2] = bad
    m = AnomalyMetrics()
    m.update(np.ones(3, np.float32), np.array([0, 1, 0], np.uint8))
    before = m.compute()
    with pytest.raises(InputError, match="NaN or infinite"):
        m.update(s, y)
    assert m.compute() == before  # a rejected update leaves the state untouched
    y[2, 2] = 255  # ignored pixels may hold anything
    assert not math.isnan(anomaly_metrics(s, y)["auroc"])


def test_bad_labels_and_shapes():
    s = np.zeros((3, 3), np.float32)
    with pytest.raises(InputError, match=r"value\(s\) 2"):
        AnomalyMetrics().update(s, np.full((3, 3), 2, np.uint8))
    with pytest.raises(InputError, match="7"):
        AnomalyMetrics().update(s, np.array([[0, 1, 7]] * 3, np.int64))
    with pytest.raises(InputError, match="does not match"):
        AnomalyMetrics().update(s, np.zeros((3, 4), np.uint8))
    with pytest.raises(InputError, match="B x H x W"):
        AnomalyMetrics().update(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3), np.uint8))
    with pytest.raises(InputError, match="integers"):
        AnomalyMetrics().update(s, np.full((3, 3), 0.5))
    with pytest.raises(InputError):
        AnomalyMetrics(ignore_index=1)


def test_custom_ignore_index():
    rng = np.random.default_rng(9)
    s, y = random_case(rng, 3000, 20, 0.2, 0.2)
    y2 = y.astype(np.int16)
    y2[y == 255] = -1
    assert_matches(anomaly_metrics(s, y2, ignore_index=-1), reference(s, y))


# ---------------------------------------------------------------- merging, pickling, order
def test_merge_and_order_give_identical_results():
    rng = np.random.default_rng(11)
    frames = [random_case(rng, 4000, 50, 0.05, 0.05) for _ in range(6)]
    whole = AnomalyMetrics()
    for s, y in frames:
        whole.update(s, y)
    a, b = AnomalyMetrics(), AnomalyMetrics()
    for i, (s, y) in enumerate(frames[::-1]):
        (a if i % 2 else b).update(s, y)
    a.compute()  # a consolidated state must still merge correctly
    merged = pickle.loads(pickle.dumps(b)).merge(pickle.loads(pickle.dumps(a)))
    r1, r2 = whole.compute(), merged.compute()
    assert r1 == r2  # bit-identical, NaN-free here
    # adding after compute keeps working
    s, y = random_case(rng, 500, None, 0.1, 0.0)
    whole.update(s, y)
    merged.update(s, y)
    assert whole.compute() == merged.compute()
    with pytest.raises(InputError):
        whole.merge(whole)


def test_copies_are_independent():
    import copy

    rng = np.random.default_rng(12)
    s, y = random_case(rng, 5000, None, 0.1, 0.1)
    a = AnomalyMetrics()
    a.update(s[:2500], y[:2500])
    for b in (copy.copy(a), copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        b.update(s[2500:], y[2500:])  # grows b's buffer; a must not see it
        assert_matches(b.compute(), reference(s, y))
    assert a.compute()["pixels"]["anomaly"] == int((y[:2500] == 1).sum())
    assert_matches(a.compute(), reference(s[:2500], y[:2500]))
    assert a.nbytes >= 4 * int((y[:2500] != 255).sum())


def test_curves_exact_and_reduced():
    rng = np.random.default_rng(17)
    s, y = random_case(rng, 30_000, 3000, 0.05, 0.0)
    m = AnomalyMetrics()
    m.update(s, y)
    full = m.curves(max_points=10**9)
    roc = full["roc"]
    # the lossless curve has the exact area and is made of scikit-learn's points (its corners)
    assert abs(np.trapezoid(roc["tpr"], roc["fpr"]) - roc_auc_score(y, s)) < 1e-12
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    sk = dict(zip(thr.tolist(), zip(fpr.tolist(), tpr.tolist())))
    for f, t_, th in zip(roc["fpr"], roc["tpr"], roc["threshold"]):
        assert sk[th] == pytest.approx((f, t_), abs=1e-15)
    p, r, t = precision_recall_curve(y, s)
    keep = np.isin(t, full["pr"]["threshold"])
    assert np.allclose(p[:-1][keep], full["pr"]["precision"], atol=1e-15)
    assert np.allclose(r[:-1][keep], full["pr"]["recall"], atol=1e-15)
    for k in (3, 4, 5, 8, 51, 200):
        small = m.curves(max_points=k)
        for name, (a, b) in {"roc": ("fpr", "tpr"), "pr": ("recall", "precision")}.items():
            c = small[name]
            assert 2 <= c[a].size <= k and c[a].size == c[b].size == c["threshold"].size
            assert c[a][0] == full[name][a][0] and c[a][-1] == full[name][a][-1]
            assert c[b][0] == full[name][b][0] and c[b][-1] == full[name][b][-1]
            # every kept point is a point of the exact curve, with its threshold
            exact = set(zip(full[name][a].tolist(), full[name][b].tolist(), full[name]["threshold"].tolist()))
            assert set(zip(c[a].tolist(), c[b].tolist(), c["threshold"].tolist())) <= exact
    assert np.all(np.diff(small["roc"]["fpr"]) >= 0) and np.all(np.diff(small["roc"]["tpr"]) >= 0)
    assert small["roc"]["threshold"][0] == np.inf
    # the reduced curve is close to the exact one everywhere
    grid = np.linspace(0, 1, 1001)
    assert np.max(np.abs(np.interp(grid, small["roc"]["fpr"], small["roc"]["tpr"])
                         - np.interp(grid, roc["fpr"], roc["tpr"]))) < 0.02


# ---------------------------------------------------------------- scale (still exact)
@pytest.mark.slow
def test_two_frames_2048x1024_match_sklearn():
    rng = np.random.default_rng(23)
    m = AnomalyMetrics()
    ss, yy = [], []
    for _ in range(2):
        s = rng.normal(size=(1024, 2048)).astype(np.float32)
        y = (rng.random((1024, 2048)) < 0.015).astype(np.uint8)
        s[y == 1] += 1.5
        y[:40] = 255
        m.update(s, y)
        ss.append(s)
        yy.append(y)
    assert_matches(m.compute(), reference(np.stack(ss), np.stack(yy)))


def test_update_frame_ap_equals_update_and_sklearn_ap():
    """update(frame_ap=True), with raw or prepared labels, adds exactly what update adds and returns the frame's AP."""
    from sklearn.metrics import average_precision_score

    from sml.metrics import FrameLabels

    rng = np.random.default_rng(7)
    a, b = AnomalyMetrics(), AnomalyMetrics()
    for i in range(4):
        s = rng.normal(size=(23, 31)).astype(np.float32)
        s[rng.random(s.shape) < 0.3] = 0.5  # ties across classes
        s[0, 0] = -0.0
        y = (rng.random(s.shape) < 0.2).astype(np.uint8)
        y[rng.random(s.shape) < 0.1] = 255
        ap = b.update(s, FrameLabels(y) if i % 2 else y, frame_ap=True)
        a.update(s, y)
        one = AnomalyMetrics()
        one.update(s, y)
        assert ap == one.compute()["ap"]
        keep = y != 255
        assert ap == pytest.approx(average_precision_score(y[keep] == 1, s[keep]), abs=1e-12)
    ra, rb = a.compute(), b.compute()
    assert ra == rb
    # undefined per-frame AP: NaN, but the pixels still count
    assert math.isnan(b.update(np.ones((2, 2), np.float32), np.zeros((2, 2), np.uint8), frame_ap=True))
    assert b.n_neg == a.n_neg + 4


def test_update_rejects_bad_input_and_leaves_state():
    from sml.metrics import FrameLabels

    m = AnomalyMetrics()
    m.update(np.zeros((3, 3), np.float32), np.eye(3, dtype=np.uint8))
    before = m.compute()
    bad = np.zeros((3, 3), np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        m.update(bad, np.zeros((3, 3), np.uint8))
    bad[1, 2] = -np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        m.update(bad, np.zeros((3, 3), np.uint8))
    bad[1, 2] = np.inf  # ignored pixels may hold anything
    lab = np.zeros((3, 3), np.uint8)
    lab[1, 2] = 255
    with pytest.raises(InputError, match="does not match"):
        m.update(np.zeros((3, 4), np.float32), lab)
    with pytest.raises(InputError, match="value"):
        m.update(np.zeros((3, 3), np.float32), np.full((3, 3), 7, np.uint8))
    with pytest.raises(InputError, match="ignore_index"):
        m.update(np.zeros((3, 3), np.float32), FrameLabels(lab, ignore_index=99))
    assert m.compute() == before
    m.update(bad, lab)
    assert m.n_ignored == 1


def test_state_dict_parts_rebuild_the_whole(tmp_path):
    """Parts saved as state_dict() in resume chunks (npz + JSON, no pickle) merge back to exactly the full state."""
    from sml.pipelines.resume import read_chunk, write_chunk

    rng = np.random.default_rng(11)
    whole, part = AnomalyMetrics(), AnomalyMetrics()
    files = []
    for i in range(7):
        s = rng.normal(size=(9, 13)).astype(np.float32)
        y = (rng.random(s.shape) < 0.3).astype(np.uint8)
        y[0, :3] = 255
        whole.update(s, y)
        part.update(s, FrameLabels(y)) if i % 2 else part.update(s, y)
        if i in (1, 4, 6):
            files.append(tmp_path / f"c{i}.npz")
            write_chunk(files[-1], {"m": part.state_dict()})
            part = AnomalyMetrics()
    rebuilt = AnomalyMetrics()
    for f in files:
        rebuilt.merge(AnomalyMetrics.from_state_dict(read_chunk(f)["m"]))
    assert rebuilt.compute() == whole.compute()
    assert pickle.loads(pickle.dumps(whole)).compute() == whole.compute()
    bad = whole.state_dict()
    bad["n_pos"] += 1
    with pytest.raises(InputError, match="counts do not match"):
        AnomalyMetrics.from_state_dict(bad)


def _same_result(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (isinstance(v, float) and math.isnan(v) and math.isnan(b[k])) or v == b[k] for k, v in a.items())


@pytest.mark.parametrize("levels", [None, 300])
def test_summary_equals_compute_and_curves(levels):
    """summary() gives compute() and curves() exactly (> 2^16 distinct anomaly keys, several chunks to join)."""
    rng = np.random.default_rng(5)
    s, y = random_case(rng, 400_000, levels, 0.3, 0.02)
    ref, m = AnomalyMetrics(), AnomalyMetrics()
    for k in range(0, s.size, 100_000):
        ref.update(s[k:k + 100_000], y[k:k + 100_000])
        m.update(s[k:k + 100_000], y[k:k + 100_000])
    res, cur = m.summary(500)
    assert _same_result(res, ref.compute())
    want = ref.curves(500)
    for name in ("roc", "pr"):
        for k in want[name]:
            assert np.array_equal(cur[name][k], want[name][k]), (name, k)
    assert roc_auc_score(y[y != 255], s[y != 255]) == pytest.approx(res["auroc"], abs=1e-12)
    # a class missing: the curves are None, compute() says why
    m = AnomalyMetrics()
    m.update(s[:100], np.zeros(100, np.uint8))
    res, cur = m.summary()
    assert cur is None and res["reason"] and math.isnan(res["auroc"])


# ---------------------------------------------------------------- counted tables (compaction) and the device path
def _feed(frames, compact_at=None, split=None):
    m = AnomalyMetrics(compact_at=compact_at)
    for s, y in frames:
        m.update(s, y)
    return m


def _curves_equal(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[p][k], b[p][k]) for p in ("roc", "pr") for k in a[p])


EDGE_CASES = [
    # (scores, labels): hand-built ties across classes, signed zeros, one class at one value, extremes
    (np.array([-0.0, 0.0, 0.0, -0.0, 1.0, 1.0, -1.0, -0.0], np.float32), np.array([1, 0, 1, 0, 0, 1, 0, 0])),
    (np.full(9, 0.25, np.float32), np.array([0, 1, 0, 0, 1, 0, 255, 1, 0])),
    (np.array([3, 3, 3, 2, 2, 1, 1, 1, 0, 0], np.float32), np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 1])),
    (np.array([-3e38, 3e38, 1e-45, -1e-45, 0, 5, 5, 5], np.float32), np.array([0, 1, 1, 0, 0, 1, 0, 255])),
    (np.concatenate([np.linspace(5, 6, 19), [0.5], np.linspace(1, 4, 30), np.linspace(-1, 0.4, 50), [0.5, 0.5]])
     .astype(np.float32), np.concatenate([np.ones(20), np.zeros(82)])),
]


@pytest.mark.parametrize("case", range(len(EDGE_CASES)))
@pytest.mark.parametrize("compact_at", [1, 2, 3, 7, None])
def test_compacted_state_matches_sklearn_on_ties(case, compact_at):
    """Counting keys into tables at any point (down to every pixel) keeps every metric equal to scikit-learn's."""
    s, y = EDGE_CASES[case]
    y = y.astype(np.uint8)
    frames = [(s[i:i + 3], y[i:i + 3]) for i in range(0, s.size, 3)]  # several updates, compactions between
    m = _feed(frames, compact_at)
    if compact_at is not None and compact_at < int((y != 255).sum()):
        assert m.distinct > 0  # tables in use before compute()
    assert_matches(m.compute(), reference(s, y))
    full = m.curves(max_points=10**9)
    fpr, tpr, _ = roc_curve(y[y != 255], s[y != 255])
    assert abs(np.trapezoid(full["roc"]["tpr"], full["roc"]["fpr"]) - np.trapezoid(tpr, fpr)) < 1e-12


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_compaction_points_and_merge_order_do_not_change_results(data):
    """compute() and curves() are bit-identical whatever the compaction points, frame order and split into parts."""
    n_frames = data.draw(st.integers(1, 6))
    levels = data.draw(st.sampled_from([2, 5, 40, 10_000]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    frames = []
    for _ in range(n_frames):
        n = int(rng.integers(1, 40))
        s = (rng.integers(0, levels, n) / levels - 0.5).astype(np.float32)
        y = rng.choice(np.array([0, 0, 1, 255], np.uint8), n)
        frames.append((s, y))
    ref = _feed(frames)
    order = data.draw(st.permutations(range(n_frames)))
    parts = data.draw(st.integers(1, 3))
    ms = [AnomalyMetrics(compact_at=data.draw(st.integers(1, 50))) for _ in range(parts)]
    for j, i in enumerate(order):
        ms[j % parts].update(*frames[i])
        if data.draw(st.booleans()):
            ms[j % parts].compute()  # compacts everything pending; more updates follow
    total = ms[-1]
    for m in ms[-2::-1]:
        total.merge(AnomalyMetrics.from_state_dict(m.state_dict()) if data.draw(st.booleans()) else m)
    r1, r2 = ref.compute(), total.compute()
    assert _same_result(r1, r2)
    if r1["reason"] is None:
        assert _curves_equal(ref.curves(40), total.curves(40))


def test_counted_state_dict_round_trip_and_old_format(tmp_path):
    from sml.pipelines.resume import read_chunk, write_chunk

    rng = np.random.default_rng(21)
    s, y = random_case(rng, 5000, 200, 0.1, 0.1)
    m = AnomalyMetrics(compact_at=700)
    for k in range(0, s.size, 400):
        m.update(s[k:k + 400], y[k:k + 400])
    st_ = m.state_dict()
    assert st_["table_keys"].size and st_["keys"].size  # both counted and pending pixels
    write_chunk(tmp_path / "c.npz", {"m": st_})
    back = AnomalyMetrics.from_state_dict(read_chunk(tmp_path / "c.npz")["m"])
    assert back.compact_at == 700
    assert _same_result(back.compute(), m.compute()) and _curves_equal(back.curves(), m.curves())
    assert_matches(back.compute(), reference(s, y))
    # a state written before the tables existed (only the key multisets) loads as pending keys
    v = y != 255
    old = {"ignore_index": 255, "keys": scores_to_keys(s[v]), "pos_keys": scores_to_keys(s[y == 1]),
           "n_pos": int((y == 1).sum()), "n_neg": int((y == 0).sum()), "n_ignored": int((~v).sum()), "images": 1}
    assert_matches(AnomalyMetrics.from_state_dict(old).compute(), reference(s, y))
    # inconsistent tables are refused
    bad = dict(st_, table_keys=st_["table_keys"][::-1].copy())
    with pytest.raises(InputError, match="strictly increasing"):
        AnomalyMetrics.from_state_dict(bad)
    bad = dict(st_, pos_table_keys=st_["pos_table_keys"] + 1, pos_table_counts=st_["pos_table_counts"])
    with pytest.raises(InputError, match="missing from the evaluated"):
        AnomalyMetrics.from_state_dict(bad).compute()
    with pytest.raises(InputError, match="compact_at"):
        AnomalyMetrics(compact_at=0)


def test_counts_beyond_uint32_switch_to_int64():
    """Tables hold uint32 counts until a state reaches 2**32 pixels; merging past it widens them, nothing wraps."""
    big = 2_500_000_000
    k = scores_to_keys(np.array([0.5, 2.0], np.float32))
    part = {"ignore_index": 255, "keys": _EMPTY32(), "pos_keys": _EMPTY32(), "table_keys": k,
            "table_counts": np.array([big - 1000, 1000], np.uint32), "pos_table_keys": k[1:],
            "pos_table_counts": np.array([1000], np.uint32), "n_pos": 1000, "n_neg": big - 1000, "n_ignored": 0,
            "images": 1}
    a = AnomalyMetrics.from_state_dict(part)
    assert a.state_dict()["table_counts"].dtype == np.uint32
    a.merge(AnomalyMetrics.from_state_dict(part))
    assert a.state_dict()["table_counts"].dtype == np.int64
    res = a.compute()
    assert res["pixels"] == {"anomaly": 2000, "inlier": 2 * big - 2000} and res["auroc"] == 1.0
    assert res["ap"] == 1.0 and res["fpr95"] == 0.0


def _EMPTY32():
    return np.empty(0, np.int32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_device_path_on_cpu_tensors(monkeypatch, dtype):
    """The accelerator path (torch keys, masked, sorted and counted on the tensor's device, compact tables copied
    to the host) equals the NumPy path."""
    import sml.utils.device

    rng = np.random.default_rng(8)
    s = torch.from_numpy(rng.normal(size=(3, 20, 30))).to(dtype)
    s[0, 0, :4] = torch.tensor([-0.0, 0.0, -0.0, 0.0], dtype=dtype)
    y = (rng.random((3, 20, 30)) < 0.2).astype(np.uint8)
    y[:, :2] = 255
    host = AnomalyMetrics()
    host.update(s, y)  # CPU tensor: the NumPy path
    monkeypatch.setattr(sml.utils.device, "DEVICE_PATH_ON_CPU", True)
    dev = AnomalyMetrics(compact_at=1000)
    dev.update(s[:2], torch.from_numpy(y[:2]))     # batch with tensor labels
    fl = FrameLabels(torch.from_numpy(y[2]))        # labels already on the device: their mask is made there
    ap = dev.update(s[2], fl, frame_ap=True)
    assert fl._keep_on and ap == pytest.approx(average_precision_score(y[2][y[2] != 255],
                                                                       s[2].float().numpy()[y[2] != 255]))
    assert _same_result(dev.compute(), host.compute())
    assert_matches(dev.compute(), reference(s.float().numpy(), y))
    bad = s[0].clone()
    bad[5, 5] = float("nan")
    with pytest.raises(InputError, match="1 NaN or infinite"):
        dev.update(bad, y[0])
    with pytest.raises(InputError, match="real numbers"):
        dev.update(torch.zeros(20, 30, dtype=torch.complex64), y[0])
    with pytest.raises(InputError, match="does not match"):
        dev.update(s[0, :10], y[0])
    assert dev.images == 3


def test_counted_tables_never_exceed_four_bytes_a_pixel():
    """Distinct scores cost 4 B (seen once) or 8 B (repeated, so >= 2 pixels): never more than the key multiset."""
    rng = np.random.default_rng(4)
    for s in (rng.normal(size=60_000).astype(np.float32),                 # nearly all distinct
              np.round(rng.normal(size=60_000), 1).astype(np.float32)):   # ~80 distinct values
        y = (rng.random(s.size) < 0.05).astype(np.uint8)
        m = AnomalyMetrics(compact_at=7000)
        for k in range(0, s.size, 5000):
            m.update(s[k:k + 5000], y[k:k + 5000])
        m.compute()  # everything counted, the buffer released
        assert m._buf.size == 0 and m.nbytes <= 4 * (s.size + int(y.sum()))
        assert m.distinct == np.unique(s).size
    # repeated scores: bytes follow the distinct values (8 B each), not the pixels
    assert m.nbytes <= 8 * (np.unique(s).size + np.unique(s[y == 1]).size) < 2000
    assert_matches(m.compute(), reference(s, y))
