"""The zoo: weights of registered configurations, fetched into a cache with a checksum check.

Where a file comes from, first match wins: the ``weights=`` path given by the caller; a
mirror (``mirror=`` or ``$SML_MIRROR``: a folder, or a ``file://``/``http(s)://`` base URL,
holding files by the configuration's ``filename``); the cache ``$SML_CACHE`` (default
``~/.cache/sml``; a cached file is hashed again every time it is used, so a truncated or
damaged one is refused, naming it); the configuration's URLs, downloaded with a progress
bar, checked, then moved into the cache atomically.

Checksum policy: a configuration's sha256 is the checksum of exactly the file its URLs (or
a mirror) serve, and only a matching file is accepted. A configuration whose publisher gave
no checksum (``sha256=None``) accepts the file but warns with its computed sha256; it is
still read with ``weights_only=True``, so it cannot run code.
"""
from __future__ import annotations

import os
import sys
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from sml.errors import CheckpointError, InputError
from sml.models.files import sha256_of  # noqa: F401  (the sha256 of a file; importable from here)
from sml.models.registry import ModelConfig, get_config, list_pretrained
from sml.utils import atomic, distributed
from sml.utils.atomic import atomic_write


def list_zoo() -> list[str]:
    """Names (``arch.tag``) of the configurations that have a weights file (by URL or by hand)."""
    return [n for n in list_pretrained() if get_config(n).filename]


def get_entry(name: str) -> ModelConfig:
    """The configuration ``name`` (``arch`` or ``arch.tag``) with a weights file, or InputError."""
    cfg = get_config(name)
    if not cfg.filename:
        raise InputError(f"{cfg.name} has no published weights file; known zoo entries: {', '.join(list_zoo())}")
    return cfg


def cache_dir() -> Path:
    """``$SML_CACHE`` or ``~/.cache/sml``."""
    return Path(os.environ.get("SML_CACHE") or Path.home() / ".cache" / "sml").expanduser()


def check_sha256(cfg: ModelConfig, path: Path, origin: str, fix: str | None = None) -> None:
    """Refuse ``path`` unless its sha256 is ``cfg.sha256`` (warn with the hash when none is known); ``fix``:
    what the message tells the user to do."""
    actual = sha256_of(path)
    if cfg.sha256 is None:
        warnings.warn(f"{cfg.name}: the publisher gives no checksum for {cfg.filename}; the file from "
                      f"{origin} has sha256 {actual} (it is still read with weights_only=True)", stacklevel=3)
    elif actual != cfg.sha256.lower():
        raise CheckpointError(f"checksum mismatch for {cfg.name} from {origin}: sha256 {actual}, expected "
                              f"{cfg.sha256}. The file is corrupt, incomplete or a different release; "
                              f"{fix or 'delete it and retry'}, or pass a file you trust with --weights PATH.")


def _mirror_source(mirror: str, filename: str) -> tuple[str, Path | None]:
    """(URL or path text, local path or None) of ``filename`` in a mirror folder or base URL."""
    if "://" in mirror:
        return mirror.rstrip("/") + "/" + urllib.parse.quote(filename), None
    path = Path(mirror).expanduser() / filename
    return str(path), path


def locate(name: str) -> Path | None:
    """Where ``name``'s weights already are (mirror folder or cache), without downloading; None if nowhere."""
    cfg = get_entry(name)
    mirror = os.environ.get("SML_MIRROR")
    candidates = [_mirror_source(mirror, cfg.filename)[1]] if mirror else []
    candidates.append(cache_dir() / cfg.filename)
    return next((p for p in candidates if p is not None and p.is_file()), None)


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
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts are OSErrors; bad URLs ValueErrors
        raise CheckpointError(f"cannot download {url}: {exc}") from None


def fetch(name: str, show_progress: bool = True, mirror: str | None = None) -> Path:
    """Local path of ``name``'s weights: mirror folder, cache, or downloaded (checked) into the cache.

    ``mirror`` (default ``$SML_MIRROR``): a folder or a base URL holding the file by its name.
    """
    cfg = get_entry(name)
    mirror = mirror or os.environ.get("SML_MIRROR")
    sources: list[str] = []
    if mirror:
        url, local = _mirror_source(mirror, cfg.filename)
        if local is not None:
            if not local.is_file():
                raise InputError(f"mirror folder {Path(mirror).expanduser()} has no {cfg.filename} (for "
                                 f"{cfg.name}); put the file there under that name or give another --mirror")
            check_sha256(cfg, local, f"mirror {local}")
            return local
        sources.append(url)
    cached = cache_dir() / cfg.filename
    if cached.is_file():
        # hashed again at every use: a truncated or damaged cached file is never used (nor called checked)
        check_sha256(cfg, cached, f"the cache ({cached})",
                     fix=f"delete {cached} and fetch it again (`sml models download {cfg.name}`)")
        return cached
    sources += list(cfg.urls)
    if not sources:
        raise CheckpointError(
            f"{cfg.name}: no download URL is known for {cfg.filename}: {cfg.notes}. Give --weights PATH "
            f"(Python: weights=PATH), or put the file in a mirror folder (--mirror DIR, $SML_MIRROR) or in "
            f"{cache_dir()}.")
    errors = []
    atomic.make_dirs(cached.parent)
    for url in sources:
        tmp = cached.with_name(f"{cached.name}.{os.getpid()}.part")  # per process: ranks may race
        try:
            download(url, tmp, desc=cfg.filename, show_progress=show_progress)
            check_sha256(cfg, tmp, url)
            os.replace(tmp, cached)
        except CheckpointError as exc:
            errors.append(str(exc))
            continue
        except OSError as exc:
            raise atomic.output_error(cached, exc) from None
        finally:
            tmp.unlink(missing_ok=True)   # a failed or interrupted fetch leaves no partial file
        return cached
    raise CheckpointError(f"could not fetch {cfg.name}: " + " | ".join(errors)
                          + f". Download {cfg.filename} by hand and pass --weights PATH or a --mirror.")


def install(name: str, mirror: str | None = None, show_progress: bool = True) -> Path:
    """``sml models download``: fetch ``name``'s weights (checked) into the cache so the name loads alone."""
    cfg = get_entry(name)
    path = fetch(name, show_progress=show_progress, mirror=mirror)
    cached = cache_dir() / cfg.filename
    if path != cached:  # from a mirror folder: copy (checked above) so later loads need no mirror
        atomic.copy_file(path, cached)  # a full disk leaves no partial file
    return cached
