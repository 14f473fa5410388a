"""`sml stats` end to end on a tiny data set, checked against a float64 NumPy reference."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sml.cli.main import main
from test_pipeline_fixtures import interrupt_forward_after, make_cityscapes, make_model


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    return {"model": make_model(tmp_path), "data": make_cityscapes(tmp_path / "cs", n=5), "out": tmp_path}


def _args(s: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["stats", "--model", str(s["model"]), "--data", f"cityscapes:{s['data']}", "-o", str(out), *extra]


def reference(model_path: Path, data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Literal float64 count / mean / unbiased var of the max logit per predicted class."""
    import sml.data
    import sml.models

    m = sml.models.load(str(model_path))
    vals: dict[int, list[np.ndarray]] = {}
    for s in sml.data.open_dataset(f"cityscapes:{data}", split="train", labels_required=False):
        lg = m.predict(s.image).double()[0]
        L, pred = lg.max(0)
        for c in range(19):
            vals.setdefault(c, []).append(L[pred == c].numpy())
    n = np.array([sum(v.size for v in vals[c]) for c in range(19)], float)
    mean = np.array([np.concatenate(vals[c]).mean() if n[c] else np.nan for c in range(19)])
    var = np.array([np.concatenate(vals[c]).var(ddof=1) if n[c] > 1 else np.nan for c in range(19)])
    return n, mean, var


def test_stats_matches_reference(setup: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    out = setup["out"] / "stats.json"
    assert main(_args(setup, out)) == 0
    printed = capsys.readouterr().out
    assert "road" in printed and "written to" in printed
    got = json.loads(out.read_text())
    n, mean, var = reference(setup["model"], setup["data"])
    np.testing.assert_array_equal(np.array(got["count"], float), n)
    ok = n > 1
    np.testing.assert_allclose(np.array(got["mean"], float)[ok], mean[ok], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.array(got["var"], float)[ok], var[ok], rtol=1e-7, atol=1e-9)
    assert got["num_classes"] == 19
    assert got["inference"].startswith("precision fp32")   # how the network ran, for whoever reads the file
    from sml.stats import ClassStatistics

    assert ClassStatistics.load(out).inference == got["inference"]
    if (n == 0).any():
        assert "never predicted" in printed
    assert not (setup["out"] / "stats.json.partial").exists()


def test_stats_resume_is_identical(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    full = setup["out"] / "full.json"
    assert main(_args(setup, full)) == 0
    from sml.pipelines import common

    real = common.forward
    part = setup["out"] / "part.json"
    with monkeypatch.context() as m:
        interrupt_forward_after(m, 3)
        assert main(_args(setup, part, "--save-every", "2")) == 130
    assert not part.exists() and (setup["out"] / "part.json.partial").is_dir()
    counted = {"n": 0}

    def counting(*a, **k):
        counted["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(common, "forward", counting)
    assert main(_args(setup, part, "--resume")) == 0
    assert counted["n"] == 3  # frames 0-1 were saved; 2 (lost) + 3, 4 recomputed
    a, b = json.loads(full.read_text()), json.loads(part.read_text())
    for k in ("count", "mean", "var"):
        assert a[k] == b[k]


def test_stats_errors(setup: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(_args(setup, setup["out"] / "stats.txt")) == 2
    assert ".json" in capsys.readouterr().err
    assert main(["stats", "--model", str(setup["model"]), "--data", "cityscapes:/nonexistent", "-o",
                 str(setup["out"] / "s.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["stats", "--model", str(setup["model"]), "--data", str(setup["data"]), "-o",
                 str(setup["out"] / "s.json")]) == 2
    assert "KIND:PATH" in capsys.readouterr().err


def test_stats_help_teaches(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["stats", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "torchrun" in text and "--resume" in text
