"""The run folder's layout (sml.utils.run_layout): the one file-name sanitiser against the three it
replaced, on the shared data sets' frame ids and as properties, and the map paths."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from sml.errors import InputError
from sml.utils import run_layout
from sml.utils.run_layout import map_files, map_path, safe_name


# The three sanitisers safe_name replaced, as they were: the data sets' frame ids (sml.data.base.safe_id),
# map file names (sml.pipelines.writers.safe_name) and report / compare file names (sml.report.rundir.slug).
def old_safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip(".") or "frame"


def old_map_name(frame_id: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", str(frame_id)).strip(".")
    if not name:
        raise InputError("empty")
    return name


def old_slug(text: str, max_len: int = 80) -> str:
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "x")[:max_len]


def _stems(shared: Path) -> list[str]:
    """The file stems a data set turns into frame ids: every image under the shared data sets."""
    data = shared / "data"
    stems = [p.stem for p in (data / "road_anomaly" / "RoadAnomaly_jpg" / "frames").glob("*.jpg")]
    stems += [p.stem for track in ("dataset_AnomalyTrack", "dataset_ObstacleTrack")
              for p in (data / "smiyc" / track / "images").iterdir()]
    stems += [p.name.split("_leftImg8bit")[0] for p in (data / "cityscapes_mini" / "leftImg8bit").rglob("*_leftImg8bit.*")]
    return stems


def test_shared_frame_ids_and_their_file_names_are_unchanged(shared):
    from sml.data import open_dataset

    stems = _stems(shared)
    assert len(stems) > 100
    for stem in stems:
        fid = safe_name(stem)
        assert fid == old_safe_id(stem) == old_map_name(fid) == old_slug(fid) == safe_name(fid, 80), stem
    root = shared / "data"
    specs = [f"road-anomaly:{root / 'road_anomaly' / 'RoadAnomaly_jpg'}",
             f"smiyc-anomaly:{root / 'smiyc' / 'dataset_AnomalyTrack'}",
             f"smiyc-obstacle:{root / 'smiyc' / 'dataset_ObstacleTrack'}"]
    ids = [i for spec in specs for i in open_dataset(spec, allow_subset=True).ids]
    ids += [i for split in ("train", "val")
            for i in open_dataset(f"cityscapes:{root / 'cityscapes_mini'}", split=split, allow_subset=True).ids]
    assert ids and set(ids) <= {safe_name(s) for s in stems}
    for fid in ids:   # maps, panels: the names earlier runs have on disk
        assert map_path("R", "npy16", "sml", "k", fid) == Path("R", "maps", "sml", f"{old_map_name(fid)}.npy")
        assert safe_name(fid, 80) == old_slug(fid)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_every_frame_id_a_data_set_gave_keeps_its_map_name(text):
    fid = old_safe_id(text)   # any id an earlier sml gave a frame: maps of existing runs are found again
    assert safe_name(fid) == old_map_name(fid) == fid


_EDGE = st.sampled_from("abcXYZ019_-")


@settings(max_examples=300, deadline=None)
@given(_EDGE, st.text(), _EDGE)
def test_frame_ids_are_unchanged_for_stems_with_plain_ends(first, middle, last):
    stem = first + middle + last
    assert safe_name(stem) == old_safe_id(stem)


@settings(max_examples=300, deadline=None)
@given(st.text().filter(lambda t: "_" not in t), st.integers(1, 100))
def test_report_and_compare_names_are_unchanged_without_underscores(text, n):
    try:
        name = safe_name(text, n)
    except InputError:
        assert old_slug(text, n) == "x"[:n]   # the old fallback name; now refused (nothing is left of the text)
        return
    assert name == old_slug(text, n)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_safe_names_are_plain_and_stable(text):
    try:
        name = safe_name(text)
    except InputError as exc:
        assert "empty file name" in str(exc)
        assert not re.sub(r"[^A-Za-z0-9_-]", "", text)
        return
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name) and not name.startswith(".") and not name.endswith(".")
    assert safe_name(name) == name


@pytest.mark.parametrize("text, old, new", [
    ("a+b", "a+b", "a_b"),             # map name of a Python data set's id: '+' is no longer kept
    ("a  b", "a__b", "a_b"),           # a run of odd characters is one '_' everywhere
    ("frame (1)", "frame_1_", "frame_1"),   # frame id of a stem ending in odd characters: dropped at the ends
])
def test_names_that_differ_from_the_old_functions(text, old, new):
    assert safe_name(text) == new and old in (old_map_name(text), old_safe_id(text))


@pytest.mark.parametrize("text", ["", "...", "#!?", " . "])
def test_nothing_left_is_refused(text):
    with pytest.raises(InputError, match="empty file name"):
        safe_name(text)


def test_map_paths_of_every_format():
    got = {fmt: map_path("out", fmt, "sml", "AnomalyTrack-all", "a/b c") for fmt in run_layout.MAP_FORMATS}
    assert got == {"hdf5": Path("out/anomaly_p/sml/AnomalyTrack-all/a_b_c.hdf5"),
                   "fishyscapes": Path("out/fishyscapes/sml/a_b_c_anomaly.npy"),
                   "npy": Path("out/npy/sml/a_b_c.npy"), "npy16": Path("out/maps/sml/a_b_c.npy"),
                   "png16": Path("out/png16/sml/a_b_c.png")}
    assert map_files("out", "fishyscapes", "sml", "x", "f") == [Path("out/fishyscapes/sml/f_anomaly.npy"),
                                                              Path("out/fishyscapes/sml/f_segmentation.npy")]
    with pytest.raises(InputError, match="unknown map format 'tiff'"):
        map_path("out", "tiff", "sml", "x", "f")
    assert run_layout.RUN_FILES[-1] == run_layout.METRICS   # written last: a run without it is unfinished
