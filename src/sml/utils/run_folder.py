"""Output folders that sml owns: sml replaces and deletes only what it wrote there.

Every command that writes a folder enters a :class:`RunFolder` (``sml eval``, ``sml predict``,
``sml demo`` and ``sml train`` claim one; ``sml report`` and ``sml diagnose`` join the run they
read). Its ``run.json`` lists every file sml wrote into the folder (paths relative to it):

- A folder that exists, is not empty and has no ``run.json`` of sml is refused: sml never
  writes into, replaces or deletes files of a folder it did not create.
- While a command runs, every file written through :mod:`sml.utils.atomic` under the folder
  is checked first: a file that exists and is not listed (the user's) is never replaced, and
  a symbolic link on the way (a linked ``maps/`` or ``report/``) is never written through. The
  new name is appended to a journal (``.sml-run.r<rank>.journal``) before the data are
  written, so a killed run's files are known; the journal is folded into ``run.json`` when the
  command ends.
- Clearing a run (``sml eval --overwrite``, or a fresh run over an interrupted one) removes
  exactly the listed files that exist, then the folders that held them once they are empty;
  a listed path that is, or lies below, a symbolic link is refused before anything is removed.
- ``.sml-run.lock`` keeps one command per folder. It is held with ``flock`` and records the
  pid, host and start time of its process: a lock whose process is gone (``kill -9``) is taken
  over with a note; a live one refuses the second command.

Single files outside a run folder (``sml stats -o stats.json``, a figure) are replaced only
when they are recognisably sml's (:func:`written_by_sml`): JSON with a ``"format": "sml-..."``
key, PNG / SVG figures with sml's ``Software`` / creator mark (:data:`SOFTWARE`).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from sml.errors import InputError, OutputError, SMLError
from sml.utils import atomic, distributed
# The folder's names are the layout's; MANIFEST, LOCK, RUN_FILES and PARTIAL stay importable from here.
from sml.utils.run_layout import DIAGNOSTICS, LOCK, MANIFEST, METRICS, PARTIAL, RUN_FILES
from sml.utils.run_layout import JOURNAL as _JOURNAL, journal_name as _journal_name

__all__ = ["RunFolder", "active", "eval_run", "join_run", "listing", "read_manifest", "run_files", "write_manifest",
           "check_replace", "check_state_folder", "written_by_sml", "MANIFEST", "LOCK", "FORMAT", "SOFTWARE", "RUN_FILES", "PARTIAL"]

FORMAT = "sml-run/1"
#: what sml writes as the creator of its figures (PNG "Software", SVG dc:creator): how :func:`written_by_sml`
#: recognises them
SOFTWARE = "sml (matplotlib)"


# ---------------------------------------------------------------- run.json
def read_manifest(root: str | os.PathLike) -> dict[str, Any] | None:
    """``root/run.json`` of sml as a dict (``command``, ``run_id``, ``files``), or None when there is none.

    A ``run.json`` of an earlier sml (``run_id`` and ``files``, no ``format``) is an ``eval`` run whose
    top-level files (:data:`RUN_FILES`) were its own too. Any other ``run.json`` is refused.
    """
    root = Path(root)
    path = root / MANIFEST
    if not os.path.lexists(path):
        return None
    try:
        if path.is_symlink():
            raise ValueError("it is a symbolic link")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a run.json of sml ({exc}): {root} holds files that sml did not write; "
                         f"choose another output folder (sml never replaces files it did not write)") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise InputError(f"{path} is not a run.json of sml (no 'files' list): {root} holds files that sml did not "
                         f"write; choose another output folder")
    if data.get("format") is None and "run_id" in data:   # an earlier sml's eval run: it listed its maps and
        top = [f for f in RUN_FILES if f != DIAGNOSTICS]   # diagnostics.json, not what every run writes
        data = {**data, "format": FORMAT, "command": "eval", "files": [*data["files"], *top]}
    if data.get("format") != FORMAT or not isinstance(data.get("command"), str):
        raise InputError(f"{path} is not a run.json of this sml (format {data.get('format')!r}, expected "
                         f"{FORMAT!r}); choose another output folder")
    bad = [f for f in data["files"] if not _is_relative(f)]
    if bad:
        raise InputError(f"{path} lists {bad[0]!r}, which is not a path inside {root}; sml deletes and replaces "
                         f"only files inside its run folders. Fix or delete {path}")
    return data


def _is_relative(name: Any) -> bool:
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name:
        return False
    parts = name.split("/")
    return all(p not in ("", ".", "..") for p in parts)


def _read_journals(root: Path) -> set[str]:
    names: set[str] = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            if _JOURNAL.match(entry.name) and entry.is_file(follow_symlinks=False):
                with open(entry.path, encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        with contextlib.suppress(ValueError):  # a torn last line: that file was never written
                            name = json.loads(line)
                            if _is_relative(name):
                                names.add(name)
    return names


def listing(root: str | os.PathLike) -> set[str] | None:
    """Every file sml recorded writing in ``root`` (run.json and unfolded journals); None without run.json."""
    manifest = read_manifest(root)
    if manifest is None:
        return None
    return set(manifest["files"]) | _read_journals(Path(root))


def run_files(root: str | os.PathLike) -> set[str] | None:
    """The files of the eval run in ``root``; None for a folder whose run.json does not list its maps
    (none, or one written by ``sml report`` for an older run: then every map is taken)."""
    manifest = read_manifest(root)
    if manifest is None or manifest.get("adopted"):
        return None
    return set(manifest["files"]) | _read_journals(Path(root))


def write_manifest(root: str | os.PathLike, command: str, run_id: str, files: Iterable[str],
                   adopted: bool = False) -> None:
    """Write ``root/run.json`` (atomically; never through a guard: it is the guard's own record)."""
    data: dict[str, Any] = {"format": FORMAT, "command": command, "run_id": run_id, "files": sorted(set(files))}
    if adopted:
        data["adopted"] = True
    with atomic.atomic_write(Path(root) / MANIFEST, "w", guarded=False) as fh:
        json.dump(data, fh, indent=1)
        fh.write("\n")


# ---------------------------------------------------------------- the lock
def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, Linux); None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else fields[19]   # a zombie has exited
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    """Whether ``pid`` runs on this host (and is the process that started at ``started``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    now = _start_time(pid)
    if os.path.isdir("/proc") and now is None:
        return False   # gone or a zombie
    return started is None or now is None or now == started


def _holder(text: str) -> dict[str, Any]:
    """The lock file's record; an earlier sml wrote ``"<pid> <run id>"`` (host unknown)."""
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict):
            return data
    parts = text.split()
    if parts and parts[0].isdigit():
        return {"pid": int(parts[0]), "host": None}
    return {}


