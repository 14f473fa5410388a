"""Atomic file output: nothing half-written after a crash or a failed write.

Every result file goes through :func:`atomic_write`: data go to a temporary
file in the destination folder and are renamed over the target only once
complete (``os.replace`` is atomic on POSIX and Windows). A write that fails
(read-only folder, a file where a folder should be, disk full, permission
denied, name too long) removes the temporary file and raises
:class:`~sml.errors.OutputError` naming the path and the fix. New files get
``0666 & ~umask``, as ``open()`` would give them; a replaced file keeps its mode.
Commands call :func:`check_writable` on their output location before long work.
A folder of files that belong together (a submission) is built under a
temporary sibling name and renamed into place once complete (:func:`atomic_folder`).

Inside a run folder (:class:`sml.utils.run_folder.RunFolder`, registered with
:func:`add_guard`) every write is first shown to that folder, which refuses to
replace a file it did not write or to write through a symbolic link, and records
the new name before any byte is written.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from sml.errors import OutputError

__all__ = ["atomic_write", "write_json", "write_text", "write_bytes", "save_npy", "check_writable",
           "make_dirs", "output_error", "atomic_folder", "copy_file", "add_guard", "remove_guard", "check_guards"]

# Errors that only a write can cause: converted even when raised inside the caller's block
# (a large write goes to the OS directly), unlike e.g. EACCES, which a read there may raise too.
_WRITE_ONLY_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}

_umask_lock = threading.Lock()

# Output folders that check every write under them: objects with ``root_key`` (an absolute path) and
# ``before_write(path)``. The deepest one holding a path is asked (a run folder nested in another's).
_guards: list[Any] = []
_guards_lock = threading.Lock()


def add_guard(guard: Any) -> None:
    """Show every later write under ``guard.root_key`` to ``guard.before_write(path)`` first."""
    with _guards_lock:
        _guards.append(guard)


def remove_guard(guard: Any) -> None:
    """Undo :func:`add_guard`."""
    with _guards_lock:
        if guard in _guards:
            _guards.remove(guard)


def check_guards(path: str | os.PathLike) -> None:
    """Show ``path`` to the run folder holding it (what :func:`atomic_write` does first); for writers that
    cannot go through :func:`atomic_write` (a video encoder writing its own file)."""
    if not _guards:
        return
    target = os.path.abspath(path)
    with _guards_lock:
        holders = [g for g in _guards if target.startswith(g.root_key.rstrip(os.sep) + os.sep)]
    if holders:
        max(holders, key=lambda g: len(g.root_key)).before_write(Path(target))


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:  # elsewhere the only way to read it is to set it (briefly)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _blocking_file(path: Path, itself: bool) -> Path | None:
    """The first existing non-folder on the way to ``path`` (a file where a folder should be), or None."""
    for parent in [*reversed(path.parents), *([path] if itself else [])]:
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def output_error(path: str | os.PathLike, exc: OSError, what: str = "write") -> OutputError:
    """One-paragraph :class:`OutputError` for ``exc`` raised while writing ``path``: the cause and the fix."""
    p = Path(path)
    code = exc.errno
    reason = exc.strerror or str(exc)
    blocker = (_blocking_file(p, itself=what != "write")
               if code in (errno.ENOTDIR, errno.EEXIST, errno.ENOENT) else None)
    if blocker is not None:
        msg = (f"cannot {what} {p}: {blocker} is a file, not a folder. Remove or rename that file, or choose "
               f"another output location.")
    elif code in (errno.EACCES, errno.EPERM):
        msg = (f"cannot {what} {p}: permission denied. Choose an output location you can write to, or change "
               f"the folder's permissions.")
    elif code == errno.EROFS:
        msg = f"cannot {what} {p}: the file system is read-only. Choose an output location on a writable disk."
    elif code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        msg = (f"cannot {what} {p}: no space left on the device (or the disk quota is used up). Free some "
               f"space or choose an output location on another disk.")
    elif code == errno.ENAMETOOLONG:
        msg = f"cannot {what} {p}: the name is too long for the file system. Choose a shorter output path."
    elif code == errno.EISDIR:
        msg = f"cannot {what} {p}: a folder of that name exists. Remove it or choose another file name."
    elif code == errno.ENOENT:
        msg = (f"cannot {what} {p}: {reason} (the file system does not accept new files there). Choose an "
               f"output location on a writable disk.")
    else:
        msg = f"cannot {what} {p}: {reason}. Choose an output location on a writable disk."
    if what == "write":
        msg += " Nothing was written to that path."
    return OutputError(msg)


def make_dirs(folder: str | os.PathLike) -> Path:
    """``mkdir -p folder``; failures raise :class:`OutputError` naming the folder and the fix."""
    p = Path(folder)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(p, exc, "create the folder") from None
    return p


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, guarded: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success it replaces ``path``, on error it is removed.

    OS errors of the write itself become :class:`OutputError` naming ``path``. Under a run
    folder (:func:`add_guard`) the folder checks ``path`` first (``guarded=False``: its own record).
    """
    path = Path(path)
    if guarded:
        check_guards(path)
    make_dirs(path.parent)
    try:
        old_mode: int | None = path.stat().st_mode & 0o7777 if path.is_file() else None
        # a short prefix: the temporary name must not be too long where the final name is not
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise output_error(path, exc) from None
    try:
        try:
            with contextlib.suppress(OSError):  # some file systems (FAT, some mounts) keep fixed modes
                os.fchmod(fd, old_mode if old_mode is not None else 0o666 & ~_umask())
            fh = os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
        except BaseException:
            os.close(fd)
            raise
        with fh:
            try:
                yield fh
            except OSError as exc:
                if exc.errno in _WRITE_ONLY_ERRNOS:
                    raise output_error(path, exc) from None
                raise
            try:
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                raise output_error(path, exc) from None
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise output_error(path, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


#: the name start of :func:`check_writable`'s probe files (another process of a ``torchrun`` job may see one)
PROBE_PREFIX = ".sml-write-test."
_PROBE_TRIES = 50


def check_writable(path: str | os.PathLike, file: bool = False) -> None:
    """Raise :class:`OutputError` unless files can be created in folder ``path`` (or written as file ``path``).

    Creates a probe file and removes it again, with any folder made for it, so a
    command can check its output location before the model runs and leave nothing.
    """
    p = Path(path)
    if file:
        if p.is_dir():
            raise OutputError(f"cannot write {p}: a folder of that name exists. Remove it or choose another "
                              f"file name.")
        folder = p.parent
    else:
        if p.exists() and not p.is_dir():
            raise OutputError(f"cannot use {p} as the output folder: it is a file. Remove or rename it, or "
                              f"choose another output folder.")
        folder = p
    missing = [d for d in [folder, *folder.parents] if not d.exists()]
    try:
        for attempt in range(_PROBE_TRIES):
            make_dirs(folder)
            try:
                fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=folder)
                break
            except FileNotFoundError as exc:
                # another rank of a torchrun job, checking the same new folder, removed it again in between
                if attempt == _PROBE_TRIES - 1:
                    raise output_error(p, exc) from None
            except OSError as exc:
                raise output_error(p, exc) from None
        os.close(fd)
        os.unlink(probe)
    finally:
        for d in missing:  # deepest first: only the folders made here, and only while empty
            with contextlib.suppress(OSError):
                d.rmdir()


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as pretty JSON, atomically (NaN is written as ``NaN``, as Python's json does)."""
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=indent, sort_keys=False)
        fh.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a binary file atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def copy_file(source: str | os.PathLike, path: str | os.PathLike, chunk: int = 1 << 20) -> None:
    """Copy ``source`` to ``path`` atomically (a failed copy, e.g. a full disk, leaves nothing at ``path``)."""
    with open(source, "rb") as src, atomic_write(path, "wb") as fh:
        for block in iter(lambda: src.read(chunk), b""):
            fh.write(block)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save a NumPy array as ``.npy`` atomically (never pickled)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of ``path``; on success it becomes ``path``, on error it is removed.

    ``path`` must be absent or an empty folder; with ``replace`` an existing
    ``path`` is moved aside and removed once the new folder is in place (the
    caller has checked that everything in it may be deleted). OS errors become
    :class:`OutputError` naming ``path``.
    """
    path = Path(path)
    make_dirs(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise output_error(path, exc) from None
    try:
        with contextlib.suppress(OSError):  # mkdtemp makes 0700; a folder sml creates honours the umask
            os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        _swap_in(tmp, path, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, path: Path, replace: bool) -> None:
    """Rename folder ``tmp`` to ``path``; an existing ``path`` goes aside first when ``replace``, back on failure."""
    old: Path | None = None
    try:
        if replace and path.is_dir() and any(path.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{path.name[:64]}.", suffix=".old", dir=path.parent))
            os.replace(path, old)  # onto the empty placeholder: POSIX rename replaces an empty folder
        os.replace(tmp, path)
    except OSError as exc:
        if old is not None:
            with contextlib.suppress(OSError):  # put the old folder back, or drop the unused placeholder
                os.replace(old, path) if not path.exists() else os.rmdir(old)
        raise output_error(path, exc) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
