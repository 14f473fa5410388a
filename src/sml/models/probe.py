"""Dry runs of a network: its output channels and size, the size a network file is fixed to, and
whether its output size follows the input size.

A network traced with its sizes fixed (``torch.jit.trace`` or an ONNX export of code that turns
a size into a Python number) still runs at other sizes, but its output stays at the traced size
(or the run fails) and its logits there are wrong. :func:`check_size_follows` runs such a file at
a second size and refuses it at each image's own size, and at a given size whose output does not fit it
(the output is neither that size nor that size divided by one stride). :func:`open_file` opens a
network file for :func:`~sml.models.contract.wrap` through these checks. Below the contract.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sml.errors import CheckpointError, InputError
from sml.models.config import ModelConfig
from sml.models.files import OnnxNetwork, _eval, _first_output, file_format, mask_outputs, open_network

#: dry-run size of a network that runs at each image's own size
DRY_SIZE = (256, 512)
#: formats whose files may be traced with fixed sizes (a static .pt2 states its size; see native_size)
TRACED_FORMATS = ("torchscript", "onnx")


def dry_run(network: nn.Module, size: tuple[int, int], where: str,
            kind: str = "logits") -> tuple[int, tuple[int, int]]:
    """(classes, output H x W) of one forward pass on a zero batch at ``size``: the output channels of a
    logits network; for a mask-classification network (``kind``) the classes of its class logits (the
    columns before 'no object') and the size of its mask logits."""
    try:
        with torch.inference_mode():
            out = _eval(network)(torch.zeros(1, 3, *size))
    except InputError:
        raise
    except (Exception, SystemExit) as exc:  # a network's own code may even call sys.exit
        text = str(exc).splitlines()[0][:300] if str(exc) else ""
        raise InputError(f"{where}: the network failed on a 1 x 3 x {size[0]} x {size[1]} input "
                         f"({type(exc).__name__}: {text}); check input.size (the size it runs at; fixed-size "
                         f"exports run at exactly their size)") from None
    if kind == "mask-classification":
        cl, ml = mask_outputs(out, where)
        return int(cl.shape[-1]) - 1, (int(ml.shape[2]), int(ml.shape[3]))
    first = _first_output(out)
    if not isinstance(first, torch.Tensor) or first.dim() != 4 or first.shape[0] != 1 or min(first.shape[2:]) < 1:
        shape = tuple(first.shape) if isinstance(first, torch.Tensor) else type(first).__name__
        hint = (" (a pair (class logits, mask logits) is a mask-classification network's output: set output.kind: "
                "mask-classification)" if isinstance(out, (tuple, list)) and len(out) == 2 and first is out[0]
                and isinstance(first, torch.Tensor) and first.dim() == 3 else "")
        raise InputError(f"{where}: for a 1 x 3 x {size[0]} x {size[1]} input the network returned {shape}, "
                         f"not 1 x K x h x w class scores{hint}")
    return int(first.shape[1]), (int(first.shape[2]), int(first.shape[3]))


def native_size(network: nn.Module) -> tuple[int, int] | None:
    """(H, W) a network file is fixed to (ONNX with a fixed input, ``.pt2`` with static shapes), else None."""
    if isinstance(network, OnnxNetwork):
        return network.fixed_size
    if isinstance(network, torch.fx.GraphModule) and not isinstance(network, torch.jit.ScriptModule):
        try:  # static input shapes of an exported program are plain ints
            val = next(n for n in network.graph.nodes if n.op == "placeholder").meta["val"]
            h, w = val.shape[2], val.shape[3]
            return (h, w) if isinstance(h, int) and isinstance(w, int) else None
        except (StopIteration, KeyError, AttributeError, IndexError):
            return None
    return None


def _hw(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


@dataclass(frozen=True)
class SizeProbe:
    """The output size (H x W) of a network at two input sizes; ``out2`` None: it failed at ``size2``."""

    size: tuple[int, int]
    out: tuple[int, int]
    size2: tuple[int, int]
    out2: tuple[int, int] | None

    @property
    def follows(self) -> bool:
        """True when the output size scales with the input size (within the rounding of a stride)."""
        if self.out2 is None:
            return False
        return all(abs(o2 - o * s2 / s) <= 1.5 for s, o, s2, o2 in zip(self.size, self.out, self.size2, self.out2))

    def describe(self) -> str:
        first = f"a {_hw(self.size)} input gives {_hw(self.out)} logits"
        if self.out2 is None:
            return f"{first}, and a {_hw(self.size2)} input fails"
        return f"{first}, and a {_hw(self.size2)} input {'also ' * (self.out2 == self.out)}gives {_hw(self.out2)}"


def probe_sizes(network: nn.Module, size: tuple[int, int], out: tuple[int, int], where: str,
                kind: str = "logits") -> SizeProbe:
    """Run ``network`` once more at a second size unlike ``size`` (``out``: its output size at ``size``;
    ``kind``: its output kind, as :func:`dry_run`)."""
    size2 = (size[0] // 2 if size[0] >= 64 else size[0] * 2, size[1] // 2 if size[1] >= 64 else size[1] * 2)
    try:
        out2: tuple[int, int] | None = dry_run(network, size2, where, kind)[1]
    except InputError:
        out2 = None
    return SizeProbe(size, out, size2, out2)


def traced_size(probe: SizeProbe) -> tuple[int, int] | None:
    """The likely input size of a network whose output size stays fixed: that output size, which is
    the traced size of a network that returns logits at its input size (most do). None otherwise."""
    return probe.out if probe.out2 == probe.out else None


def _fits(size: tuple[int, int], out: tuple[int, int]) -> bool:
    """True when ``out`` is ``size`` or ``size`` divided by one whole stride in both dimensions."""
    if out == size:
        return True
    return size[0] % out[0] == 0 and size[1] % out[1] == 0 and size[0] // out[0] == size[1] // out[1]


def check_size_follows(network: nn.Module, size: tuple[int, int] | None, out: tuple[int, int], where: str,
                       name: str, setting: str = "input.size", null: str = "null", kind: str = "logits") -> None:
    """Refuse a network file whose output does not follow the input size, unless it runs at ``size`` and
    its output ``out`` there fits it (the size it was traced at). ``size`` None: each image's own size
    (probed at :data:`DRY_SIZE`); ``setting`` names the option that sets the size in the message, ``null``
    how it writes None; ``kind``: the output kind, as :func:`dry_run`)."""
    probe = probe_sizes(network, size or DRY_SIZE, out, where, kind)
    if probe.follows or (size is not None and _fits(size, out)):
        return
    traced = traced_size(probe)
    shown = f"[{size[0]}, {size[1]}]" if size else f"{null} (each image's own size)"
    fix = f"Set {setting} to the [H, W] it was traced or exported at"
    if traced is not None:
        fix += f" (likely [{traced[0]}, {traced[1]}], its output size, if it returns logits at its input size)"
    raise InputError(f"{where}: {setting} is {shown}, but {name} does not follow the input size: {probe.describe()}. "
                     f"It was traced or exported with its sizes fixed, so its logits are right only at that size. "
                     f"{fix}, or export it with dynamic height and width (torch.jit.script, or dynamic_axes in "
                     f"torch.onnx.export).")


def size_line(network: nn.Module, out: tuple[int, int], size: tuple[int, int], fill: str) -> str:
    """The ``input.size`` line of a card template for a network file with no fixed input size that
    gave ``out`` at ``size``: a traced size when the output shows one, never null for a fixed network."""
    probe = probe_sizes(network, size, out, "")
    if probe.follows:
        return f"{fill}          # [H, W] it was trained at, or null for each image's own size"
    traced = traced_size(probe)
    note = f"traced with fixed sizes, so never null: {probe.describe()}"
    if traced is not None:
        return f"[{traced[0]}, {traced[1]}]          # its output size, the size it was traced at if its logits " \
               f"come at its input size (check); {note}"
    return f"{fill}          # [H, W] it was traced at; {note}"


def open_file(path: str | os.PathLike, input_size: tuple[int, int] | None) -> tuple[nn.Module, tuple[int, int] | None]:
    """A network file for :func:`~sml.models.contract.wrap` and the size to run it at: ``input_size``,
    else the size the file is fixed to, else None after the size probe (:func:`check_size_follows`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} does not exist")
    fmt = file_format(path)
    if fmt is None:
        raise CheckpointError(f"{path} is not a TorchScript, ONNX or .pt2 network file. A checkpoint of weights "
                              f"needs its architecture: sml.models.load(ARCH, weights='{path}') (see `sml models`).")
    network = open_network(ModelConfig(name=path.stem, format=fmt, file=str(path)))
    size = input_size or native_size(network)
    if size is None and fmt in TRACED_FORMATS:
        out = dry_run(network, DRY_SIZE, str(path))[1]
        check_size_follows(network, None, out, str(path), path.name, setting="input_size", null="None")
    return network, size
