"""Model zoo: mirror, cache, file:// download with progress and sha256, `sml models download`, the
shipped reference statistics, one configuration type per arch.tag."""
from __future__ import annotations

import dataclasses
import hashlib
import pickletools
from pathlib import Path

import pytest

import sml.models as M
from sml.cli.main import main
from sml.errors import CheckpointError, InputError
from sml.models import registry, zoo

ERFNET_SHA = "621544dfdc7d08162ef777144544c9aafe3d2b716e4ab85e8247739caa3579d2"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SML_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SML_MIRROR", raising=False)
    return tmp_path


@pytest.fixture
def temp_entry(monkeypatch):
    def make(**changes) -> M.ModelConfig:
        entry = dataclasses.replace(M.get_config("erfnet.cityscapes"), name="erfnet.test", **changes)
        monkeypatch.setitem(registry._CONFIGS, entry.name, entry)
        return entry
    return make


def test_entries_and_checksum_of_the_shared_weights(erfnet_weights):
    assert {"erfnet.cityscapes", "deeplabv3plus_r101_os8.cityscapes"} <= set(M.list_zoo())
    e = M.get_config("erfnet")  # the bare architecture name resolves to its default tag
    assert e.name == "erfnet.cityscapes" and e.tag == "cityscapes" and e.arch == "erfnet"
    assert e.sha256 == ERFNET_SHA and e.input_size == (512, 1024) and e.mean is None
    # Its checksum is that of the local restoration, which no URL serves: no URL, and the notes say so.
    assert e.urls == () and "restoration" in e.notes and "--weights" in e.notes
    assert zoo.sha256_of(erfnet_weights) == hashlib.sha256(erfnet_weights.read_bytes()).hexdigest() == ERFNET_SHA
    d = M.get_config("deeplabv3plus_r101_os8")
    assert d.filename == "r101_os8_base_cty.pth" and d.mean == M.IMAGENET_MEAN and len(d.class_names) == 19
    # Built-ins, zoo and cards share one configuration type.
    assert all(isinstance(M.get_config(n), M.ModelConfig) for n in M.list_pretrained())
    assert M.CITYSCAPES_CLASSES[11] == "person" and len(M.CITYSCAPES_CLASSES) == 19
    from sml.data.cityscapes import cityscapes_tables
    from sml.stats import CITYSCAPES_CLASSES
    assert M.CITYSCAPES_CLASSES == CITYSCAPES_CLASSES == cityscapes_tables()[2]


def _safe_read_reference(path: Path) -> dict[int, float]:
    """Parse the reference NumPy pickle {train_id: float} without unpickling anything."""
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(path.read_bytes()[128:])]
    start = next(i for i, (name, _) in enumerate(ops) if name == "EMPTY_DICT")
    vals = [arg for name, arg in ops[start:] if name in ("BININT1", "BINFLOAT")]
    return dict(zip(vals[0::2], vals[1::2]))


def test_shipped_reference_statistics_equal_the_published_files(shared):
    stats = M.get_config("deeplabv3plus_r101_os8.cityscapes").reference_statistics()
    mean = _safe_read_reference(shared / "reference" / "cityscapes_mean.npy")
    var = _safe_read_reference(shared / "reference" / "cityscapes_var.npy")
    assert sorted(mean) == list(range(19))
    assert stats["mean"] == [mean[i] for i in range(19)]
    assert stats["var"] == [var[i] for i in range(19)]
    assert M.get_config("erfnet").reference_statistics() is None
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
        M.load("erfnet.test")


def test_unknown_checksum_warns_with_the_computed_hash(env, temp_entry, erfnet_weights):
    entry = temp_entry(urls=(erfnet_weights.as_uri(),), sha256=None)
    with pytest.warns(UserWarning, match=ERFNET_SHA):
        M.fetch(entry.name, show_progress=False)


def test_no_url_tells_how_to_get_the_file(env):
    with pytest.raises(CheckpointError, match="r101_os8_base_cty.pth") as info:
        M.load("deeplabv3plus_r101_os8")
    assert "--weights PATH" in str(info.value) and "SML_MIRROR" in str(info.value)
    with pytest.raises(CheckpointError, match="restoration"):  # ERFNet: no URL, given by path
        M.load("erfnet")


