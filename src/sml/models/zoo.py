"""Model zoo: published checkpoints, fetched on first use into a cache with a checksum check.

Where a file comes from, first match wins: the ``weights=`` path given by the caller; the
mirror directory ``$SML_MIRROR`` (files by file name, checked against the sha256); the cache
``$SML_CACHE`` (default ``~/.cache/sml``; files there were checked when downloaded); the
entry's URLs (``http(s)://`` or ``file://``), downloaded with a progress bar, checked, then
moved into the cache atomically.

Checksum policy: an entry with a known sha256 accepts only a file that matches it. An entry
whose publisher gave no checksum (``sha256=None``) accepts the file but warns with its
computed sha256; it is still read with ``weights_only=True``, so it cannot run code.
"""
from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from sml.errors import CheckpointError, InputError
from sml.models.contract import CITYSCAPES_CLASSES, IMAGENET_MEAN, IMAGENET_STD
from sml.utils import distributed
from sml.utils.atomic import atomic_write

# Class statistics published with the reference SML implementation for r101_os8_base_cty.pth
# (its cityscapes_mean.npy / cityscapes_var.npy, train ids 0..18), copied here as numbers.
REFERENCE_MEAN = (
    9.472783088684082, 8.337652206420898, 8.446386337280273, 7.7195143699646, 6.942926406860352,
    6.599900722503662, 7.0457682609558105, 7.17092752456665, 8.439570426940918, 7.494316101074219,
    7.899521350860596, 7.611802101135254, 6.815601825714111, 8.610281944274902, 7.902485370635986,
    8.231664657592773, 7.62032413482666, 7.360630512237549, 6.763288497924805)
REFERENCE_VAR = (
    1.8806684017181396, 1.5584830045700073, 2.396284580230713, 3.6321520805358887, 3.5763161182403564,
    4.16933012008667, 1.349108099937439, 1.676076889038086, 3.1614744663238525, 2.036546230316162,
    4.482692718505859, 2.3304731845855713, 1.7234714031219482, 1.6093931198120117, 4.868859767913818,
    6.726682186126709, 4.301109313964844, 3.0069637298583984, 2.3316891193389893)


@dataclass(frozen=True)
class ZooEntry:
    """One published checkpoint and how to use it."""

    name: str
    arch: str
    filename: str
    urls: tuple[str, ...]
    sha256: str | None
    input_size: tuple[int, int] | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    class_names: tuple[str, ...] = CITYSCAPES_CLASSES
    stats_mean: tuple[float, ...] | None = None
    stats_var: tuple[float, ...] | None = None
    homepage: str = ""
    license: str = ""
    notes: str = field(default="")

    def reference_statistics(self) -> dict | None:
        """The published class statistics in the ``stats.json`` schema (no counts), or None.

        ``sml.ClassStatistics.from_dict(entry.reference_statistics())`` turns them into statistics.
        """
        if self.stats_mean is None:
            return None
        n = len(self.stats_mean)
        return {"num_classes": n, "class_names": list(self.class_names), "count": [None] * n,
                "mean": list(self.stats_mean), "var": list(self.stats_var), "model": self.name,
                "data": "published with the reference implementation"}


ZOO: dict[str, ZooEntry] = {}


def register_zoo(entry: ZooEntry) -> None:
    """Add or replace a zoo entry."""
    ZOO[entry.name] = entry


register_zoo(ZooEntry(
    name="deeplabv3plus_r101_os8", arch="deeplabv3plus_r101_os8", filename="r101_os8_base_cty.pth",
    # The reference repository publishes the file on Google Drive behind an HTML confirmation
    # page, with no checksum; there is no direct URL we could verify.
    urls=(), sha256=None, input_size=None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    stats_mean=REFERENCE_MEAN, stats_var=REFERENCE_VAR,
    homepage="https://github.com/shjung13/Standardized-max-logits",
    license="see the reference repository",
    notes="SML paper model (Cityscapes val 80.3 mIoU); download r101_os8_base_cty.pth from the homepage "
          "(Google Drive link in its README)"))
