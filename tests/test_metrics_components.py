"""ComponentMetrics against a slow, literal per-component implementation of spec section 6."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from sml.errors import InputError
from sml.metrics import SIOU_THRESHOLDS, AnomalyMetrics, ComponentMetrics, component_metrics, frame_components


# ---------------------------------------------------------------- the straightforward reference
def ref_frame(anomaly, labels, t, s_pred, s_gt):
    """Spec 6 steps 1-3 written out one component at a time with whole-frame masks (slow on purpose)."""
    labels = labels.copy()
    pred = (anomaly > t) & (labels != 255)
    structure = np.ones((3, 3), dtype=int)
    gt_inst, n_gt = ndimage.label(labels == 1, structure)
    pred_inst, n_pred = ndimage.label(pred, structure)
    for c in range(1, n_pred + 1):
        if np.sum(pred_inst == c) < s_pred:
            pred_inst[pred_inst == c] = 0
    for c in range(1, n_gt + 1):
        if np.sum(gt_inst == c) < s_gt:
            labels[gt_inst == c] = 255
    roi = labels < 255
    g, p = gt_inst[roi], pred_inst[roi]
    siou_gt = []
    for k in np.unique(g[g > 0]):
        in_k = g == k
        P = np.isin(p, np.unique(p[in_k & (p > 0)]))
        inter = np.sum(in_k & P)
        union = np.sum(in_k | P)
        adjust = np.sum(P & ~np.isin(g, [0, k]))
        siou_gt.append(inter / (union - adjust))
    siou_pred, prec = [], []
    for j in np.unique(p[p > 0]):
        in_j = p == j
        G = np.isin(g, np.unique(g[in_j & (g > 0)]))
        inter = np.sum(in_j & G)
        union = np.sum(in_j | G)
        adjust = np.sum(G & ~np.isin(p, [0, j]))
        siou_pred.append(inter / (union - adjust))
        prec.append(inter / np.sum(in_j))
    return np.array(siou_gt), np.array(siou_pred), np.array(prec)


def ref_summary(frames):
    sg = np.concatenate([f[0] for f in frames])
    pr = np.concatenate([f[2] for f in frames])
    f1 = []
    for tau in np.linspace(0.25, 0.75, 11):
        tp, fn, fp = np.sum(sg >= tau), np.sum(sg < tau), np.sum(pr < tau)
        f1.append(2 * tp / (2 * tp + fn + fp))
    return {"siou": sg.mean(), "ppv": pr.mean(), "mean_f1": np.mean(f1)}


def check_frame(a, y, t, s_pred, s_gt):
    got = frame_components(a, y, t, s_pred, s_gt)
    ref = ref_frame(a, y, t, s_pred, s_gt)
    for g, r in zip((got["siou_gt"], got["siou_pred"], got["precision_pred"]), ref):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-12)
    return ref


# ---------------------------------------------------------------- hand-checked cases
def test_hand_example():
    y = np.zeros((8, 12), np.uint8)
    y[1:4, 1:4] = 1          # GT k1: 9 px
    y[1:4, 6:9] = 1          # GT k2: 9 px
    y[6, 0] = 255
    a = np.zeros((8, 12), np.float32)
    a[2, 2:8] = 1            # one predicted component over both k1 (2 px), k2 (2 px) and 2 px between
    a[6:8, 10:12] = 1        # a false positive: 4 px
    got = frame_components(a, y, 0.5, 1, 1)
    # k1: I = 2, |P| = 6, A = 2 (the part on k2) -> 2 / (6 + 9 - 2 - 2)
    np.testing.assert_allclose(got["siou_gt"], [2 / 11, 2 / 11])
    # j1: G = k1 + k2 (18 px), I = 4, no other prediction on them -> 4 / (18 + 6 - 4); precision 4/6
    np.testing.assert_allclose(got["siou_pred"], [4 / 20, 0.0])
    np.testing.assert_allclose(got["precision_pred"], [4 / 6, 0.0])
    # strict threshold: a == t is not predicted
    assert frame_components(a, y, 1.0, 1, 1)["precision_pred"].size == 0


def test_diagonal_pixels_connect_and_sizes_filter():
    y = np.zeros((6, 6), np.uint8)
    y[0, 0] = y[1, 1] = 1      # one GT component under 8-connectivity, 2 px
    y[4, 4] = 1                # 1 px GT: void with s_gt = 2
    a = np.zeros((6, 6), np.float32)
    a[0, 0] = a[1, 1] = 1
    a[4, 4] = a[5, 5] = 1      # 2 px prediction, half of it on the voided GT pixel
    got = frame_components(a, y, 0.5, 2, 2)
    np.testing.assert_allclose(got["siou_gt"], [1.0])
    # the second prediction keeps only its pixel outside the void: |j| = 1, no GT -> precision 0
    np.testing.assert_allclose(got["precision_pred"], [1.0, 0.0])
    assert got["pred_size"].tolist() == [2, 1]
    assert frame_components(a, y, 0.5, 3, 2)["precision_pred"].size == 0  # both predictions under 3 px


def test_random_frames_match_reference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = (ndimage.gaussian_filter(rng.random((60, 80)), 3) > 0.53).astype(np.uint8)
        y[rng.random((60, 80)) < 0.02] = 255
        a = ndimage.gaussian_filter(rng.random((60, 80)), 2).astype(np.float32) + 0.05 * y
        check_frame(a, y, float(np.quantile(a, 0.7)), int(rng.integers(1, 30)), int(rng.integers(1, 30)))


def test_compute_no_components_and_errors():
    cm = ComponentMetrics("obstacle", threshold=0.5)
    assert (cm.min_pred_size, cm.min_gt_size) == (50, 10)
    cm.update(np.zeros((5, 5), np.float32), np.zeros((5, 5), np.uint8))
    r = cm.compute()
    assert math.isnan(r["siou"]) and math.isnan(r["ppv"]) and math.isnan(r["mean_f1"]) and r["reason"]
    assert r["components"] == {"gt": 0, "pred": 0} and r["taus"] == pytest.approx(list(SIOU_THRESHOLDS))
    with pytest.raises(InputError, match="track"):
        ComponentMetrics("lane")
    with pytest.raises(InputError, match="threshold"):
        ComponentMetrics().update(np.zeros((3, 3)), np.zeros((3, 3), np.uint8))
    with pytest.raises(InputError, match="NaN"):
        ComponentMetrics(threshold=float("nan"))
    with pytest.raises(InputError, match="value"):
        ComponentMetrics(threshold=0).update(np.zeros((3, 3)), np.full((3, 3), 3, np.uint8))


# ---------------------------------------------------------------- real SegmentMeIfYouCan masks
def _smiyc_frames(shared: Path, track_dir: str, limit: int | None = None):
    files = sorted((shared / "data" / "smiyc" / track_dir / "labels_masks").glob("*_labels_semantic.png"))
    assert files, f"no SMIYC masks under {shared}"
    return [np.array(Image.open(f)) for f in files[:limit]]


def _synthetic_scores(y: np.ndarray, rng: np.random.Generator, scale: int) -> np.ndarray:
    """A plausible detector: blurred, shifted, noisy ground truth plus a few false blobs."""
    gt = (y == 1).astype(np.float32)
    a = ndimage.gaussian_filter(np.roll(gt, (scale, -scale), axis=(0, 1)), 2 * scale)
    blobs = ndimage.gaussian_filter((rng.random(y.shape) < 3e-5).astype(np.float32), 3 * scale) * 60
    return (a + blobs + 0.15 * ndimage.gaussian_filter(rng.random(y.shape).astype(np.float32), scale)).astype(
        np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("track,folder,limit", [("anomaly", "dataset_AnomalyTrack", None),
                                                ("obstacle", "dataset_ObstacleTrack", 12)])
def test_smiyc_frames_match_reference(shared, track, folder, limit):
    rng = np.random.default_rng(7)
    labels = _smiyc_frames(shared, folder, limit)
    maps = [_synthetic_scores(y, rng, 3 if track == "anomaly" else 2) for y in labels]
    pix = AnomalyMetrics()
    for a, y in zip(maps, labels):
        pix.update(a, y)
    t = pix.best_f1_threshold()
    s_pred, s_gt = {"anomaly": (500, 100), "obstacle": (50, 10)}[track]
    refs = [check_frame(a, y, t, s_pred, s_gt) for a, y in zip(maps, labels)]
    cm = ComponentMetrics(track)
    for a, y in zip(maps, labels):
        cm.update(a, y, threshold=t)
    got = cm.compute()
    ref = ref_summary(refs)
    assert got["components"]["gt"] > len(labels) // 2 and got["components"]["pred"] > 0
    for k in ("siou", "ppv", "mean_f1"):
        assert got[k] == pytest.approx(ref[k], abs=1e-12), k
    assert got["threshold"] == t
    # the convenience function picks the same best-F1 threshold itself
    assert component_metrics(maps, labels, track=track)["mean_f1"] == pytest.approx(got["mean_f1"], abs=1e-15)


def test_merge_equals_sequential(shared):
    labels = _smiyc_frames(shared, "dataset_AnomalyTrack", 4)
    rng = np.random.default_rng(1)
    maps = [_synthetic_scores(y, rng, 3) for y in labels]
    whole = ComponentMetrics("anomaly", threshold=0.2)
    parts = [ComponentMetrics("anomaly", threshold=0.2) for _ in range(2)]
    for i, (a, y) in enumerate(zip(maps, labels)):
        whole.update(a, y)
        parts[i // 2].update(a, y)
    assert parts[0].merge(parts[1]).compute() == whole.compute()
    batch = ComponentMetrics("anomaly", threshold=0.2)
    batch.update(np.stack(maps), np.stack(labels))
    assert batch.compute() == whole.compute()


def test_state_pattern_round_trip_and_simulated_sync(monkeypatch, tmp_path):
    """ComponentMetrics: state_dict() through a resume chunk and a simulated 3-rank sync equal one process."""
    import sml.utils.distributed as dist
    from sml.pipelines.resume import read_chunk, write_chunk

    rng = np.random.default_rng(3)
    frames = []
    for _ in range(6):
        y = np.zeros((40, 50), np.uint8)
        y[5:15, 5:20] = 1
        y[30:, :5] = 255
        frames.append(((rng.random((40, 50)) + (y == 1)).astype(np.float32), y))
    whole = ComponentMetrics("obstacle", threshold=0.9)
    parts = [ComponentMetrics("obstacle", threshold=0.9) for _ in range(3)]
    for i, (s, y) in enumerate(frames):
        whole.update(s, y)
        parts[i // 2].update(s, y)
    write_chunk(tmp_path / "c.npz", {"c": parts[0].state_dict()})
    back = ComponentMetrics.from_state_dict(read_chunk(tmp_path / "c.npz")["c"])
    assert back.compute() == parts[0].compute()
    monkeypatch.setattr(dist, "is_distributed", lambda: True)
    monkeypatch.setattr(dist, "all_gather_object", lambda obj: [p.state_dict() for p in parts])
    synced = ComponentMetrics("obstacle", threshold=0.9).sync()
    assert synced.compute() == whole.compute()
    with pytest.raises(InputError, match="once"):
        synced.sync()