def _describe(holder: dict[str, Any]) -> str:
    bits = [f"pid {holder.get('pid', '?')}"]
    if holder.get("host"):
        bits.append(f"on {holder['host']}")
    if holder.get("since"):
        bits.append(f"since {holder['since']}")
    return " ".join(bits)


def _live(holder: dict[str, Any]) -> bool:
    """Judged from the record alone (no flock): alive unless its pid is provably gone on this host."""
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int):
        return False
    if host not in (None, socket.gethostname()):
        return True   # another machine: cannot be checked from here
    return _alive(pid, holder.get("started"))


class _Lock:
    """``.sml-run.lock``: ``flock``-ed while held, with the holder's pid, host and start time inside."""

    def __init__(self, root: Path, command: str) -> None:
        self.path, self.command, self.fd = root / LOCK, command, -1
        self.taken_over: dict[str, Any] | None = None

    def _refusal(self, holder: dict[str, Any]) -> InputError:
        return InputError(
            f"another sml command ({_describe(holder)}) is writing to {self.path.parent} (its lock {self.path}); wait "
            f"for it to finish, or choose another output folder. If no sml command is running there (it was killed "
            f"on another machine), delete {self.path}")

    def peek(self) -> None:
        """Refuse when a live command holds the lock; changes nothing."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise atomic.output_error(self.path, exc, "open the lock") from None
        try:
            holder = _holder(os.read(fd, 4096).decode("utf-8", "replace"))
            if _busy(self._flock(fd, shared=True), holder):
                raise self._refusal(holder)
        finally:
            os.close(fd)   # and with it the shared flock

    @staticmethod
    def _flock(fd: int, shared: bool = False) -> bool | None:
        """True: got it; False: another process holds it; None: this file system has no flock."""
        try:
            import fcntl
        except ImportError:
            return None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            return None

    def acquire(self, run_id: str) -> None:
        for _ in range(10):   # the lock file may be unlinked by its releaser between our open and flock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise OutputError(f"{self.path} is a symbolic link; sml never writes through links in its run "
                                      f"folders. Remove it, or choose another output folder") from None
                raise atomic.output_error(self.path, exc, "create the lock") from None
            got = self._flock(fd)
            holder = _holder(os.read(fd, 4096).decode("utf-8", "replace"))
            if _busy(got, holder):
                os.close(fd)
                raise self._refusal(holder)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self.fd = fd
            self.taken_over = holder or None
            self._write(run_id)
            return
        raise InputError(f"could not take the lock {self.path}: other sml commands keep taking it; try again")

    def _write(self, run_id: str) -> None:
        pid = os.getpid()
        record = {"pid": pid, "host": socket.gethostname(), "started": _start_time(pid),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": self.command, "run_id": run_id}
        try:
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)
            os.write(self.fd, (json.dumps(record) + "\n").encode())
        except OSError as exc:
            self.release()
            raise atomic.output_error(self.path, exc) from None

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self.path)   # before the flock goes: a waiting opener then re-checks the inode
            os.close(self.fd)
            self.fd = -1


def _busy(got: bool | None, holder: dict[str, Any]) -> bool:
    """Whether the lock is held, from its flock (``got``: True free, False held, None no flock) and record."""
    if got is False:
        return True
    if got is None:
        return _live(holder)   # no flock on this file system: judge by the record
    # The flock is free, so its holder is gone; unless an earlier sml (which did not flock) runs here.
    pid, host = holder.get("pid"), holder.get("host", "?")
    return (isinstance(pid, int) and pid != os.getpid() and host in (None, socket.gethostname())
            and _alive(pid, holder.get("started")))


# ---------------------------------------------------------------- single files
def written_by_sml(path: str | os.PathLike) -> bool:
    """Whether the file ``path`` carries sml's mark: JSON ``"format": "sml-..."``, a PNG whose ``Software``
    text or an SVG whose creator is :data:`SOFTWARE`."""
    p = Path(path)
    if p.is_symlink() or not p.is_file():
        return False
    suffix = p.suffix.lower()
    try:
        if suffix == ".json":
            with open(p, "rb") as fh:
                data = json.loads(fh.read(64 << 20).decode("utf-8"))
            return isinstance(data, dict) and str(data.get("format", "")).startswith("sml-")
        if suffix == ".png":
            from PIL import Image

            with Image.open(p) as im:
                return str(getattr(im, "text", {}).get("Software", "")).startswith("sml")
        if suffix == ".svg":
            with open(p, "rb") as fh:
                head = fh.read(8192).decode("utf-8", "replace")
            return re.search(r"<dc:creator>\s*<cc:Agent>\s*<dc:title>sml\b", head) is not None
    except (OSError, ValueError, SyntaxError):
        return False
    return False


def check_replace(path: str | os.PathLike, what: str = "output file") -> None:
    """Refuse to write the single file ``path`` over a file that sml did not write (:func:`written_by_sml`)."""
    p = Path(path)
    if p.is_symlink():
        raise OutputError(f"{what} {p} is a symbolic link; sml never writes through links. Remove the link or "
                          f"choose another path")
    if p.exists() and not p.is_dir() and not written_by_sml(p):
        raise OutputError(f"{what} {p} exists and was not written by sml (it has no sml mark); sml never replaces "
                          f"such a file. Move it away or choose another path")


#: what a resume-state folder of sml holds (sml.pipelines.resume's chunks, its meta.json, a killed write's temporary)
_STATE_FILES = re.compile(r"^(meta\.json|g\d+\.r\d+\.c\d+\.npz|\..+\.tmp)$")


def check_state_folder(folder: str | os.PathLike) -> None:
    """Refuse a resume-state folder (``sml stats``' ``OUT.partial/``, removed whole when the run ends) that holds
    anything but sml's chunks."""
    p = Path(folder)
    if not os.path.lexists(p):
        return
    if p.is_symlink() or not p.is_dir():
        raise OutputError(f"{p} is where sml keeps the run's partial state, but it is "
                          f"{'a symbolic link' if p.is_symlink() else 'a file'}; move it away or choose another output")
    for entry in os.scandir(p):
        if entry.is_symlink() or not entry.is_file() or not _STATE_FILES.match(entry.name):
            raise OutputError(f"{p} is where sml keeps the run's partial state (removed whole when the run ends), "
                              f"but it holds {entry.name}, which sml did not write; move that out of {p}, or "
                              f"choose another output")


# ---------------------------------------------------------------- the folder
_active: dict[str, "RunFolder"] = {}   # root -> the folder this process holds (a nested join is a no-op)
_active_lock = threading.Lock()


def active(root: str | os.PathLike) -> "RunFolder | None":
    """The :class:`RunFolder` this process holds for ``root``, if any."""
    with _active_lock:
        return _active.get(os.path.abspath(root))


class RunFolder:
    """An output folder owned by sml (see the module docstring); a context manager, collective under torchrun.

    ``command``: which command's folder this is (``eval``, ``predict``, ``demo``, ``train``); another
    command's folder is refused. ``join``: enter the existing run that ``root`` holds (``sml report``
    into an eval run); a run without run.json (an older sml's) gets one listing what is written now.
    ``clear``: remove the previous run's listed files first (except those under ``keep``).
    ``finished``: the file that marks a finished run, refused unless ``overwrite``. ``expected``:
    paths the command will write, checked before any work (an unlisted file there is refused).
    ``scratch``: a sub-folder whose every file must be listed (it is removed whole by its owner).
    """

    def __init__(self, root: str | os.PathLike, command: str, *, join: bool = False, clear: bool = False,
                 keep: str | None = None, finished: str | None = None, overwrite: bool = False,
                 expected: Iterable[str] = (), scratch: str | None = None) -> None:
        self.root, self.command, self.join = Path(root), command, join
        self.clear, self.keep, self.finished, self.overwrite = clear, keep, finished, overwrite
        self.expected, self.scratch = list(expected), scratch
        self.run_id = uuid.uuid4().hex
        self.took_over: dict[str, Any] | None = None
        self._lock: _Lock | None = None
        self._known: set[str] = set()
        self._safe_dirs: set[str] = set()
        self._journal_fd = -1
        self._mutex = threading.Lock()
        self._made_root = False
        self._adopted = False
        self._fresh = False        # no run.json before: removed again when nothing gets written
        self._disk_command = command
        self._nested = False

    # ---------------------------------------------------------- deciding (no side effect)
    def check(self) -> None:
        """Everything :meth:`__enter__` would refuse, refused now, changing nothing (before a model loads)."""
        key = os.path.abspath(self.root)
        if key in _active:
            return
        if self.root.is_dir():
            _Lock(self.root, self.command).peek()
        self._inspect()

    def _inspect(self) -> tuple[dict[str, Any] | None, set[str], list[str]]:
        """(manifest, listed files, files to delete); refuses what must not be touched."""
        if not self.root.is_dir():
            if self.join:
                raise InputError(f"run directory {self.root} does not exist")
            return None, set(), []
        manifest, listed = self._read_state()
        delete = sorted(f for f in listed if self.clear and not (self.keep and _under(f, self.keep))
                        and os.path.lexists(self.root / f))
        for rel in [*delete, *self.expected]:
            self._no_link(rel, deleting=rel in delete)
        taken = [e for e in self.expected if e not in listed and os.path.lexists(self.root / e)]
        if taken:
            raise InputError(
                f"{self.root / taken[0]} exists and sml did not write it (the folder's run.json does not list it"
                f"{f'; {len(taken) - 1} more such files' if len(taken) > 1 else ''}): sml never replaces such a "
                f"file. Move it away, or choose another output folder")
        if self.scratch:
            self._check_scratch(listed)
        return manifest, listed, delete

    def _read_state(self) -> tuple[dict[str, Any] | None, set[str]]:
        """The folder's run.json and the files it (and any journal) lists; a folder that is not sml's,
        another command's, or a finished run without ``overwrite`` are refused."""
        root = self.root
        manifest = read_manifest(root)
        if manifest is None:
            # a write probe is sml's: another rank of a torchrun job checking the same folder right now
            others = sorted(e for e in os.listdir(root) if e != LOCK and not _JOURNAL.match(e)
                            and not e.startswith(atomic.PROBE_PREFIX))
            if others and not self.join:
                shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
                raise InputError(
                    f"output folder {root} already holds files that sml did not write ({shown}) and no run.json of "
                    f"sml: sml never writes into, replaces or deletes such files. Choose a new or empty folder for "
                    f"the output, or move those files away")
            return None, set()
        self._check_command(manifest)
        listed = set(manifest["files"]) | _read_journals(root)
        if self.finished and self.finished in listed and (root / self.finished).is_file() and not self.overwrite:
            raise InputError(f"{root} already holds a finished run ({self.finished}); pass --overwrite to "
                             f"replace it (the files its run.json lists are removed first, nothing else), or "
                             f"choose another --out")
        return manifest, listed

    def _check_command(self, manifest: dict[str, Any]) -> None:
        if manifest["command"] != self.command:
            raise InputError(
                f"{self.root} holds the output of `sml {manifest['command']}` (see its run.json), not of "
                f"`sml {self.command}`; choose another output folder")

    def _no_link(self, rel: str, deleting: bool = False) -> None:
        """Refuse when ``rel`` (or, ``deleting``, the file itself) is reached through a symbolic link."""
        parts = rel.split("/")
        upto = len(parts) if deleting else len(parts) - 1
        for i in range(1, upto + 1):
            sub = "/".join(parts[:i])
            if sub in self._safe_dirs:
                continue
            try:
                st = os.lstat(self.root / sub)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise atomic.output_error(self.root / sub, exc, "read") from None
            if stat.S_ISLNK(st.st_mode):
                raise OutputError(
                    f"{self.root / sub} is a symbolic link inside the run folder {self.root}; sml never writes, "
                    f"replaces or deletes through links (nothing was changed). Replace the link with a real folder "
                    f"or file, or choose another output folder")
            if i < len(parts):
                self._safe_dirs.add(sub)

    def _check_scratch(self, listed: set[str]) -> None:
        top = self.root / self.scratch  # type: ignore[operator]
        if not os.path.lexists(top):
            return
        self._no_link(f"{self.scratch}/x")
        for folder, dirs, files in os.walk(top):
            for name in dirs + files:
                p = Path(folder) / name
                rel = p.relative_to(self.root).as_posix()
                if p.is_symlink() or (name in files and rel not in listed and not _temporary(name)):
                    raise InputError(
                        f"{p} is not a file of this run (run.json does not list it), but {top} is sml's scratch "
                        f"folder, removed whole when the run ends; move that file out of {top}")

    # ---------------------------------------------------------- entering
    def __enter__(self) -> "RunFolder":
        key = os.path.abspath(self.root)
        with _active_lock:
            outer = _active.get(key)
        if outer is not None:   # the same folder, already held by this process (a report inside eval's run)
            if outer.command != self.command:
                self._check_command({"command": outer.command})
            self._nested, self.run_id = True, outer.run_id
            return self
        err = None
        state: Any = None
        if distributed.is_main():
            try:
                state = self._claim()
            except SMLError as exc:
                err = (type(exc), str(exc))
        err = distributed.broadcast_object(err)
        if err is not None:
            raise err[0](err[1])
        self.run_id, self._known = distributed.broadcast_object((self.run_id, state))
        self._install()
        return self

    def _claim(self) -> set[str]:
        root = self.root
        self._made_root = not root.exists()
        if not self.join:
            atomic.check_writable(root)
            atomic.make_dirs(root)
        self._inspect()   # before the lock: a folder that is not sml's gets no lock file
        self._lock = _Lock(root, self.command)
        try:
            self._lock.acquire(self.run_id)
            manifest, listed, delete = self._inspect()   # again, now that no one else can change it
            if self._lock.taken_over:
                self._note_takeover(self._lock.taken_over)
            self._fresh = manifest is None
            if manifest is not None and (self.join or self.keep):   # joined or resumed: the same run goes on
                self.run_id = manifest.get("run_id") or self.run_id
            self._adopted = manifest.get("adopted", False) if manifest else self.join
            self._disk_command = manifest["command"] if manifest else self.command
            self._remove(delete)
            kept = {f for f in listed if f not in delete}
            if manifest is None or kept != set(manifest["files"]) or self.run_id != manifest.get("run_id"):
                write_manifest(root, self._disk_command, self.run_id, kept, adopted=self._adopted)
            for entry in os.scandir(root):
                if _JOURNAL.match(entry.name):
                    os.unlink(entry.path)
            return kept
        except BaseException:
            self._lock.release()
            self._lock = None
            if self._made_root:
                with contextlib.suppress(OSError):
                    os.rmdir(root)
            raise

    def _note_takeover(self, holder: dict[str, Any]) -> None:
        from sml.utils.progress import write_message

        self.took_over = holder
        write_message(f"sml: note: took over {self.root / LOCK}, left by an sml command that is gone "
                      f"({_describe(holder)}); its files are kept as run.json lists them")

    def _remove(self, names: Iterable[str]) -> None:
        """Unlink the listed regular files ``names`` (checked: no links), then their emptied folders."""
        parents: set[str] = set()
        for rel in names:
            p = self.root / rel
            try:
                if stat.S_ISREG(os.lstat(p).st_mode):
                    os.unlink(p)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise atomic.output_error(p, exc, "remove the old run's file") from None
            parts = rel.split("/")[:-1]
            parents.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        for sub in sorted(parents, key=lambda s: s.count("/"), reverse=True):
            with contextlib.suppress(OSError):   # not empty: it holds files sml did not write
                os.rmdir(self.root / sub)

    def _install(self) -> None:
        with _active_lock:
            _active[os.path.abspath(self.root)] = self
        atomic.add_guard(self)

    # ---------------------------------------------------------- while writing
    @property
    def root_key(self) -> str:
        return os.path.abspath(self.root)

    def before_write(self, path: Path) -> None:
        """Called by :func:`sml.utils.atomic.atomic_write` for every file under the folder, before writing."""
        rel = Path(os.path.relpath(os.path.abspath(path), self.root_key)).as_posix()
        if rel == MANIFEST:
            raise OutputError(f"cannot write {path}: it is the run folder's own record of its files")
        self._no_link(rel)
        with self._mutex:
            if rel in self._known:
                return
            if os.path.lexists(path):
                raise OutputError(f"cannot write {path}: a file sml did not write is there (the run folder's "
                                  f"run.json does not list it); sml never replaces such a file. Move it away or "
                                  f"choose another output folder. Nothing was written to that path.")
            self._journal(rel)
            self._known.add(rel)

    def _journal(self, rel: str) -> None:
        path = self.root / _journal_name(distributed.rank())
        try:
            if self._journal_fd < 0:
                self._journal_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                           | getattr(os, "O_NOFOLLOW", 0), 0o666)
            os.write(self._journal_fd, (json.dumps(rel) + "\n").encode("utf-8"))
        except OSError as exc:
            raise atomic.output_error(path, exc) from None

    def commit(self) -> None:
        """Write run.json now with every file recorded so far (rank 0; ``sml eval`` does it before metrics.json)."""
        if self._nested or not distributed.is_main():
            return
        files = self._known | _read_journals(self.root)
        write_manifest(self.root, self._disk_command, self.run_id, files, adopted=self._adopted)

    def remove(self, prefix: str) -> None:
        """Remove this run's listed files under ``prefix`` (rank 0), e.g. the partial state once results exist."""
        if distributed.is_main():
            names = sorted(f for f in self._known | _read_journals(self.root) if _under(f, prefix))
            for rel in names:
                self._no_link(rel, deleting=True)
            self._remove(names)
            if os.path.isdir(self.root / prefix):
                with contextlib.suppress(OSError):
                    os.rmdir(self.root / prefix)

    # ---------------------------------------------------------- leaving
    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self._nested:
            return
        if exc_type is None:   # after a failure the other ranks may never arrive
            distributed.barrier()
        atomic.remove_guard(self)
        with _active_lock:
            _active.pop(self.root_key, None)
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1
        if self._lock is None:
            return
        try:
            self._fold(finished=exc_type is None)
        finally:
            self._lock.release()
            if self._made_root:
                with contextlib.suppress(OSError):
                    os.rmdir(self.root)   # only while empty

    def _fold(self, finished: bool) -> None:
        """run.json := every recorded file that exists; journals removed once folded (all of them on success)."""
        files = {f for f in self._known | _read_journals(self.root) if os.path.lexists(self.root / f)}
        if not files and self._fresh:
            (self.root / MANIFEST).unlink(missing_ok=True)   # nothing was written: leave nothing
        elif not finished and self._unchanged(files):
            pass   # refused or interrupted before writing anything new: run.json stays as it was
        else:
            try:
                write_manifest(self.root, self._disk_command, self.run_id, files, adopted=self._adopted)
            except OutputError:
                if finished:
                    raise
                return   # keep the journals: they still list the files
        for entry in os.scandir(self.root):
            m = _JOURNAL.match(entry.name)
            if m and (finished or int(m.group(1)) == 0):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


    def _unchanged(self, files: set[str]) -> bool:
        """Whether run.json already lists exactly ``files`` (then a failed command leaves it untouched)."""
        try:
            manifest = read_manifest(self.root)
        except InputError:
            return False
        return manifest is not None and set(manifest["files"]) == files


def _under(rel: str, prefix: str) -> bool:
    return rel == prefix or rel.startswith(prefix.rstrip("/") + "/")


def _temporary(name: str) -> bool:
    """An atomic write's temporary file (``.NAME.XXXX.tmp``), left only by a killed process."""
    return name.startswith(".") and name.endswith(".tmp")


def eval_run(out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
             expected: Iterable[str] = ()) -> RunFolder:
    """The run folder of ``sml eval``: a finished run (metrics.json) is replaced only with ``overwrite``; a fresh
    (not resumed) run first removes the listed files of the previous one; the partial state is kept on resume."""
    return RunFolder(out, "eval", clear=overwrite or not resume, keep=PARTIAL if resume else None,
                     finished=METRICS, overwrite=overwrite, expected=[*RUN_FILES, *expected], scratch=PARTIAL)


def join_run(run_dir: str | os.PathLike, expected: Iterable[str] = ()) -> RunFolder:
    """Write into the eval run ``run_dir`` (``sml report``, ``sml diagnose``): only new files, or its own."""
    return RunFolder(run_dir, "eval", join=True, expected=expected)