register_zoo(ZooEntry(
    name="erfnet", arch="erfnet", filename="erfnet_cityscapes.pth",
    urls=("https://github.com/Eromera/erfnet_pytorch/raw/master/trained_models/erfnet_pretrained.pth",),
    sha256="621544dfdc7d08162ef777144544c9aafe3d2b716e4ab85e8247739caa3579d2",
    input_size=(512, 1024), mean=None, std=None,
    homepage="https://github.com/Eromera/erfnet_pytorch", license="CC BY-NC 4.0 (research use)",
    notes="Cityscapes (72.1 mIoU val); the checksum is that of the float32 restoration in shared/models"))


def list_zoo() -> list[str]:
    """Names of the zoo entries, sorted."""
    return sorted(ZOO)


def get_entry(name: str) -> ZooEntry:
    """The zoo entry ``name`` (InputError naming the known ones otherwise)."""
    try:
        return ZOO[name]
    except KeyError:
        raise InputError(f"no zoo entry {name!r}; known: {', '.join(list_zoo())}") from None


def cache_dir() -> Path:
    """``$SML_CACHE`` or ``~/.cache/sml``."""
    return Path(os.environ.get("SML_CACHE") or Path.home() / ".cache" / "sml").expanduser()


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _check(entry: ZooEntry, path: Path, origin: str) -> None:
    actual = sha256_of(path)
    if entry.sha256 is None:
        warnings.warn(f"{entry.name}: the publisher gives no checksum for {entry.filename}; the file from "
                      f"{origin} has sha256 {actual} (it is still read with weights_only=True)", stacklevel=3)
    elif actual != entry.sha256:
        raise CheckpointError(f"checksum mismatch for {entry.name} from {origin}: sha256 {actual}, expected "
                              f"{entry.sha256}. The file is corrupt, incomplete or a different release; delete "
                              f"it and retry, or pass a file you trust with weights=PATH.")


def locate(name: str) -> Path | None:
    """Where ``name``'s weights already are (mirror or cache), without downloading; None if nowhere."""
    entry = get_entry(name)
    mirror = os.environ.get("SML_MIRROR")
    candidates = ([Path(mirror) / entry.filename] if mirror else []) + [cache_dir() / entry.filename]
    return next((p for p in candidates if p.is_file()), None)


def download(url: str, dest: Path, desc: str = "", show_progress: bool = True) -> None:
    """Stream ``url`` (http(s) or file) to ``dest`` atomically with a progress bar on rank 0."""
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc or dest.name,
                       file=sys.stderr, disable=not show_progress or not distributed.is_main())
            with bar, atomic_write(dest, "wb") as fh:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    fh.write(block)
                    bar.update(len(block))
    except OSError as exc:  # URLError, HTTPError, timeouts are OSErrors
        raise CheckpointError(f"cannot download {url}: {exc}") from None


def fetch(name: str, show_progress: bool = True) -> Path:
    """Local path of zoo entry ``name``'s weights: mirror, cache, or downloaded (checked) into the cache."""
    entry = get_entry(name)
    mirror = os.environ.get("SML_MIRROR")
    if mirror:
        path = Path(mirror) / entry.filename
        if path.is_file():
            _check(entry, path, f"mirror {path}")
            return path
    cached = cache_dir() / entry.filename
    if cached.is_file():
        return cached
    if not entry.urls:
        raise CheckpointError(
            f"{entry.name}: no download URL is known for {entry.filename}. {entry.notes}. Then pass "
            f"weights=PATH (CLI --weights PATH), or put the file in $SML_MIRROR or {cache_dir()}.")
    errors = []
    for url in entry.urls:
        tmp = cached.with_name(f"{cached.name}.{os.getpid()}.part")  # per process: ranks may race
        try:
            download(url, tmp, desc=entry.filename, show_progress=show_progress)
            _check(entry, tmp, url)
        except CheckpointError as exc:
            tmp.unlink(missing_ok=True)
            errors.append(str(exc))
            continue
        os.replace(tmp, cached)
        return cached
    raise CheckpointError(f"could not fetch {entry.name}: " + " | ".join(errors)
                          + f". Download {entry.filename} by hand and pass weights=PATH or set SML_MIRROR.")
