"""How the network runs at inference: precision (autocast), TF32, channels-last, ``torch.compile``.

Only the network's forward pass changes: logits are cast to float32 before
any score, statistic or metric sees them (``sml-algorithm.md`` section 1), so
``--precision`` moves the logits by the network's rounding and nothing else.

* ``fp32`` (default): no autocast.
* ``bf16``: ``torch.autocast(dtype=bfloat16)`` on CUDA (GPUs with bf16, i.e.
  Ampere or later) and on the CPU (fast where the CPU has AVX512-BF16/AMX,
  emulated and slower elsewhere).
* ``fp16``: CUDA only. On the CPU it is refused: CPU float16 kernels are not
  faster than float32 and bf16 gives the same saving with float32's range.

``--tf32`` lets CUDA matmuls and convolutions use TensorFloat-32 (about
1e-3 relative rounding of their inputs; off by default, no effect on the CPU).
Channels-last is always used on CUDA (cuDNN's fast convolution layout).
``--compile`` wraps the network in ``torch.compile``; a compilation failure is
an error that names the option, never a silent fall-back.
"""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from sml.errors import InputError

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (None for fp32); unknown names are an InputError."""
    if precision not in _DTYPES:
        raise InputError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return _DTYPES[precision]


def check_device(device: str | torch.device) -> torch.device:
    """The device ``device`` names, refused with the fix when torch cannot use it here (the project's one device check)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"--device {device!r} is not a torch device ({exc}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return dev


def check_precision(precision: str, device: str | torch.device) -> None:
    """Refuse a precision the device cannot run, with the fix in the message."""
    autocast_dtype(precision)
    dev = torch.device(device)
    if precision == "fp16" and dev.type != "cuda":
        raise InputError(f"--precision fp16 runs on CUDA only (device {dev}): on the CPU float16 is not faster "
                         f"than float32; use --precision bf16 (same saving, float32's range) or fp32")
    if precision == "bf16" and dev.type == "cuda" and torch.cuda.is_available() \
            and not torch.cuda.is_bf16_supported():
        raise InputError(f"--precision bf16: {torch.cuda.get_device_name(dev)} has no bfloat16 support; "
                         f"use --precision fp16 or fp32")


@contextlib.contextmanager
def autocast(precision: str, device: str | torch.device) -> Iterator[None]:
    """Autocast for the network's forward pass (nothing for fp32)."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        yield
        return
    check_precision(precision, device)
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        yield


def float32_logits(out: torch.Tensor) -> torch.Tensor:
    """Logits as float32 (what every score, statistic and metric takes), whatever precision made them."""
    return out if out.dtype == torch.float32 else out.float()


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TensorFloat-32 for CUDA matmuls and cuDNN convolutions inside the block (restored after)."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


class CompiledNetwork(nn.Module):
    """``torch.compile(network)`` whose failures (at the first call, where compilation happens) name ``--compile``."""

    def __init__(self, network: nn.Module, backend: str | None = None) -> None:
        super().__init__()
        self.network = network
        kwargs: dict[str, Any] = {} if backend is None else {"backend": backend}
        try:
            # not a registered sub-module: the parameters stay listed once, under ``network``
            object.__setattr__(self, "_compiled", torch.compile(network, **kwargs))
        except Exception as exc:   # e.g. an unsupported Python version
            raise InputError(f"--compile: torch.compile is not usable here ({type(exc).__name__}: {exc}); "
                             f"run without --compile") from None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._compiled(*args, **kwargs)
        except InputError:
            raise
        except Exception as exc:   # dynamo/inductor errors: missing compiler, unsupported operator, ...
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(f"--compile: torch.compile failed on this network ({type(exc).__name__}: {msg}); "
                             f"run without --compile") from exc


@dataclass(frozen=True)
class InferenceSettings:
    """Precision, TF32, compilation (and channels-last on CUDA) for the network's forward pass."""

    precision: str = "fp32"
    compile: bool = False
    tf32: bool = False
    compile_backend: str | None = None   # torch.compile's backend (None = inductor); tests use "eager"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "InferenceSettings":
        """From the options :func:`add_inference_args` adds (missing ones take the defaults)."""
        s = cls(precision=getattr(args, "precision", "fp32") or "fp32", compile=bool(getattr(args, "compile", False)),
                tf32=bool(getattr(args, "tf32", False)))
        autocast_dtype(s.precision)
        return s

    def check(self, device: str | torch.device) -> None:
        """Refuse a device torch cannot use here, or settings it cannot run (call before long work starts)."""
        check_precision(self.precision, check_device(device))

    def autocast(self, device: str | torch.device) -> contextlib.AbstractContextManager[None]:
        """The autocast context for the network's forward pass on ``device``."""
        return autocast(self.precision, device)

    def session(self) -> contextlib.AbstractContextManager[None]:
        """TF32 as chosen (``--tf32``), for the whole run."""
        return tf32(self.tf32)

    @staticmethod
    def channels_last(device: str | torch.device, cpu_default: bool = False) -> bool:
        """Channels-last layout: always on CUDA; on the CPU the model's own default."""
        return torch.device(device).type == "cuda" or bool(cpu_default)

    def prepare(self, network: nn.Module) -> nn.Module:
        """The module to call for the forward pass: ``network`` itself, or its compiled wrapper."""
        return CompiledNetwork(network, self.compile_backend) if self.compile else network

    def forward(self, network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One forward pass of a B x 3 x H x W batch under these settings: float32 logits (first output)."""
        with self.autocast(x.device):
            out = network(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, dict):
            out = out.get("out", next(iter(out.values())))
        return float32_logits(out)

    def describe(self) -> str:
        """One line for logs and run records, e.g. ``precision bf16, tf32 off, compile off``."""
        return (f"precision {self.precision}, tf32 {'on' if self.tf32 else 'off'}, "
                f"compile {'on' if self.compile else 'off'}")


def add_inference_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--precision``, ``--tf32``, ``--compile`` (read back with :meth:`InferenceSettings.from_args`)."""
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="network forward precision: fp32 (default), bf16 (autocast; CUDA or CPU), "
                             "fp16 (CUDA only); logits are float32 before scoring either way")
    parser.add_argument("--tf32", action="store_true",
                        help="allow TensorFloat-32 in CUDA matmuls/convolutions (faster, ~1e-3 relative rounding)")
    parser.add_argument("--compile", action="store_true",
                        help="run the network through torch.compile (slow first frame; an error if it fails)")
