"""The second layer of :mod:`sml.models`: network and weights files, opened.

The sha256 of a file; which kind of network file a path is (:func:`file_format`); a network's
output conventions (:func:`_first_output`, :func:`_eval`, a mask-classification network's pair:
:func:`mask_outputs`); an ONNX file behind an ``nn.Module``
face (:class:`OnnxNetwork`); and :func:`open_network`, which opens what a configuration names
(TorchScript, ONNX, ``.pt2``, a ``format: python`` entry point with its checkpoint), its sha256
checked. Below the contract (:mod:`sml.models.contract`) and the cards (:mod:`sml.models.card`),
which both open files through it; checkpoints are :mod:`sml.models.checkpoint`'s.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sml.errors import CheckpointError, InputError
from sml.models.checkpoint import load_checkpoint, load_into
from sml.models.config import ModelConfig

__all__ = ["sha256_of", "file_format", "OnnxNetwork", "build_entry", "open_network"]


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_format(path: Path) -> str | None:
    """``onnx``, ``export`` or ``torchscript`` for a network file, None for anything else."""
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if path.suffix.lower() == ".pt2":
        return "export"
    try:
        with zipfile.ZipFile(path) as zf:  # TorchScript archives hold compiled code; checkpoints do not
            if any("/code/" in n or n.endswith("constants.pkl") for n in zf.namelist()):
                return "torchscript"
    except (zipfile.BadZipFile, OSError):
        pass
    return None


def _first_output(out: Any) -> Any:
    """The class scores of a network's output: the first of a tuple/list (e.g. (main, aux) heads), the
    "out" entry of a dict (else its first)."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        out = out.get("out", next(iter(out.values())))
    return out


#: what a mask-classification network returns (models.md, "Your own network")
MASK_OUTPUT = "a tuple (class logits B x Q x (K+1), mask logits B x Q x h x w)"


def mask_outputs(out: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A mask-classification network's ``(class_logits, mask_logits)``, their shapes checked (no values)."""
    ok = isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)
    if ok:
        cl, ml = out
        ok = (cl.dim() == 3 and ml.dim() == 4 and cl.shape[:2] == ml.shape[:2] and cl.shape[-1] >= 2
              and min(ml.shape) >= 1)
    if not ok:
        raise InputError(f"{where}: a mask-classification network (output.kind: mask-classification) must return "
                         f"{MASK_OUTPUT}, the last class column being 'no object'; it returned {_shapes(out)}. "
                         f"Return that pair from the network's forward, or set output.kind: logits for a network "
                         f"whose output is B x K x h x w logits")
    return out[0], out[1]


def _shapes(out: Any) -> str:
    """A network output's structure and shapes, for messages."""
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of " + ", ".join(
            str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__ for t in out)
    return f"a {type(out).__name__}"


def _eval(network: nn.Module) -> nn.Module:
    """Eval mode; modules from torch.export are fixed to their exported mode and refuse ``.eval()``."""
    try:
        return network.eval()
    except NotImplementedError:
        return network


