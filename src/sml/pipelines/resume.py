"""Resumable runs: partial state as ``.npz`` files (``allow_pickle=False``) with a JSON part.

A long run (``sml stats``, ``sml eval``) saves the state of the frames it
finished every few frames, as a new chunk file in a folder beside its output
(each frame in exactly one chunk, each chunk written atomically). A run started
with ``--resume`` reads every chunk, skips the frames they hold and computes the
rest, with any number of processes; a crash at any moment loses at most the
frames since the last save and never counts a frame twice.

A chunk is a payload of dicts, lists, strings, numbers and NumPy arrays (the
``state_dict()`` of the metric and statistics objects, see
:mod:`sml.utils.state`): every array becomes an entry of the ``.npz`` file and
the rest, with each array replaced by ``{"__array__": name}``, is JSON stored
in the entry ``__json__``. Nothing is unpickled, so a tampered file cannot run
code; a damaged one is refused naming the file and the recovery.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from sml.errors import InputError
from sml.utils import atomic, distributed, schema

_FILE = re.compile(r"^g(\d+)\.r(\d+)\.c(\d+)\.npz$")
_JSON = "__json__"


# ---------------------------------------------------------------- payload <-> npz + JSON
def _split(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``obj`` with every array moved into ``arrays`` (replaced by a reference to its entry)."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise TypeError(f"cannot store a {obj.dtype} array in a resume chunk (numbers only)")
        name = f"a{len(arrays)}"
        arrays[name] = obj
        return {"__array__": name}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("resume payload keys must be strings")
        return {k: _split(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, arrays) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a resume chunk")


def _join(obj: Any, arrays: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        return {k: _join(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, arrays) for v in obj]
    return obj


def write_chunk(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` (dicts, lists, scalars, numeric arrays) atomically as one ``.npz`` file."""
    arrays: dict[str, np.ndarray] = {}
    text = json.dumps(_split(payload, arrays), allow_nan=True)
    arrays[_JSON] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    with atomic.atomic_write(Path(path)) as fh:
        np.savez(fh, **arrays)


def read_chunk(path: str | os.PathLike) -> dict[str, Any]:
    """Read a chunk written by :func:`write_chunk`; a damaged file is refused naming it and the fix."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        payload = json.loads(arrays.pop(_JSON).tobytes().decode("utf-8"))
        return _join(payload, arrays)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise InputError(
            f"the resume chunk {path} is damaged or not a chunk of sml ({type(exc).__name__}: {exc}); delete "
            f"that file to compute its frames again with --resume, or delete {path.parent.parent} and run "
            f"again without --resume") from None


# ---------------------------------------------------------------- when to save
class SavePolicy:
    """When a pipeline writes a resume chunk: every ``every`` frames, or (``every=None``) by time.

    By time, a chunk is due once ``interval`` seconds have passed since the last
    one (or the start). A chunk holds everything added since the previous one, so
    the bytes written do not depend on the policy; time keeps saves rare where
    frames are fast (a GPU, small frames: a frame count tuned for a CPU would
    write every fraction of a second) while bounding what an interruption loses.
    """

    def __init__(self, every: int | None = None, interval: float = 300.0) -> None:
        if every is not None and every < 1:
            raise InputError(f"--save-every must be at least 1 (got {every})")
        if not interval >= 0:
            raise InputError(f"--save-interval must be a number of seconds >= 0 (got {interval})")
        self.every, self.interval = every, float(interval)
        self._last = time.monotonic()

    def due(self, n: int) -> bool:
        """Whether a chunk is due after this process's ``n``-th frame (1-based)."""
        if self.every is not None:
            return n % self.every == 0
        return time.monotonic() - self._last >= self.interval

    def saved(self) -> None:
        """Record that a chunk was just written (the interval restarts)."""
        self._last = time.monotonic()


# ---------------------------------------------------------------- what identifies a run
def dataset_identity(dataset: Any) -> dict[str, Any]:
    """The data set a run reads: its kind, root folder and split."""
    root = getattr(dataset, "root", None)
    return {"kind": str(getattr(dataset, "kind", "") or type(dataset).__name__),
            "root": None if root is None else str(Path(root).resolve()), "split": getattr(dataset, "split", None)}


def _signature(path: Any) -> list[Any]:
    if path is None:
        return [None, None, None]
    try:
        st = os.stat(path)
    except OSError:
        return [str(path), None, None]
    return [str(path), int(st.st_size), int(st.st_mtime_ns)]


def frame_files(dataset: Any, indices: list[int]) -> list[list[Any]]:
    """Per frame ``[id, image, size, mtime_ns, labels, size, mtime_ns]``: what a resumed run must find unchanged."""
    out = []
    for i in indices:
        f = dataset.frames[i]
        out.append([f.id, *_signature(getattr(f, "image_path", None)), *_signature(getattr(f, "label_path", None))])
    return out


def _frame_changes(saved: Any, current: Any) -> str:
    """Which frames differ between two :func:`frame_files` lists, in words."""
    if not isinstance(saved, list) or not all(isinstance(r, list) and len(r) == 7 for r in saved):
        return "the frame list"
    old = {r[0]: r for r in saved}
    new = {r[0]: r for r in current}
    changed = [f"frame {fid}: {what} {row[k] or old[fid][k]} ({_file_change(old[fid][k:k + 3], row[k:k + 3])})"
               for fid, row in new.items() if fid in old
               for k, what in ((1, "image"), (4, "labels")) if old[fid][k:k + 3] != row[k:k + 3]]
    gone, added = set(old) - set(new), set(new) - set(old)
    if gone or added:
        changed.append(f"{len(added)} frames not in the saved run, {len(gone)} saved frames not in this one")
    if not changed:
        return "the frame order"
    return "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")


