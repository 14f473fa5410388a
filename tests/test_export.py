"""`sml export`: SegmentMeIfYouCan zips with the release's frame lists, Fishyscapes .npy pairs."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from sml.cli.main import main
from sml.errors import DataError, InputError
from sml.pipelines.writers import write_hdf5
from sml.protocols.export import export_fishyscapes, export_smiyc
from sml.protocols.releases import ANOMALY_SPLITS


def _maps(run: Path, method: str, folder: str, ids) -> None:
    for i, fid in enumerate(ids):
        write_hdf5(run / "anomaly_p" / method / folder / f"{fid}.hdf5", np.full((4, 6), i, np.float32))


@pytest.mark.parametrize("folder", ["smiyc-anomaly", "AnomalyTrack-all"])
def test_smiyc_zip_has_the_tool_tree(tmp_path: Path, folder: str) -> None:
    _maps(tmp_path / "run", "max_logit", folder, ANOMALY_SPLITS["all"])
    counts = export_smiyc(tmp_path / "run", tmp_path / "sub.zip")
    assert counts == {"AnomalyTrack-all": 110}
    with zipfile.ZipFile(tmp_path / "sub.zip") as z:
        names = z.namelist()
    assert len(names) == 110 and "anomaly_p/max_logit/AnomalyTrack-all/validation0003.hdf5" in names


def test_smiyc_refuses_wrong_frame_list(tmp_path: Path) -> None:
    ids = [i for i in ANOMALY_SPLITS["all"] if i != "cow0004"] + ["my_frame"]
    _maps(tmp_path / "run", "sml", "smiyc-anomaly", ids)
    with pytest.raises(DataError, match=r"1 missing \(cow0004\); 1 not in the release \(my_frame\)"):
        export_smiyc(tmp_path / "run", tmp_path / "sub.zip")
    assert not (tmp_path / "sub.zip").exists()
    assert main(["export", "smiyc", str(tmp_path / "run"), str(tmp_path / "sub.zip")]) == 2


def test_smiyc_obstacle_and_methods(tmp_path: Path) -> None:
    _maps(tmp_path / "run", "a", "smiyc-obstacle", [f"validation_{k}" for k in range(1, 41)])
    _maps(tmp_path / "run", "b", "smiyc-obstacle", ["validation_1"])
    with pytest.raises(InputError, match="several methods"):
        export_smiyc(tmp_path / "run", tmp_path / "sub.zip")
    with pytest.raises(DataError, match="test has 0 of 327"):
        export_smiyc(tmp_path / "run", tmp_path / "sub.zip", method="a")
    with pytest.raises(InputError, match="no anomaly_p"):
        export_smiyc(tmp_path, tmp_path / "sub.zip")


def test_smiyc_cli(tmp_path: Path, capsys) -> None:
    _maps(tmp_path / "run", "msp", "AnomalyTrack-all", ANOMALY_SPLITS["all"])
    assert main(["export", "smiyc", str(tmp_path / "run"), str(tmp_path / "o" / "sub.zip")]) == 0
    assert "AnomalyTrack-all 110 frames" in capsys.readouterr().out


def _fishy(run: Path, fid: str, shape=(4, 6), seg=True, seg_value=3) -> None:
    d = run / "fishyscapes" / "sml"
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / f"{fid}_anomaly.npy", np.random.default_rng(0).random(shape, dtype=np.float32))
    if seg:
        np.save(d / f"{fid}_segmentation.npy", np.full(shape, seg_value, np.uint8))


def test_fishyscapes_export(tmp_path: Path) -> None:
    _fishy(tmp_path / "run", "a")
    _fishy(tmp_path / "run", "b")
    assert export_fishyscapes(tmp_path / "run", tmp_path / "out", size=(4, 6)) == 2
    a = np.load(tmp_path / "out" / "a_anomaly.npy")
    s = np.load(tmp_path / "out" / "b_segmentation.npy")
    assert a.dtype == np.float32 and s.dtype == np.uint8 and a.shape == (4, 6)
    with pytest.raises(DataError, match="1024 x 2048"):
        export_fishyscapes(tmp_path / "run", tmp_path / "out2")
    _fishy(tmp_path / "run", "c", seg_value=255)
    with pytest.raises(DataError, match="train ids 0..18"):
        export_fishyscapes(tmp_path / "run", tmp_path / "out3", size=(4, 6))


def test_fishyscapes_without_segmentation_says_so(tmp_path: Path) -> None:
    _fishy(tmp_path / "run", "a", seg=False)
    with pytest.raises(DataError, match="no segmentation for 1 of 1 frames"):
        export_fishyscapes(tmp_path / "run", tmp_path / "out", size=(4, 6))
    with pytest.raises(InputError, match="no fishyscapes/ folder"):
        export_fishyscapes(tmp_path / "out", tmp_path / "x")


def test_fishyscapes_cli_full_size(tmp_path: Path) -> None:
    _fishy(tmp_path / "run", "frankfurt_000000_000294", shape=(1024, 2048))
    assert main(["export", "fishyscapes", str(tmp_path / "run"), str(tmp_path / "out")]) == 0
    assert np.load(tmp_path / "out" / "frankfurt_000000_000294_segmentation.npy").shape == (1024, 2048)
