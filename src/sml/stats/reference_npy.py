"""Read the reference SML code's statistics files without executing pickle code.

The published ``cityscapes_mean.npy`` / ``cityscapes_var.npy`` are ``.npy``
files holding a 0-d object array whose single element is a pickled
``{train_id: float}`` dict. NumPy can only read them with
``allow_pickle=True``, which would run any code the pickle names. Here the
``.npy`` header is parsed by NumPy's header reader and the payload by an
unpickler that resolves only the few NumPy globals this format uses.

This is the project's one restricted unpickler, for this format only: every
other state sml reads is JSON, ``.npz`` with ``allow_pickle=False``, or a
checkpoint loaded with ``torch.load(weights_only=True)``. The values read are
checked by :func:`sml.stats.validate.check_reference_stats`.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from sml.errors import InputError

__all__ = ["read_reference_npy"]


def _numpy_global(module: str, name: str) -> Any:
    # Files written by NumPy 1.x name numpy.core, NumPy 2 names numpy._core.
    import importlib

    for mod in (module.replace("numpy.core", "numpy._core"), module):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"cannot resolve {module}.{name}")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only NumPy arrays, dtypes and scalars plus plain Python data."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _numpy_global(module, name)
        if (module, name) == ("_codecs", "encode"):  # protocol-2 encoding of bytes: harmless
            import codecs

            return codecs.encode
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent references are not allowed")


def read_reference_npy(path: str | Path) -> dict[int, float]:
    """``{class_index: value}`` from a reference statistics file (pickled dict or plain 1-D float array)."""
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot read reference statistics file {path}: {exc.strerror or exc}") from None
    with fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        except Exception as exc:  # noqa: BLE001 - NumPy raises ValueError/OSError variants
            raise InputError(f"{path} is not a valid .npy file ({exc})") from None
        if dtype.hasobject:
            payload = fh.read()
            try:
                obj = _RestrictedUnpickler(io.BytesIO(payload)).load()
            except pickle.UnpicklingError as exc:
                raise InputError(
                    f"refusing to load {path}: its pickle is not the reference statistics format ({exc}); "
                    f"the file may be malicious. Use the published cityscapes_mean.npy / cityscapes_var.npy "
                    f"or an sml stats.json") from None
            except Exception as exc:  # noqa: BLE001 - malformed pickle streams raise many types
                raise InputError(f"{path} holds a malformed pickle ({type(exc).__name__}: {exc})") from None
            if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.size == 1:
                obj = obj.reshape(()).item()
        else:
            fh.seek(0)
            try:
                obj = np.load(fh, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:  # e.g. a truncated payload
                raise InputError(f"{path} is not a valid .npy file ({exc}); re-download or recompute it") from None
    return _to_dict(obj, path)


def _to_dict(obj: Any, path: Path) -> dict[int, float]:
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "fiu" and obj.ndim == 1:
        return {i: float(v) for i, v in enumerate(obj.tolist())}
    if not isinstance(obj, dict):
        found = (f"a {obj.ndim}-D {obj.dtype} array" if isinstance(obj, np.ndarray) else type(obj).__name__)
        raise InputError(f"{path} should hold a dict {{class_index: value}} (reference SML format) or a 1-D "
                         f"array of one number per class, found {found}. Use the published "
                         f"cityscapes_mean.npy / cityscapes_var.npy or an sml stats.json.")
    out: dict[int, float] = {}
    for key, value in obj.items():
        # bools and strings convert to numbers but are not what the reference code writes
        if (isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer))
                or isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating))):
            raise InputError(f"{path}: entry {key!r}: {value!r} is not class_index: number (reference SML "
                             f"format: {{train_id: float}})")
        k = int(key)
        if k < 0:
            raise InputError(f"{path}: negative class index {k}; class indices are train ids 0..C-1")
        out[k] = float(value)
    if not out:
        raise InputError(f"{path} holds an empty dict: no class statistics")
    return out