def _file_change(was: list[Any], now: list[Any]) -> str:
    if was[0] != now[0]:
        return f"another file: {was[0]} before"
    if now[1] is None:
        return "it is gone"
    if was[1] != now[1]:
        return f"{was[1]} bytes when saved, {now[1]} now"
    return "modified since the partial state was saved"


def run_digest(meta: dict[str, Any]) -> str:
    """sha256 of a run's identity (its ``meta``, keys sorted): what every chunk of that run carries."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True, allow_nan=True).encode()).hexdigest()


# ---------------------------------------------------------------- the store
class Chunk(dict):
    """A chunk's payload (a dict) with ``path``, the file it was read from (for messages that name it)."""

    path: Path


def _this_run(run: str, ctx: schema.Context) -> str:
    digest = ctx.extra["digest"]
    if run != digest:
        raise schema.Invalid(f"belongs to another run (other data set, frames, network, statistics or settings; "
                             f"identity {run[:12]}..., this run's {digest[:12]}...)")
    return run


#: A chunk as :meth:`ResumeStore.save` writes it: the run's digest and the pipeline's payload
CHUNK = schema.Schema((
    schema.Field("run", type="str", required=True, check=_this_run,
                 says={"missing": "carries no run identity (written by an older sml?)",
                       "type": "carries no run identity (written by an older sml?)",
                       "check": "{text}"}),
    schema.Field("payload", type="mapping", required=True,
                 says={"missing": "holds no state", "type": "holds no state"}),
), says={"mapping": "holds no state"},
    voice=schema.Voice(prefix="the resume chunk {source} ", fix=(
        "Its frames cannot be counted in this run: delete that file to compute them again with --resume, or run "
        "again without --resume to start over.")))


class ResumeStore:
    """Partial-state folder of one run; ``meta`` identifies the run.

    ``meta`` holds everything the state depends on: the data set (kind, root,
    split), its frames with their files' sizes and modification times
    (:func:`frame_files`), the methods and their settings, the protocol, the
    network's and the statistics' identities. It is kept in ``meta.json`` and
    its digest in every chunk, so a resumed run refuses a folder of another run
    or whose frames changed on disk, and any chunk copied in from another run.

    State is append-only: every save writes a new chunk holding only the frames
    finished since the previous save (so saving costs O(new frames), not
    O(everything so far)). Chunks are named ``g<start>.r<rank>.c<k>.npz``;
    a resumed run reads every chunk, whichever process count wrote them.
    """

    def __init__(self, folder: str | os.PathLike, meta: dict[str, Any]):
        self.folder = Path(folder)
        self.meta = json.loads(json.dumps(meta))  # normalised as it will read back
        self.digest = run_digest(self.meta)
        self.generation = 0
        self._chunk = 0

    def _files(self) -> dict[int, list[Path]]:
        gens: dict[int, list[Path]] = {}
        if self.folder.is_dir():
            for p in self.folder.iterdir():
                m = _FILE.match(p.name)
                if m:
                    gens.setdefault(int(m.group(1)), []).append(p)
        return gens

    def start(self, resume: bool) -> list[Chunk]:
        """Every saved chunk of this run (``resume``), or clear old state; collective call.

        Refused, naming the fix: a folder of another run (or whose frames changed since), a chunk of another run.
        """
        chunks: list[Chunk] = []
        gens = self._files()
        if resume and (self.folder / "meta.json").is_file():
            self._check_meta()
            chunks = [self._own(p, read_chunk(p)) for g in sorted(gens) for p in sorted(gens[g])]
        self.generation = (max(gens) + 1) if gens and resume else 0
        distributed.barrier()
        if distributed.is_main():
            if not resume and self.folder.exists():
                shutil.rmtree(self.folder)
            atomic.write_json(self.folder / "meta.json", self.meta)
        distributed.barrier()
        return chunks

    def _check_meta(self) -> None:
        path = self.folder / "meta.json"
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path} cannot be read ({exc}); delete {self.folder} and run again without "
                             f"--resume") from None
        if saved == self.meta:
            return
        if not isinstance(saved, dict):
            saved = {}
        diff = sorted(k for k in set(saved) | set(self.meta) if saved.get(k) != self.meta.get(k))
        # frame by frame only within one data set (another data set differs in every frame)
        said = [_frame_changes(saved.get(k), self.meta.get(k)) if k == "frame_files" and "dataset" not in diff
                else k for k in diff]
        raise InputError(
            f"the partial state in {self.folder} belongs to a different run, or its frames changed on disk since "
            f"it was saved (differs in: {'; '.join(said)}); its numbers cannot be combined with this run's. Run "
            f"again without --resume to start over, or with the same data, network, statistics and settings to "
            f"continue")

    def _own(self, path: Path, chunk: dict[str, Any]) -> Chunk:
        """``chunk``'s payload after checking it was written by this run (its digest)."""
        payload = CHUNK.read(chunk, path, digest=self.digest)["payload"]
        out = Chunk(payload)
        out.path = path
        return out

    def save(self, payload: Any) -> None:
        """Write a new chunk of this rank atomically (only what is new since the last save), with the run's digest."""
        write_chunk(self.folder / f"g{self.generation}.r{distributed.rank()}.c{self._chunk}.npz",
                    {"run": self.digest, "payload": payload})
        self._chunk += 1

    def clear(self) -> None:
        """Remove the folder once the final results are written (collective)."""
        distributed.barrier()
        if distributed.is_main() and self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)
        distributed.barrier()
