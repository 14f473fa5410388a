"""`sml demo`: the scene generator, the run's explanation, a miniature run and the default run's promise."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from sml.demo.scenes import CLASS_IDS, street_scene, write_anomaly_set, write_cityscapes


def test_scenes_are_deterministic_varied_and_labelled() -> None:
    a = street_scene(np.random.default_rng(1), 160, 80)
    b = street_scene(np.random.default_rng(1), 160, 80)
    c = street_scene(np.random.default_rng(2), 160, 80)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])                    # another layout
    assert a[0].shape == (80, 160, 3) and a[0].dtype == np.uint8 and a[2] is None
    ids = set(CLASS_IDS.values())
    seen: set[int] = set()
    for i in range(12):
        image, lab, _ = street_scene(np.random.default_rng([9, i]), 160, 80)
        assert set(np.unique(lab)) <= ids
        seen |= set(np.unique(lab).tolist())
    assert seen == ids                                        # every class occurs somewhere


def test_anomalies_stand_on_the_road_in_depth_order() -> None:
    """Anomaly pixels are never painted over a nearer car or person, and stand on road pixels."""
    on_road, total = 0, 0
    for i in range(10):
        rng = np.random.default_rng([3, i])
        image, lab, anomaly = street_scene(rng, 256, 128, anomalies=3)
        assert anomaly is not None and set(np.unique(anomaly)) <= {0, 1, 255} and (anomaly == 1).any()
        # the label map keeps 0 ("unlabelled") under anomalies and real classes everywhere else
        assert (lab[anomaly == 1] == 0).all()
        # below the bottom of each object: road (or a nearer car / person / anomaly in front of it)
        comps, n = ndimage.label(anomaly == 1)
        for k in range(1, n + 1):
            ys, xs = np.nonzero(comps == k)
            y, x = ys.max() + 2, int(np.median(xs[ys == ys.max()]))
            if y < lab.shape[0]:
                total += 1
                on_road += int(lab[y, x] in (CLASS_IDS["road"], CLASS_IDS["car"], CLASS_IDS["person"], 0))
    assert total >= 20 and on_road / total > 0.85


def test_written_layouts_open_with_sml_data(tmp_path: Path) -> None:
    from sml.data import open_dataset

    write_cityscapes(tmp_path / "cs", {"train": 3, "val": 1}, width=64, height=32)
    write_anomaly_set(tmp_path / "an", 2, width=64, height=32)
    cs = open_dataset(f"cityscapes:{tmp_path / 'cs'}", split="train")
    assert len(cs) == 3
    s = cs.load(cs.frames[0])
    assert s.image.shape == (32, 64, 3) and set(np.unique(s.labels)) <= {0, 1, 2, 5, 7, 8, 9, 10, 11, 13}
    an = open_dataset(f"folder:{tmp_path / 'an'}")
    assert len(an) == 2 and set(np.unique(an.load(an.frames[0]).labels)) <= {0, 1, 255}
    lab = np.asarray(Image.open(next((tmp_path / "cs" / "gtFine" / "train").glob("*/*_labelIds.png"))))
    assert set(np.unique(lab)) <= set(CLASS_IDS.values())


def _stats(means: dict[int, float], stds: dict[int, float], counts: dict[int, int]):  # type: ignore[no-untyped-def]
    """ClassStatistics with exactly these per-class numbers (built from two pixels per class)."""
    from sml.stats import ClassStatistics

    s = ClassStatistics(19)
    for c, n in counts.items():
        # n/2 pixels at mu - sd' and n/2 at mu + sd' give mean mu and unbiased std sd
        k = n // 2
        spread = stds[c] * math.sqrt((2 * k - 1) / (2 * k))
        vals = np.r_[np.full(k, means[c] - spread), np.full(k, means[c] + spread)]
        s.update_from_predictions(np.full(2 * k, c), vals.astype(np.float64))
    return s


def _metrics(sml: tuple[float, float, float], ml: tuple[float, float, float]) -> dict:  # type: ignore[type-arg]
    keys = ("auroc", "ap", "fpr95")
    return {"methods": {"max_logit": dict(zip(keys, ml)), "sml": dict(zip(keys, sml))}}


def test_explanation_states_only_what_the_numbers_show() -> None:
    from sml.demo.run import Breakdown, explain

    road, person = 0, 11
    train = _stats({road: 10.0, person: 5.0}, {road: 1.0, person: 1.0}, {road: 10000, person: 1000})
    anomaly_low = _stats({road: 7.0}, {road: 1.0}, {road: 500})          # low for road, above person
    boundary = _stats({road: 6.0, person: 4.0}, {road: 1.0, person: 1.0}, {road: 800, person: 200})
    interior = _stats({road: 10.0, person: 5.0}, {road: 1.0, person: 1.0}, {road: 8000, person: 800})
    text = "\n".join(explain(_metrics((0.9, 0.3, 0.2), (0.8, 0.1, 0.5)), train,
                             Breakdown(anomaly_low, interior, boundary)))
    assert "road 10.0±1.0, person 5.0±1.0" in text
    assert "average a max logit of 7.0" in text and "road 100% (mean 7.0, z -3.0)" in text
    assert "low for road" in text and "(person)" in text and "standardizing per predicted class" not in text
    assert "boundaries" in text
    assert "SML improves on max_logit in AUROC, AP, FPR@95" in text and "Not improved" not in text
    assert "part of SML" not in text                      # no ablation measured: nothing said about it

    parts = {"standardized max logit": {"auroc": 0.85, "ap": 0.2},
             "+ boundary suppression": {"auroc": 0.87, "ap": 0.25}}
    text = "\n".join(explain(_metrics((0.9, 0.3, 0.2), (0.8, 0.1, 0.5)), train,
                             Breakdown(anomaly_low, interior, boundary, parts)))
    assert "Each part of SML adds to the AUROC: max_logit 80.0% -> standardized max logit 85.0% -> " \
           "+ boundary suppression 87.0% -> full SML 90.0% (AP 10.0% -> 20.0% -> 25.0% -> 30.0%)" in text
    parts["+ boundary suppression"]["auroc"] = 0.84
    text = "\n".join(explain(_metrics((0.9, 0.3, 0.2), (0.8, 0.1, 0.5)), train,
                             Breakdown(anomaly_low, interior, boundary, parts)))
    assert "Each part" not in text and "AUROC by part of SML: " in text
    assert "standardizing per predicted class alone lifts the AUROC from 80.0% to 85.0%" in text

    # anomalies as confident as road: no claim that they are low for their class; SML worse: said so
    anomaly_high = _stats({road: 10.5}, {road: 1.0}, {road: 500})
    text = "\n".join(explain(_metrics((0.7, 0.05, 0.6), (0.8, 0.1, 0.5)), train,
                             Breakdown(anomaly_high, interior, interior)))
    assert "low for road" not in text and "boundaries" not in text
    assert "SML improves" not in text and "Not improved in this run: AUROC, AP, FPR@95" in text


def test_demo_miniature_run_writes_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A miniature `sml demo --report` (few frames, few iterations): files, table, finite metrics, report."""
    from sml.cli.main import main
    from sml.demo import run_demo

    metrics = run_demo(tmp_path, iterations=6, train_frames=10, val_frames=2, anomaly_frames=3, report=True)
    assert list(metrics["methods"]) == ["msp", "max_logit", "entropy", "energy", "sml"]
    for m, r in metrics["methods"].items():
        for k in ("auroc", "ap", "fpr95"):
            assert 0 <= r[k] <= 1, (m, k)
    assert metrics["frames"] == 3 and metrics["pixels"]["anomaly"] > 0 and metrics["pixels"]["inlier"] > 0
    for f in ("train/last.pth", "stats.json", "eval/metrics.json", "eval/metrics.csv", "data/complete.json",
              "eval/report/index.html", "explanation.txt"):
        assert (tmp_path / f).is_file(), f
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk["methods"]["sml"]["auroc"] == pytest.approx(metrics["methods"]["sml"]["auroc"])
    ckpt_iter = json.loads((tmp_path / "train" / "metrics.jsonl").read_text().splitlines()[-1])["iteration"]
    assert ckpt_iter == 6
    out = capsys.readouterr().out
    assert "AUROC %" in out and "\nsml " in out and "What this run shows" in out and "report:" in out
    # another recipe in the same folder trains afresh instead of resuming the other run's checkpoint
    run_demo(tmp_path, iterations=4, train_frames=10, val_frames=2, anomaly_frames=3, explain_run=False)
    rows = [json.loads(r) for r in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if "loss" in r][-1] == 4 and rows[0]["iteration"] == 1
    # bad options are refused before any work, with exit status 2
    assert main(["demo", "--seconds", "0", "--out", str(tmp_path / "x")]) == 2
    assert main(["demo", "--iterations", "0", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_seconds_budget_is_turned_into_iterations() -> None:
    from sml.demo.run import DEFAULT_ITERATIONS, MIN_ITERATIONS, iterations_for

    assert iterations_for(0.01, "cpu") == MIN_ITERATIONS
    assert iterations_for(1e9, "cpu") == 20 * DEFAULT_ITERATIONS


@pytest.mark.slow
def test_default_demo_shows_what_sml_is_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's promise: with the default settings SML beats max_logit and msp on AUROC and AP."""
    from sml.demo import run_demo

    m = run_demo(tmp_path)["methods"]
    for base in ("max_logit", "msp"):
        assert m["sml"]["auroc"] > m[base]["auroc"] + 0.02, (base, m)
        assert m["sml"]["ap"] > m[base]["ap"], (base, m)
    assert "SML improves on max_logit" in capsys.readouterr().out
