"""`sml export`: SegmentMeIfYouCan zips with the release's frame lists, Fishyscapes .npy pairs."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sml.cli.main import main
from sml.errors import DataError, InputError, OutputError
from sml.pipelines.writers import write_hdf5
from sml.protocols.export import export_fishyscapes, export_smiyc
from sml.data.releases import ANOMALY_SPLITS


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
    a = np.load(tmp_path / "out" / "0000_anomaly.npy")
    s = np.load(tmp_path / "out" / "0001_segmentation.npy")
    assert a.dtype == np.float32 and s.dtype == np.uint8 and a.shape == (4, 6)
    index = json.loads((tmp_path / "out" / "frame_ids.json").read_text())
    assert index["frames"] == {"0000": "a", "0001": "b"} and index["method"] == "sml"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]  # no temporary folder left
    with pytest.raises(DataError, match="1024 x 2048"):
        export_fishyscapes(tmp_path / "run", tmp_path / "out2")
    _fishy(tmp_path / "run", "c", seg_value=255)
    with pytest.raises(DataError, match="train ids 0..18"):
        export_fishyscapes(tmp_path / "run", tmp_path / "out3", size=(4, 6))
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def _official_order(folder: Path, suffix: str) -> list[str]:
    """The order of the official validation script (hermannsblum/fishyscapes eval.py, ``list_img_from_dir``):
    files ending in ``suffix``, sorted by ``int(name.split('_')[0])``."""
    names = [p.name for p in folder.iterdir() if p.name.lower().endswith(suffix)]
    return sorted(names, key=lambda n: int(n.split("_")[0]))


@pytest.mark.parametrize("ids, numbers", [
    # sml's frame order (natural sort) where the names carry no release number: Lost and Found ids start
    # with a two-digit sequence number that repeats, Cityscapes ids with a city name
    (["04_Maurener_Weg_8_000000_000030", "01_Hanns_Klemm_Str_45_000001_000060", "04_Maurener_Weg_8_000000_000180"],
     ["0001", "0000", "0002"]),
    (["frame10", "frame2", "frame1"], ["0002", "0001", "0000"]),
    # the release's own numbers where every name starts with one
    (["0042_04_Maurener_Weg_8_000000_000030", "0007_01_Hanns_Klemm_Str_45_000001_000060"], ["0042", "0007"]),
    # repeated release numbers: not usable, frame order instead
    (["0001_a", "0001_b"], ["0000", "0001"]),
])
def test_fishyscapes_names_sort_as_the_official_script_reads_them(tmp_path: Path, ids, numbers) -> None:
    for fid in ids:
        _fishy(tmp_path / "run", fid)
    export_fishyscapes(tmp_path / "run", tmp_path / "out", size=(4, 6))
    number = dict(zip(ids, numbers))
    index = json.loads((tmp_path / "out" / "frame_ids.json").read_text())["frames"]
    assert index == {n: i for i, n in number.items()}
    # the official script pairs the two lists (and the labels) by position: same frames, in number order
    frames = [index[n.split("_")[0]] for n in _official_order(tmp_path / "out", "_anomaly.npy")]
    assert frames == [index[n.split("_")[0]] for n in _official_order(tmp_path / "out", "_segmentation.npy")]
    assert frames == sorted(ids, key=lambda i: int(number[i]))
    for name in frames:  # each file holds its frame's map
        src = np.load(tmp_path / "run" / "fishyscapes" / "sml" / f"{name}_anomaly.npy")
        assert np.array_equal(np.load(tmp_path / "out" / f"{number[name]}_anomaly.npy"), src)


def test_fishyscapes_existing_output(tmp_path: Path) -> None:
    _fishy(tmp_path / "run", "a")
    out = tmp_path / "out"
    out.mkdir()
    assert export_fishyscapes(tmp_path / "run", out, size=(4, 6)) == 1  # an empty folder is used
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        export_fishyscapes(tmp_path / "run", out, size=(4, 6))
    _fishy(tmp_path / "run", "b")
    assert export_fishyscapes(tmp_path / "run", out, size=(4, 6), overwrite=True) == 2  # sml's own export
    assert sorted(p.name for p in out.iterdir()) == ["0000_anomaly.npy", "0000_segmentation.npy",
                                                     "0001_anomaly.npy", "0001_segmentation.npy", "frame_ids.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]
    (out / "notes.txt").write_text("mine")  # a file sml did not write: the folder is never replaced
    with pytest.raises(OutputError, match="not written by `sml export fishyscapes`"):
        export_fishyscapes(tmp_path / "run", out, size=(4, 6), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    other = tmp_path / "other"
    other.mkdir()
    (other / "0000_anomaly.npy").write_bytes(b"x")
    with pytest.raises(OutputError, match="not written by"):
        export_fishyscapes(tmp_path / "run", other, size=(4, 6), overwrite=True)
    assert (other / "0000_anomaly.npy").read_bytes() == b"x"


def test_smiyc_existing_zip(tmp_path: Path) -> None:
    _maps(tmp_path / "run", "max_logit", "AnomalyTrack-all", ANOMALY_SPLITS["all"])
    out = tmp_path / "sub.zip"
    export_smiyc(tmp_path / "run", out)
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        export_smiyc(tmp_path / "run", out)
    assert export_smiyc(tmp_path / "run", out, overwrite=True) == {"AnomalyTrack-all": 110}
    mine = tmp_path / "mine.zip"
    with zipfile.ZipFile(mine, "w") as z:
        z.writestr("a.txt", "mine")
    for path in (mine, tmp_path / "text.zip"):
        if not path.exists():
            path.write_text("not a zip")
        before = path.read_bytes()
        with pytest.raises(OutputError, match="not written by `sml export smiyc`"):
            export_smiyc(tmp_path / "run", path, overwrite=True)
        assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.zip", "run", "sub.zip", "text.zip"]


def test_fishyscapes_without_segmentation_says_so(tmp_path: Path) -> None:
    _fishy(tmp_path / "run", "a", seg=False)
    with pytest.raises(DataError, match="no segmentation for 1 of 1 frames"):
        export_fishyscapes(tmp_path / "run", tmp_path / "out", size=(4, 6))
    with pytest.raises(InputError, match="no fishyscapes/ folder"):
        export_fishyscapes(tmp_path / "out", tmp_path / "x")


def test_fishyscapes_cli_full_size(tmp_path: Path) -> None:
    _fishy(tmp_path / "run", "frankfurt_000000_000294", shape=(1024, 2048))
    assert main(["export", "fishyscapes", str(tmp_path / "run"), str(tmp_path / "out")]) == 0
    assert np.load(tmp_path / "out" / "0000_segmentation.npy").shape == (1024, 2048)
    assert json.loads((tmp_path / "out" / "frame_ids.json").read_text())["frames"] == {"0000": "frankfurt_000000_000294"}


def test_help_names_every_data_kind(capsys: pytest.CaptureFixture) -> None:
    from sml.data.registry import DATASETS

    assert "fishyscapes-static" in DATASETS
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    for kind in DATASETS:
        assert f"  {kind}: " in text, kind
    assert "fishyscapes-static:PATH" in " ".join(text.split())
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "fishyscapes-laf or fishyscapes-static" in text and "--overwrite" in text
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert all(f"`{kind}`" in readme for kind in DATASETS)
