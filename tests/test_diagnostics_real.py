"""ClassDiagnostics on real frames: ERFNet on Road Anomaly, statistics from a real Cityscapes frame.

The counts and histograms must equal a direct NumPy computation (argmax / max
of the logits in NumPy, np.histogram per class); the AUROCs read from the
histograms must agree with the exact pooled AUROCs of AnomalyMetrics.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

N_FRAMES = 3


@pytest.fixture(scope="module")
def real(shared, erfnet_weights):
    import torch

    import sml
    from sml.data import open_dataset

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    model = sml.models.load("erfnet", weights=erfnet_weights)
    # honest statistics for this network: its own max logits on a real Cityscapes training frame
    city = open_dataset(f"cityscapes:{shared / 'data/cityscapes_mini'}", split="train", allow_subset=True)
    stats = sml.ClassStatistics(19, model=model.identity)  # named after their network: eval pairs them
    with torch.no_grad():
        stats.update(model.predict(city[0].image))
    ra = open_dataset(f"road-anomaly:{shared / 'data/road_anomaly/RoadAnomaly_jpg'}")
    frames = []
    scorer = sml.SML(stats)
    for i in np.linspace(0, len(ra) - 1, N_FRAMES).round().astype(int):
        s = ra[int(i)]
        with torch.no_grad():
            logits = model.predict(s.image, output_size=s.labels.shape)
        frames.append((logits, s.labels, scorer(logits)))
    return stats, frames


def test_diagnostics_equal_numpy_on_road_anomaly(real):
    from sml.diagnostics import MAX_LOGIT_BINS, SML_BINS, ClassDiagnostics
    from sml.metrics import AnomalyMetrics

    stats, frames = real
    diag = ClassDiagnostics(stats=stats)
    exact = {"max_logit": AnomalyMetrics(), "sml": AnomalyMetrics()}
    ref = {k: np.zeros((2, 19, b.size), np.int64) for k, b in (("max_logit", MAX_LOGIT_BINS), ("sml", SML_BINS))}
    for logits, labels, score in frames:
        diag.update(logits, labels, score)  # the same forward pass: logits -> max / argmax inside
        x = logits[0].numpy()
        pred, ml, sml_map = x.argmax(axis=0), x.max(axis=0).astype(np.float64), score[0].numpy().astype(np.float64)
        for kind in (0, 1):
            for c in range(19):
                sel = (pred == c) & (labels == kind)
                for key, v, b in (("max_logit", ml, MAX_LOGIT_BINS), ("sml", sml_map, SML_BINS)):
                    vals = v[sel]
                    inner, _ = np.histogram(vals[(vals >= b.lo) & (vals < b.hi)], bins=b.count, range=(b.lo, b.hi))
                    ref[key][kind, c] += np.r_[np.count_nonzero(vals < b.lo), inner, np.count_nonzero(vals >= b.hi)]
        exact["max_logit"].update(-ml.astype(np.float32), labels)
        exact["sml"].update(score[0].numpy(), labels)
    assert np.array_equal(diag.max_logit_hist, ref["max_logit"])
    assert np.array_equal(diag.sml_hist, ref["sml"])
    n_anom = sum(int((lab == 1).sum()) for _, lab, _ in frames)
    assert diag.anomaly_pixels.sum() == n_anom > 0
    assert diag.inlier_pixels.sum() == sum(int((lab == 0).sum()) for _, lab, _ in frames)
    s = diag.compute()
    for key in ("max_logit", "sml"):  # one bin's ties at most: the histograms' AUROC is the measured one
        assert abs(s["pooled"]["binned_auroc"][key] - exact[key].compute()["auroc"]) < 0.005
    top = max(s["classes"], key=lambda c: c["anomaly_pixels"])
    assert top["train_mean"] == pytest.approx(float(stats.mean[top["id"]]))
    json.dumps(diag.to_json(), allow_nan=False)  # strict JSON: no NaN / Infinity tokens


def test_eval_report_writes_diagnostics_of_the_pooled_pixels(real, shared, erfnet_weights, tmp_path):
    """`sml eval --report` on Road Anomaly frames: diagnostics.json counts exactly metrics.json's pixels."""
    from sml.cli.main import main

    stats, _ = real
    stats.save(tmp_path / "stats.json")
    out = tmp_path / "run"
    assert main(["eval", "--model", "erfnet", "--weights", str(erfnet_weights), "--stats", str(tmp_path / "stats.json"),
                 "--data", f"road-anomaly:{shared / 'data/road_anomaly/RoadAnomaly_jpg'}", "--limit", str(N_FRAMES),
                 "--method", "sml,max_logit", "--out", str(out), "--report"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    diag = json.loads((out / "diagnostics.json").read_text())
    classes = diag["classes"]
    assert sum(c["anomaly_pixels"] for c in classes) == metrics["pixels"]["anomaly"] > 0
    assert sum(c["inlier_pixels"] for c in classes) == metrics["pixels"]["inlier"] > 0
    assert diag["frames"] == metrics["frames"] == N_FRAMES
    assert "diagnostics.json" in json.loads((out / "run.json").read_text())["files"]
    html = (out / "report" / "index.html").read_text()
    assert 'id="sec-diagnostics"' in html and (out / "report" / "img" / "diagnostics.png").is_file()