def test_unreachable_url_is_a_clear_error(env, temp_entry, tmp_path):
    entry = temp_entry(urls=((tmp_path / "missing.pth").as_uri(),))
    with pytest.raises(CheckpointError, match="cannot download"):
        M.fetch(entry.name, show_progress=False)


def test_download_command_from_a_mirror_folder_then_usable_by_name(env, erfnet_weights, capsys):
    mirror = env / "mirror"
    mirror.mkdir()
    (mirror / "erfnet_cityscapes.pth").symlink_to(erfnet_weights)
    assert main(["models", "download", "erfnet", "--mirror", str(mirror)]) == 0
    cached = env / "cache" / "erfnet_cityscapes.pth"
    assert cached.is_file() and not cached.is_symlink() and zoo.sha256_of(cached) == ERFNET_SHA
    assert str(cached) in capsys.readouterr().out
    model = M.load("erfnet")  # by name alone, from the cache
    assert model.num_classes == 19 and model.input_size == (512, 1024)
    assert main(["models", "download", "deeplabv3plus_r101_os8", "--mirror", str(mirror)]) == 2
    assert "has no r101_os8_base_cty.pth" in " ".join(capsys.readouterr().err.split())


def test_download_command_from_a_file_url_with_progress_and_checksum(env, erfnet_weights, capsys, tmp_path):
    mirror = tmp_path / "served"
    mirror.mkdir()
    (mirror / "erfnet_cityscapes.pth").symlink_to(erfnet_weights)
    assert main(["models", "download", "erfnet.cityscapes", "--mirror", mirror.as_uri()]) == 0
    err = capsys.readouterr().err
    assert "erfnet_cityscapes.pth" in err and "100%" in err  # the progress bar
    assert zoo.sha256_of(env / "cache" / "erfnet_cityscapes.pth") == ERFNET_SHA
    # A file whose checksum is not the entry's is refused and leaves nothing in the cache.
    (env / "cache" / "erfnet_cityscapes.pth").unlink()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "erfnet_cityscapes.pth").write_bytes(b"not the weights")
    assert main(["models", "download", "erfnet", "--mirror", bad.as_uri()]) == 2
    assert "checksum mismatch" in " ".join(capsys.readouterr().err.split())
    assert not any((env / "cache").glob("*"))
    assert main(["models", "download", "no_such_net", "--mirror", bad.as_uri()]) == 2
    assert "unknown model 'no_such_net'" in " ".join(capsys.readouterr().err.split())


def test_truncated_cached_file_is_refused_never_called_checked(env, erfnet_weights, capsys):
    mirror = env / "mirror"
    mirror.mkdir()
    (mirror / "erfnet_cityscapes.pth").symlink_to(erfnet_weights)
    assert main(["models", "download", "erfnet", "--mirror", str(mirror)]) == 0
    assert "(sha256 checked)" in capsys.readouterr().out
    cached = env / "cache" / "erfnet_cityscapes.pth"
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])   # truncated in the cache
    assert main(["models", "download", "erfnet"]) == 2
    out, err = capsys.readouterr()
    assert "checked" not in out
    err = " ".join(err.split())
    assert "checksum mismatch" in err and str(cached) in err and "sml models download erfnet" in err
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        M.load("erfnet")   # loading by name re-hashes the cached file too


def test_download_onto_a_full_disk_names_the_file_and_leaves_nothing(env, erfnet_weights, capsys, monkeypatch):
    import errno
    import os

    mirror = env / "mirror"
    mirror.mkdir()
    (mirror / "erfnet_cityscapes.pth").symlink_to(erfnet_weights)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            full()

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: Full(real(*a, **k)))
    monkeypatch.setattr(os, "sendfile", full, raising=False)   # however the bytes are copied
    assert main(["models", "download", "erfnet", "--mirror", str(mirror)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"cannot write {env / 'cache' / 'erfnet_cityscapes.pth'}: no space left" in err, err
    assert not [p.name for p in (env / "cache").iterdir()]   # no .part, no temporary file


def test_register_pretrained_needs_arch_tag():
    with pytest.raises(InputError, match="ARCH.TAG"):
        M.register_pretrained(M.ModelConfig(name="erfnet", arch="erfnet"))
    with pytest.raises(InputError, match="unknown model"):
        M.register_pretrained(M.ModelConfig(name="nonet.x", arch="nonet"))
