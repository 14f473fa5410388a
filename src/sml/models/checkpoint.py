"""Safe checkpoint I/O: read with ``weights_only=True``, load with errors that name the keys.

A checkpoint is read with ``torch.load(weights_only=True)``, PyTorch's own safe unpickler:
tensors and plain Python values load, and so do NumPy scalars (the published SML checkpoint
stores ``mean_iu`` as one), allowed through ``torch.serialization.safe_globals`` for the load
only; anything else is refused, naming what it needs, unless the caller trusts the file
(``trust=True``, CLI ``--trust-checkpoint``). The layout written by :func:`save_checkpoint` is the published one::

    {"state_dict": {"module.<name>": tensor, ...}, "epoch": int, "mean_iu": float, **extra}
"""
from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from sml.errors import CheckpointError
from sml.utils.atomic import write_bytes

IGNORED_PREFIXES = ("multi_scale.",)  # reference post-processing entries, no learned weights
TRUST_HINT = ("If you trust where the file comes from, load it anyway with trust=True "
              "(command line: --trust-checkpoint); unpickling can run arbitrary code.")


def _numpy_scalar_globals() -> list[Any]:
    """What a pickled NumPy number scalar needs: ``numpy.dtype`` and the scalar constructor (the globals
    ``torch.serialization.get_unsafe_globals_in_checkpoint`` names, the constructor also under NumPy 1's
    module path, which files written before NumPy 2 carry) and the dtype classes the unpickler
    rebuilds the dtype's state into (float and integer scalars only)."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32)]
    return [np.dtype, scalar, (scalar, "numpy.core.multiarray.scalar"),
            (scalar, "numpy._core.multiarray.scalar"), *dtypes]


def _read_failure(path: Path, exc: BaseException) -> str:
    """A true reason for a file torch cannot read (its own messages can be empty or a bare key)."""
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        return "the file is empty (0 bytes)"
    if isinstance(exc, EOFError):
        return f"the file ends early ({size} bytes; truncated download?)"
    text = str(exc).strip()
    if isinstance(exc, (KeyError, IndexError)) or not text:
        return f"it is not a PyTorch checkpoint ({type(exc).__name__} while unpickling its {size} bytes)"
    return text.splitlines()[0]


def load_checkpoint(path: str | os.PathLike, trust: bool = False) -> dict[str, Any]:
    """Read a checkpoint on the CPU without executing code (``weights_only=True``) unless ``trust``.

    Returns the loaded dict (a bare state dict or a wrapper dict). Raises :class:`CheckpointError`
    for a missing/corrupt file or one that needs arbitrary unpickling (naming the trust flag).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file; check the --weights path")
    try:
        if trust:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals(_numpy_scalar_globals()):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found is None:
            detail = re.search(r"Unsupported \w+ \S+", str(exc))
            raise CheckpointError(
                f"cannot read checkpoint {path} safely ({detail.group(0) if detail else 'unpickling failed'}): it "
                f"is not a PyTorch checkpoint, is truncated, or uses pickle operations that only arbitrary "
                f"unpickling supports. {TRUST_HINT}") from None
        raise CheckpointError(
            f"refusing to load {path}: it stores Python objects that only arbitrary unpickling can rebuild "
            f"(it needs {found.group(1)}), and such files can run code on load. {TRUST_HINT} Better, re-save "
            f"its tensors with sml.models.checkpoint.save_checkpoint.") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError) as exc:   # what torch's reader raises on a file that is not a checkpoint
        raise CheckpointError(f"cannot read checkpoint {path}: {_read_failure(path, exc)}. Is it a PyTorch "
                              f".pth file, completely downloaded?") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict of tensors "
                              f"(a whole pickled model?). Save model.state_dict() instead.")
    return dict(obj)


def unwrap_state_dict(ckpt: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: from ``state_dict``/``model`` nesting or bare, without ``module.``
    and without the reference's ``multi_scale.*`` entries."""
    sd: Mapping[str, Any] = ckpt
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(sd.get(key), Mapping):
            sd = sd[key]
            break
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        k = k[len("module."):] if k.startswith("module.") else k
        if k.startswith(IGNORED_PREFIXES):
            continue
        out[k] = v
    return out


def describe_mismatch(missing: list[str], unexpected: list[str],
                      shapes: list[tuple[str, tuple, tuple]], limit: int = 8) -> str:
    """One readable sentence listing missing/unexpected keys and shape mismatches (first few of each)."""
    def few(items: list[str]) -> str:
        more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {few(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es): "
                     + few([f"{k} checkpoint {tuple(a)} vs network {tuple(b)}" for k, a, b in shapes]))
    return "; ".join(parts)


def _mismatch_hint(missing: list[str], unexpected: list[str], shapes: list[tuple[str, tuple, tuple]]) -> str:
    """What to check for a checkpoint that does not fit: the architecture, and the class count when
    every mismatch is one dimension with the same (checkpoint, network) sizes (the class layer: dim 0
    of convolutions, dim 1 of transposed convolutions)."""
    hint = "Check that --model names the architecture the weights were trained with"
    if not shapes or missing or unexpected:
        return hint
    pairs = {(x, y) for _, a, b in shapes if len(a) == len(b) for x, y in zip(a, b) if x != y}
    one_dim = all(len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1 for _, a, b in shapes)
    if one_dim and len(pairs) == 1:
        hint += f" and the class count (num_classes={next(iter(pairs))[0]} fits the checkpoint)"
    return hint


def load_into(network: nn.Module, state_dict: Mapping[str, Any], source: str = "checkpoint") -> nn.Module:
    """Load tensors into ``network`` strictly, after :func:`unwrap_state_dict`; returns ``network``.

    Any missing or unexpected key or shape mismatch raises :class:`CheckpointError` naming them
    (and, when the class layer differs, the ``num_classes`` to use). Only BN ``num_batches_tracked``
    counters may be absent; they keep the network's value.
    """
    sd = unwrap_state_dict(state_dict)
    own = network.state_dict()
    missing = sorted(k for k in own.keys() - sd.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(sd.keys() - own.keys())
    shapes = sorted((k, tuple(sd[k].shape), tuple(own[k].shape)) for k in own.keys() & sd.keys()
                    if tuple(sd[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        detail = describe_mismatch(missing, unexpected, shapes)
        raise CheckpointError(f"{source} does not fit {type(network).__name__}: {detail}. "
                              f"{_mismatch_hint(missing, unexpected, shapes)}.")
    for k in own.keys() - sd.keys():  # only num_batches_tracked can remain here
        sd[k] = own[k]
    network.load_state_dict(sd, strict=True)
    return network


def save_checkpoint(path: str | os.PathLike, network: nn.Module, epoch: int | None = None,
                    mean_iu: float | None = None, **extra: Any) -> None:
    """Write ``network``'s weights atomically in the published layout (see module docstring).

    A ``DistributedDataParallel``/``DataParallel`` wrapper is unwrapped first; tensors are stored
    on the CPU. ``extra`` values must be plain Python values or tensors so that the file reads
    back with ``weights_only=True`` (e.g. ``arch="erfnet", num_classes=19, class_names=[...]``).
    """
    module = getattr(network, "module", network)
    sd = {"module." + k: v.detach().cpu() for k, v in module.state_dict().items()}
    obj = {"state_dict": sd, "epoch": epoch, "mean_iu": None if mean_iu is None else float(mean_iu), **extra}
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())
