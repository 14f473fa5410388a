"""`sml demo`: the scene generator and an end-to-end miniature run."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
    image, lab, anomaly = street_scene(np.random.default_rng(5), 160, 80, anomalies=2)
    assert anomaly is not None and set(np.unique(anomaly)) == {0, 1, 255}
    # anomalies lie on the road (possibly in front of a car)
    ys, xs = np.nonzero(anomaly == 1)
    below = lab[np.minimum(ys.max() + 2, 79), xs.min():xs.max() + 1]
    assert np.isin(below, [CLASS_IDS["road"], CLASS_IDS["car"]]).mean() > 0.5   # road, or a car behind it


def test_written_layouts_open_with_sml_data(tmp_path: Path) -> None:
    from sml.data import open_dataset

    write_cityscapes(tmp_path / "cs", {"train": 3, "val": 1}, width=64, height=32)
    write_anomaly_set(tmp_path / "an", 2, width=64, height=32)
    cs = open_dataset(f"cityscapes:{tmp_path / 'cs'}", split="train")
    assert len(cs) == 3
    s = cs.load(cs.frames[0])
    assert s.image.shape == (32, 64, 3) and set(np.unique(s.labels)) <= {0, 1, 2, 8, 10, 11, 13}
    an = open_dataset(f"folder:{tmp_path / 'an'}")
    assert len(an) == 2 and set(np.unique(an.load(an.frames[0]).labels)) <= {0, 1, 255}
    lab = np.asarray(Image.open(next((tmp_path / "cs" / "gtFine" / "train").glob("*/*_labelIds.png"))))
    assert set(np.unique(lab)) <= set(CLASS_IDS.values())


@pytest.mark.slow
def test_demo_end_to_end_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A miniature `sml demo` (few frames, few iterations): every file and method, finite metrics."""
    from sml.cli.main import main

    from sml.demo import run_demo
    metrics = run_demo(tmp_path, iterations=6, train_frames=12, val_frames=2, anomaly_frames=3,
                       stats_frames=6, report=False)
    assert set(metrics["methods"]) == {"msp", "max_logit", "entropy", "energy", "sml"}
    for m, r in metrics["methods"].items():
        assert 0 <= r["auroc"] <= 1 and not math.isnan(r["ap"]), m
    for f in ("train/last.pth", "stats.json", "eval/metrics.json", "data/complete.json"):
        assert (tmp_path / f).is_file(), f
    out = capsys.readouterr().out
    assert "sml" in out and "AUROC" in out
    assert main(["demo", "--seconds", "0"]) == 2
