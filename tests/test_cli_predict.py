"""`sml predict` on files and folders; videos need OpenCV and say so clearly."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sml.cli.main import main
from sml.report.images import MIN_BAR_WIDTH, colormap_lut
from test_pipeline_fixtures import make_model, make_smiyc


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    return {"model": make_model(tmp_path), "data": make_smiyc(tmp_path / "d", n=2), "base": tmp_path}


def test_predict_file_and_folder(setup: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    out = setup["base"] / "pred"
    img = setup["base"] / "one.jpg"
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(img)
    assert main(["predict", "--model", str(setup["model"]), "--method", "max_logit,entropy", str(img),
                 str(setup["data"] / "images"), "--out", str(out)]) == 0
    assert "3 images" in capsys.readouterr().out
    for m in ("max_logit", "entropy"):
        for name in ("one", "frame00", "frame01"):
            a = np.load(out / m / f"{name}.npy")
            assert a.dtype == np.float32
            for kind in ("overlay", "heatmap"):
                # the picture on top (widened to the narrowest colour bar), the colour bar below it
                pic = np.asarray(Image.open(out / m / f"{name}_{kind}.png"))
                h, w = a.shape
                assert pic.shape[0] > h and pic.shape[1] == max(w, MIN_BAR_WIDTH) and pic.shape[2] == 3
                bar = pic[h:].reshape(-1, 3)
                lut = colormap_lut("inferno")
                for end in (lut[0], lut[-1]):  # both ends of the colour scale are drawn in the bar
                    assert (np.abs(bar.astype(int) - end).sum(1) <= 3).any(), (m, name, kind)
    # the max-logit map is minus the max logit of the model (TorchScript's profiling executor may
    # fuse ops after the first calls, hence a float32 tolerance)
    import sml.models

    model = sml.models.load(str(setup["model"]))
    image = np.asarray(Image.open(setup["data"] / "images" / "frame00.png").convert("RGB"))
    ref = -model.predict(image).max(1).values[0].numpy()
    np.testing.assert_allclose(np.load(out / "max_logit" / "frame00.npy"), ref, rtol=1e-5, atol=1e-4)


def test_predict_needs_stats_for_sml(setup: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", "--model", str(setup["model"]), str(setup["data"] / "images"),
                 "--out", str(setup["base"] / "p")]) == 2
    assert "--stats" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("cv2") is not None, reason="OpenCV present")
def test_video_without_opencv(setup: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    clip = setup["base"] / "clip.mp4"
    clip.write_bytes(b"\x00" * 16)
    assert main(["predict", "--model", str(setup["model"]), "--method", "msp", str(clip),
                 "--out", str(setup["base"] / "p")]) == 2
    assert "OpenCV" in capsys.readouterr().err


def test_missing_input(setup: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", "--model", str(setup["model"]), "--method", "msp", "nope.png",
                 "--out", str(setup["base"] / "p")]) == 2
    assert "does not exist" in capsys.readouterr().err