class OnnxNetwork(nn.Module):
    """An ONNX file run through onnxruntime, behind an ``nn.Module`` face (float32 in, first output out)."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputError("running an ONNX model needs onnxruntime: pip install "
                             "'standardized-max-logits[onnx]'") from None
        self.path = str(path)
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(self.path, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise CheckpointError(f"cannot open ONNX model {path}: {exc}") from None
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        shape = list(first.shape) if first.shape is not None else []
        dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
        if len(dims) != 4 or dims[1] not in (None, 3):
            raise CheckpointError(f"ONNX model {path}: its input {first.name!r} has shape {shape}; a "
                                  f"segmentation network takes B x 3 x H x W")
        #: (H, W) when the file fixes the input size, else None (dynamic)
        self.fixed_size: tuple[int, int] | None = (dims[2], dims[3]) if dims[2] and dims[3] else None
        self.fixed_batch: int | None = dims[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_size is not None and tuple(x.shape[2:]) != self.fixed_size:
            raise InputError(f"ONNX model {self.path} takes a fixed {self.fixed_size[0]}x{self.fixed_size[1]} (HxW) "
                             f"input, not {x.shape[2]}x{x.shape[3]}: set input.size: [{self.fixed_size[0]}, "
                             f"{self.fixed_size[1]}] in its model card")
        arr = x.detach().float().contiguous().cpu().numpy()
        # A file exported with batch 1 runs a batch frame by frame.
        step = self.fixed_batch or arr.shape[0]
        outs = []
        for i in range(0, arr.shape[0], step):
            try:
                outs.append(np.asarray(self.session.run(None, {self.input_name: arr[i:i + step]})[0], np.float32))
            except Exception as exc:  # onnxruntime raises its own exception types
                raise InputError(f"ONNX model {self.path} failed on an input of shape {tuple(arr[i:i + step].shape)}: "
                                 f"{str(exc).splitlines()[0][:300]}. Check input.size in its model card") from None
        return torch.from_numpy(np.concatenate(outs) if len(outs) > 1 else outs[0]).to(x.device)


def _failure(exc: BaseException) -> str:
    """What an exception says, in one short line (SystemExit: the exit status it asked for)."""
    if isinstance(exc, SystemExit):
        return f"SystemExit (it called sys.exit({exc.code!r}))"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def _import_entry(entry: str, card_dir: Path, where: str) -> Any:
    module_name, _, attr = entry.partition(":")
    sys.path.insert(0, str(card_dir))  # an entry module may sit beside its card
    bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ left in the user's folder
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"{where}: entry {entry!r}: cannot import {module_name} ({exc}); install the package "
                         f"or put the module beside the card") from None
    except (Exception, SystemExit) as exc:  # the user's module ran and failed (SyntaxError, sys.exit, ...)
        raise InputError(f"{where}: entry {entry!r}: importing {module_name} raised {_failure(exc)}. Fix that "
                         f"module; sml imports it, then calls {attr}() with no arguments.") from None
    finally:
        sys.path.remove(str(card_dir))
        sys.dont_write_bytecode = bytecode
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise InputError(f"{where}: entry {entry!r}: {module_name} has no callable {attr}")
    return fn


def build_entry(cfg: ModelConfig) -> nn.Module:
    """The network a ``format: python`` card's entry point builds (its weights not yet loaded).

    Whatever the entry's module or callable raises, ``SystemExit`` included, is refused naming
    the card and the entry.
    """
    where = f"model card {cfg.card}"
    fn = _import_entry(cfg.entry, Path(cfg.card or ".").parent, where)
    try:
        network = fn()
    except (Exception, SystemExit) as exc:
        raise InputError(f"{where}: entry {cfg.entry} raised {_failure(exc)} when called to build the network. "
                         f"Fix the entry point: called with no arguments, it must return a torch.nn.Module.") from None
    if not isinstance(network, nn.Module):
        raise InputError(f"{where}: entry {cfg.entry} returned a {type(network).__name__}, not a torch.nn.Module")
    return network


def _where(cfg: ModelConfig) -> str:
    """How messages name a configuration: its card, the ``hf:`` shorthand it came from, or its file."""
    if cfg.card:
        return f"model card {cfg.card}"
    return f"--model hf:{cfg.source}" if cfg.format == "transformers" else str(cfg.file)


def open_network(cfg: ModelConfig) -> nn.Module:
    """The network a card's configuration names (file formats and python), on the CPU, eval mode."""
    where = _where(cfg)
    if cfg.sha256 is not None:
        target = cfg.file or cfg.weights
        actual = sha256_of(target)
        if actual != cfg.sha256:
            raise CheckpointError(f"{where}: {target} has sha256 {actual}, the card says {cfg.sha256}. "
                                  f"The file changed or is another release; fix the file or the card's sha256.")
    if cfg.format == "onnx":
        return OnnxNetwork(cfg.file)
    if cfg.format == "export":
        try:
            return torch.export.load(cfg.file).module()
        except Exception as exc:
            raise CheckpointError(f"{where}: cannot load {cfg.file} as a torch.export .pt2 archive "
                                  f"({type(exc).__name__}: {str(exc)[:200]}); check format and file") from None
    if cfg.format == "torchscript":
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated upstream but still the common format
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(cfg.file, map_location="cpu")
        except Exception as exc:
            raise CheckpointError(f"{where}: {cfg.file} is not a TorchScript file "
                                  f"({type(exc).__name__}); check format and file") from None
    if cfg.format == "python":
        return load_into(build_entry(cfg), load_checkpoint(cfg.weights), source=cfg.weights)
    raise InputError(f"format {cfg.format!r} has no network file")  # pragma: no cover - read_card refuses it
