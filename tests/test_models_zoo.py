"""Model zoo: mirror, cache, file:// download with progress and sha256, the shipped reference statistics."""
from __future__ import annotations

import dataclasses
import hashlib
import pickletools
from pathlib import Path

import pytest

import sml.models as M
from sml.errors import CheckpointError
from sml.models import zoo

ERFNET_SHA = "621544dfdc7d08162ef777144544c9aafe3d2b716e4ab85e8247739caa3579d2"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SML_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SML_MIRROR", raising=False)
    return tmp_path


@pytest.fixture
def temp_entry(monkeypatch):
    def make(**changes) -> zoo.ZooEntry:
        entry = dataclasses.replace(zoo.ZOO["erfnet"], name="erfnet_test", **changes)
        monkeypatch.setitem(zoo.ZOO, entry.name, entry)
        return entry
    return make


def test_entries_and_checksum_of_the_shared_weights(erfnet_weights):
    assert {"erfnet", "deeplabv3plus_r101_os8"} <= set(M.list_zoo())
    e = zoo.ZOO["erfnet"]
    assert e.sha256 == ERFNET_SHA and e.input_size == (512, 1024) and e.mean is None and e.urls
    assert zoo.sha256_of(erfnet_weights) == hashlib.sha256(erfnet_weights.read_bytes()).hexdigest() == ERFNET_SHA
    d = zoo.ZOO["deeplabv3plus_r101_os8"]
    assert d.filename == "r101_os8_base_cty.pth" and d.mean == M.IMAGENET_MEAN and len(d.class_names) == 19


def _safe_read_reference(path: Path) -> dict[int, float]:
    """Parse the reference NumPy pickle {train_id: float} without unpickling anything."""
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(path.read_bytes()[128:])]
    start = next(i for i, (name, _) in enumerate(ops) if name == "EMPTY_DICT")
    vals = [arg for name, arg in ops[start:] if name in ("BININT1", "BINFLOAT")]
    return dict(zip(vals[0::2], vals[1::2]))


def test_shipped_reference_statistics_equal_the_published_files(shared):
    stats = zoo.ZOO["deeplabv3plus_r101_os8"].reference_statistics()
    mean = _safe_read_reference(shared / "reference" / "cityscapes_mean.npy")
    var = _safe_read_reference(shared / "reference" / "cityscapes_var.npy")
    assert sorted(mean) == list(range(19))
    assert stats["mean"] == [mean[i] for i in range(19)]
    assert stats["var"] == [var[i] for i in range(19)]
    assert zoo.ZOO["erfnet"].reference_statistics() is None
    from sml.stats import ClassStatistics

    cs = ClassStatistics.from_dict(stats)
    ref = ClassStatistics.from_reference_npy(shared / "reference" / "cityscapes_mean.npy",
                                             shared / "reference" / "cityscapes_var.npy")
    assert list(cs.mean) == list(ref.mean) and list(cs.var) == list(ref.var)


def test_mirror_directory_serves_files_by_name(env, monkeypatch, erfnet_weights):
    monkeypatch.setenv("SML_MIRROR", str(erfnet_weights.parent))
    assert M.fetch("erfnet") == erfnet_weights
    assert M.locate("erfnet") == erfnet_weights
    model = M.load("erfnet")  # no weights: the mirror replaces the URL
    assert model.name == "erfnet" and model.num_classes == 19 and model.class_channels == list(range(19))


def test_file_url_download_into_cache_with_progress(env, temp_entry, erfnet_weights, capsys):
    entry = temp_entry(urls=(erfnet_weights.as_uri(),))
    assert M.locate(entry.name) is None
    path = M.fetch(entry.name)
    assert path == env / "cache" / "erfnet_cityscapes.pth" and zoo.sha256_of(path) == ERFNET_SHA
    err = capsys.readouterr().err
    assert "erfnet_cityscapes.pth" in err and "100%" in err  # the progress bar
    assert M.fetch(entry.name) == path and capsys.readouterr().err == ""  # cached: no second download
    assert M.locate(entry.name) == path


def test_checksum_failure_leaves_nothing_behind(env, temp_entry, erfnet_weights):
    entry = temp_entry(urls=(erfnet_weights.as_uri(),), sha256="0" * 64)
    with pytest.raises(CheckpointError, match="checksum mismatch") as info:
        M.fetch(entry.name, show_progress=False)
    assert ERFNET_SHA in str(info.value)
    assert not any((env / "cache").glob("*"))


def test_mirror_with_wrong_checksum_is_refused(env, temp_entry, monkeypatch, erfnet_weights):
    temp_entry(sha256="f" * 64)
    monkeypatch.setenv("SML_MIRROR", str(erfnet_weights.parent))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        M.load("erfnet_test")


def test_unknown_checksum_warns_with_the_computed_hash(env, temp_entry, erfnet_weights):
    entry = temp_entry(urls=(erfnet_weights.as_uri(),), sha256=None)
    with pytest.warns(UserWarning, match=ERFNET_SHA):
        M.fetch(entry.name, show_progress=False)


def test_no_url_tells_how_to_get_the_file(env):
    with pytest.raises(CheckpointError, match="r101_os8_base_cty.pth") as info:
        M.load("deeplabv3plus_r101_os8")
    assert "weights=PATH" in str(info.value) and "SML_MIRROR" in str(info.value)


def test_unreachable_url_is_a_clear_error(env, temp_entry, tmp_path):
    entry = temp_entry(urls=((tmp_path / "missing.pth").as_uri(),))
    with pytest.raises(CheckpointError, match="cannot download"):
        M.fetch(entry.name, show_progress=False)
