"""Resumable runs: partial state written atomically, read back without executing pickle code.

A long run (``sml stats``, ``sml eval``) saves the per-frame state of the
frames it finished every few frames, as a new chunk file in a folder beside its
output (each frame in exactly one chunk, each chunk written atomically). A run
started with ``--resume`` reads every chunk, skips the frames they hold and
computes the rest, with any number of processes; a crash at any moment loses
at most the frames since the last save and never counts a frame twice.

Payloads are plain Python (dict, list, str, numbers), NumPy arrays, torch
tensors and objects of ``sml`` classes; they are flattened to plain data and
NumPy arrays before pickling, and the loader only accepts NumPy's array
reconstruction globals, so a tampered state file cannot run code.
"""
from __future__ import annotations

import importlib
import io
import json
import os
import pickle
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sml.errors import InputError
from sml.utils import atomic, distributed

_FILE = re.compile(r"^g(\d+)\.r(\d+)\.c(\d+)\.state$")
_NUMPY_OK = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    # protocol 5 passes arrays as raw buffers: frombuffer(buf, dtype).reshape(shape, order)
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}
_PROTOCOL = 5  # arrays are streamed to the file from their own memory, never copied into one bytes object


# ---------------------------------------------------------------- flatten / restore
def to_plain(obj: Any) -> Any:
    """Flatten ``obj`` into dicts, lists, scalars and NumPy arrays (tensors and sml objects tagged)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        return {"__tensor__": t.numpy().copy(), "dtype": str(t.dtype).replace("torch.", "")}
    if isinstance(obj, dict):
        return {"__dict__": [[to_plain(k), to_plain(v)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [to_plain(v) for v in obj], "tuple": isinstance(obj, tuple)}
    cls = type(obj)
    if cls.__module__.startswith("sml.") and hasattr(obj, "__dict__"):
        # the object's own pickle state when it defines one (e.g. a metric sends only the used
        # part of its key buffer), else its attributes
        custom = getattr(type(obj), "__getstate__", None) not in (None, getattr(object, "__getstate__", None))
        state = obj.__getstate__() if custom else vars(obj)
        return {"__object__": f"{cls.__module__}:{cls.__qualname__}", "state": to_plain(state)}
    raise TypeError(f"cannot store {cls.__module__}.{cls.__qualname__} in a resume state")


def from_plain(obj: Any) -> Any:
    """Inverse of :func:`to_plain` (only classes from the ``sml`` package are rebuilt)."""
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return torch.from_numpy(np.array(obj["__tensor__"])).to(getattr(torch, obj["dtype"]))
    if "__dict__" in obj:
        return {from_plain(k): from_plain(v) for k, v in obj["__dict__"]}
    if "__list__" in obj:
        items = [from_plain(v) for v in obj["__list__"]]
        return tuple(items) if obj.get("tuple") else items
    if "__object__" in obj:
        module, _, qualname = str(obj["__object__"]).partition(":")
        if not module.startswith("sml."):
            raise InputError(f"resume state names a class outside sml ({module}); delete the state folder")
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        inst = cls.__new__(cls)
        state = from_plain(obj["state"])
        if hasattr(inst, "__setstate__") and type(inst).__setstate__ is not getattr(object, "__setstate__", None):
            inst.__setstate__(state)
        else:
            inst.__dict__.update(state)
        return inst
    raise InputError("resume state has an unknown entry; delete the state folder and start again")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_OK or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a resume state")


def dumps(obj: Any) -> bytes:
    return pickle.dumps(to_plain(obj), protocol=_PROTOCOL)


def dump(obj: Any, fh: Any) -> None:
    """:func:`dumps` straight into an open binary file (large arrays are not copied first)."""
    pickle.dump(to_plain(obj), fh, protocol=_PROTOCOL)


def loads(data: bytes) -> Any:
    return from_plain(_NumpyOnlyUnpickler(io.BytesIO(data)).load())


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
            raise InputError(f"save every N frames needs N >= 1, got {every}")
        if not interval >= 0:
            raise InputError(f"save interval must be >= 0 seconds, got {interval}")
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


# ---------------------------------------------------------------- the store
class ResumeStore:
    """Partial-state folder of one run; ``meta`` identifies the run (model, data, settings).

    State is append-only: every save writes a new chunk holding only the frames
    finished since the previous save (so saving costs O(new frames), not
    O(everything so far)). Chunks are named ``g<start>.r<rank>.c<k>.state``;
    a resumed run reads every chunk, whichever process count wrote them.
    """

    def __init__(self, folder: str | os.PathLike, meta: dict[str, Any]):
        self.folder = Path(folder)
        self.meta = json.loads(json.dumps(meta))  # normalised as it will read back
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

    def start(self, resume: bool) -> list[Any]:
        """Load every saved chunk (``resume``) or clear old state; collective call."""
        payloads: list[Any] = []
        gens = self._files()
        if resume and (self.folder / "meta.json").is_file():
            saved = json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))
            if saved != self.meta:
                diff = sorted(k for k in set(saved) | set(self.meta) if saved.get(k) != self.meta.get(k))
                raise InputError(
                    f"the partial state in {self.folder} belongs to a different run (differs in: "
                    f"{', '.join(diff)}); run again without --resume to start over, or with the same "
                    f"settings to continue")
            payloads = [loads(p.read_bytes()) for g in sorted(gens) for p in sorted(gens[g])]
        self.generation = (max(gens) + 1) if gens and resume else 0
        distributed.barrier()
        if distributed.is_main():
            if not resume and self.folder.exists():
                shutil.rmtree(self.folder)
            atomic.write_json(self.folder / "meta.json", self.meta)
        distributed.barrier()
        return payloads

    def save(self, payload: Any) -> None:
        """Write a new chunk of this rank atomically (only what is new since the last save)."""
        name = f"g{self.generation}.r{distributed.rank()}.c{self._chunk}.state"
        with atomic.atomic_write(self.folder / name) as fh:
            dump(payload, fh)
        self._chunk += 1

    def clear(self) -> None:
        """Remove the folder once the final results are written (collective)."""
        distributed.barrier()
        if distributed.is_main() and self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)
        distributed.barrier()
