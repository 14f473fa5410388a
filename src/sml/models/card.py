"""Model cards (models.md, "Your own network: the model card"): a YAML file saying how to feed a
network and how to read its output. :func:`read_card` validates every field into a
:class:`~sml.models.registry.ModelConfig`; :func:`load_card` opens the network, dry-runs it
once and returns a :class:`~sml.models.contract.SegmentationModel`; :func:`card_template`
writes a card for a network file from one dry run, preprocessing left to be filled in.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sml.errors import CheckpointError, InputError
from sml.models.contract import CITYSCAPES_CLASSES, _RESIZE, _UPSAMPLE, OnnxNetwork, SegmentationModel, _eval
from sml.models.registry import ModelConfig

CARD_SUFFIXES = (".yaml", ".yml")
FILE_FORMATS = ("torchscript", "onnx", "export")
CARD_FORMATS = (*FILE_FORMATS, "python", "transformers")
TO_FILL = "FILL-IN"  # placeholder of card_template; read_card refuses it
_TOP = ("name", "format", "file", "entry", "weights", "source", "sha256", "input", "output", "licence", "license")
_INPUT = ("size", "channel_order", "scale", "mean", "std", "resize")
_OUTPUT = ("kind", "classes", "channels", "upsample")
_DRY_SIZE = (256, 512)  # dry-run size of a network that runs at each image's own size

EXAMPLE = """\
  name: my-network
  format: onnx                 # torchscript | onnx | export | python | transformers
  file: my_network.onnx        # relative to the card
  input:
    size: [512, 1024]          # H W the network runs at (null: each image's own size)
    channel_order: RGB         # RGB | BGR
    scale: 1                   # 1: pixels in [0, 1]; 255: in [0, 255]
    mean: [0.485, 0.456, 0.406]
    std: [0.229, 0.224, 0.225]
  output:
    classes: cityscapes        # or a list of class names
    channels: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]"""


def is_card(path: str | os.PathLike) -> bool:
    """True when ``path`` names a model card (a .yaml/.yml file)."""
    return os.fspath(path).lower().endswith(CARD_SUFFIXES)


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


def needs_card_message(path: Path, fmt: str) -> str:
    """The refusal for a network file given without a card: how to write one."""
    return (f"{path} is a {fmt} network file; sml never guesses how to feed a network, so it needs a model "
            f"card (a YAML file) saying its input size, channel order, pixel scale, mean/std and which "
            f"output channels are which classes. Write one with `sml models card {path} -o CARD.yaml`, fill "
            f"in the fields marked {TO_FILL}, and give --model CARD.yaml (Python: sml.models.load('CARD.yaml'), "
            f"or sml.models.wrap(...) with the preprocessing as arguments). A card looks like:\n{EXAMPLE}")


class _Card:
    """Reads and checks fields of one card, every refusal naming the card, the field and the fix."""

    def __init__(self, path: Path, data: dict) -> None:
        self.path, self.data = path, data

    def fail(self, field: str, problem: str, fix: str) -> InputError:
        return InputError(f"model card {self.path}: field {field} {problem}. {fix}")

    def section(self, key: str, allowed: tuple[str, ...], required: bool) -> dict:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.fail(key, "is missing", f"Add an '{key}:' section with {', '.join(allowed)}.")
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping of {', '.join(allowed)}, got {value!r}",
                            f"Write it as '{key}:' followed by indented 'field: value' lines.")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}", "is not a card field",
                            f"Fields of {key}: {', '.join(allowed)} (check the spelling).")
        for k, v in value.items():
            if v == TO_FILL:
                raise self.fail(f"{key}.{k}", f"is still {TO_FILL}", "Fill it in from the network's documentation "
                                "or training code; sml never guesses preprocessing.")
        return value

    def text(self, key: str, required: bool, allowed: tuple[str, ...] | None = None, where: dict | None = None,
             prefix: str = "") -> str | None:
        src = self.data if where is None else where
        value = src.get(key)
        if value is None:
            if required:
                raise self.fail(prefix + key, "is missing", f"Add '{key}: ...'"
                                + (f" with one of {', '.join(allowed)}." if allowed else "."))
            return None
        if value == TO_FILL:
            raise self.fail(prefix + key, f"is still {TO_FILL}", "Fill it in; sml never guesses preprocessing.")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(prefix + key, f"must be a non-empty string, got {value!r}", "Quote it if in doubt.")
        if allowed is not None and value not in allowed:
            raise self.fail(prefix + key, f"is {value!r}", f"Use one of: {', '.join(allowed)}.")
        return value

    def file(self, key: str, required: bool) -> str | None:
        value = self.text(key, required)
        if value is None:
            return None
        p = Path(value).expanduser()
        p = p if p.is_absolute() else self.path.parent / p
        if not p.exists():
            raise self.fail(key, f"names {value!r}, and {p} does not exist",
                            "Paths in a card are relative to the card's folder; fix the path.")
        return str(p)

    def triple(self, sec: dict, key: str, default: float, positive: bool) -> tuple[float, float, float] | None:
        value = sec.get(key)
        if value is None:
            return None
        ok = isinstance(value, list) and len(value) == 3 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if not ok or (positive and min(value) <= 0):
            raise self.fail(f"input.{key}", f"must be three numbers{' > 0' if positive else ''} (one per channel, "
                            f"in channel_order and scale units), got {value!r}",
                            f"E.g. {key}: [{', '.join([str(default)] * 3)}]; leave it out for {default}.")
        return tuple(float(v) for v in value)  # type: ignore[return-value]


def read_card(path: str | os.PathLike) -> ModelConfig:
    """Parse and validate a model card into a :class:`ModelConfig` (InputError naming card, field, fix)."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"model card {path} does not exist; check the --model path (a card is a YAML file, "
                         f"`sml models card NETWORK_FILE` writes one)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"model card {path} is not valid YAML: {str(exc).splitlines()[0]}. Check the "
                         f"indentation and quoting around that place.") from None
    if not isinstance(data, dict):
        raise InputError(f"model card {path} must be a YAML mapping of fields (name, format, file, input, "
                         f"output, ...), got {type(data).__name__}. Example:\n{EXAMPLE}")
    c = _Card(path, data)
    unknown = sorted(set(data) - set(_TOP))
    if unknown:
        raise c.fail(unknown[0], "is not a card field", f"Fields: {', '.join(_TOP[:-1])} (check the spelling).")
    name = c.text("name", True)
    fmt = c.text("format", True, CARD_FORMATS)
    hf = fmt == "transformers"
    fields: dict[str, Any] = {"name": name, "format": fmt, "card": str(path)}
    needed = {"torchscript": ("file",), "onnx": ("file",), "export": ("file",), "python": ("entry", "weights"),
              "transformers": ("source",)}[fmt]
    for key in ("file", "entry", "weights", "source"):
        if key not in needed and data.get(key) is not None:
            raise c.fail(key, f"does not apply to format {fmt}",
                         f"format {fmt} takes {' and '.join(needed)}; remove '{key}' or change the format.")
    if fmt in FILE_FORMATS:
        fields["file"] = c.file("file", True)
    elif fmt == "python":
        entry = c.text("entry", True)
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", entry):
            raise c.fail("entry", f"is {entry!r}", "Write it as package.module:function (a callable returning "
                         "an nn.Module), e.g. mynets.espnet:build.")
        fields["entry"], fields["weights"] = entry, c.file("weights", True)
    else:
        source = c.text("source", True)
        local = Path(source).expanduser()
        local = local if local.is_absolute() else path.parent / local
        fields["source"] = str(local) if local.exists() else source  # else a hub id, resolved by transformers
    sha = data.get("sha256")
    if sha is not None:
        if hf:
            raise c.fail("sha256", "does not apply to format transformers", "The hub checks its own files; "
                         "remove sha256.")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
            raise c.fail("sha256", f"must be 64 hex digits, got {sha!r}", "Compute it with `sha256sum FILE`.")
        fields["sha256"] = sha.lower()
    licence = data.get("licence", data.get("license"))
    if licence is not None:
        fields["licence"] = str(licence)

    inp = c.section("input", _INPUT, required=not hf)
    if "size" not in inp and not hf:
        raise c.fail("input.size", "is missing", "Give [H, W], the size the network runs at, or null to run "
                     "each image at its own size.")
    if inp.get("size") is not None:
        size = inp["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                  and v > 0 for v in size)):
            raise c.fail("input.size", f"must be [height, width] in pixels or null, got {size!r}",
                         "E.g. size: [512, 1024].")
        fields["input_size"] = (size[0], size[1])
    elif "size" in inp:
        fields["input_size"] = None
    for key, allowed in (("channel_order", ("RGB", "BGR")), ("resize", tuple(_RESIZE))):
        value = c.text(key, key == "channel_order" and not hf, allowed, inp, "input.")
        if value is not None:
            fields[key] = value
    if "scale" in inp or not hf:
        scale = inp.get("scale")
        if scale is None or isinstance(scale, bool) or scale not in (1, 255):
            raise c.fail("input.scale", "is missing" if scale is None else f"is {scale!r}",
                         "Use 1 when the network takes pixels in [0, 1], 255 when in [0, 255].")
        fields["scale"] = int(scale)
    mean, std = c.triple(inp, "mean", 0, False), c.triple(inp, "std", 1, True)
    if mean is not None or std is not None:
        fields["mean"], fields["std"] = mean or (0.0, 0.0, 0.0), std or (1.0, 1.0, 1.0)

    out = c.section("output", _OUTPUT, required=not hf)
    kind = c.text("kind", False, ("logits", "mask-classification"), out, "output.")
    if kind is not None:
        fields["kind"] = kind
    classes = out.get("classes")
    if classes is None and not hf:
        raise c.fail("output.classes", "is missing", "Give 'cityscapes' (the 19 train-id classes) or a list of "
                     "class names in class order.")
    if classes is not None:
        if classes == "cityscapes":
            fields["class_names"] = CITYSCAPES_CLASSES
        elif isinstance(classes, list) and classes and all(isinstance(n, str) and n for n in classes):
            if len(set(classes)) != len(classes):
                raise c.fail("output.classes", "repeats a class name", "Give each class once, in class order.")
            fields["class_names"] = tuple(classes)
        else:
            raise c.fail("output.classes", f"must be 'cityscapes' or a list of class names, got {classes!r}",
                         "E.g. classes: cityscapes, or classes: [road, car, person].")
    channels = out.get("channels")
    if channels is not None:
        if not (isinstance(channels, list) and channels and all(isinstance(v, int) and not isinstance(v, bool)
                                                                and v >= 0 for v in channels)):
            raise c.fail("output.channels", f"must be a list of output channel indices (>= 0), got {channels!r}",
                         "E.g. channels: [0, 1, 2] picks the first three output channels as the classes.")
        if len(set(channels)) != len(channels):
            raise c.fail("output.channels", "repeats a channel", "Give each class's channel once.")
        if "class_names" in fields and len(channels) != len(fields["class_names"]):
            raise c.fail("output.channels", f"lists {len(channels)} channels for {len(fields['class_names'])} "
                         f"classes", "Give one channel per class, in class order.")
        fields["class_channels"] = tuple(channels)
    upsample = c.text("upsample", False, tuple(_UPSAMPLE), out, "output.")
    if upsample is not None:
        fields["upsample"] = upsample
    rename = {"size": "input_size", "classes": "class_names", "channels": "class_channels"}
    fields["given"] = tuple(rename.get(k, k) for k in (*inp, *out))
    return ModelConfig(**fields)


def _import_entry(entry: str, card_dir: Path) -> Any:
    module_name, _, attr = entry.partition(":")
    sys.path.insert(0, str(card_dir))  # an entry module may sit beside its card
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"model entry {entry!r}: cannot import {module_name} ({exc}); install the package or "
                         f"put the module beside the card") from None
    finally:
        sys.path.remove(str(card_dir))
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise InputError(f"model entry {entry!r}: {module_name} has no callable {attr}")
    return fn


def open_network(cfg: ModelConfig) -> nn.Module:
    """The network a card's configuration names (file formats and python), on the CPU, eval mode."""
    if cfg.sha256 is not None:
        from sml.models.zoo import sha256_of

        target = cfg.file or cfg.weights
        actual = sha256_of(target)
        if actual != cfg.sha256:
            raise CheckpointError(f"model card {cfg.card}: {target} has sha256 {actual}, the card says {cfg.sha256}. "
                                  f"The file changed or is another release; fix the file or the card's sha256.")
    if cfg.format == "onnx":
        return OnnxNetwork(cfg.file)
    if cfg.format == "export":
        try:
            return torch.export.load(cfg.file).module()
        except Exception as exc:
            raise CheckpointError(f"model card {cfg.card}: cannot load {cfg.file} as a torch.export .pt2 archive "
                                  f"({type(exc).__name__}: {str(exc)[:200]}); check format and file") from None
    if cfg.format == "torchscript":
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated upstream but still the common format
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(cfg.file, map_location="cpu")
        except Exception as exc:
            raise CheckpointError(f"model card {cfg.card}: {cfg.file} is not a TorchScript file "
                                  f"({type(exc).__name__}); check format and file") from None
    if cfg.format == "python":
        from sml.models.checkpoint import load_checkpoint, load_into

        network = _import_entry(cfg.entry, Path(cfg.card or ".").parent)()
        if not isinstance(network, nn.Module):
            raise InputError(f"model card {cfg.card}: entry {cfg.entry} returned a {type(network).__name__}, "
                             f"not a torch.nn.Module")
        return load_into(network, load_checkpoint(cfg.weights), source=cfg.weights)
    raise InputError(f"format {cfg.format!r} has no network file")  # pragma: no cover - read_card refuses it


def _first_output(out: Any) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        out = out.get("out", next(iter(out.values())))
    return out


def dry_run(network: nn.Module, size: tuple[int, int], where: str) -> tuple[int, tuple[int, int]]:
    """(output channels, output H x W) of one forward pass on a zero batch at ``size``."""
    try:
        with torch.inference_mode():
            out = _first_output(_eval(network)(torch.zeros(1, 3, *size)))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{where}: the network failed on a 1 x 3 x {size[0]} x {size[1]} input "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}); check "
                         f"input.size (the size it runs at; fixed-size exports run at exactly their size)") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != 1 or min(out.shape[2:]) < 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"{where}: for a 1 x 3 x {size[0]} x {size[1]} input the network returned {shape}, "
                         f"not 1 x K x h x w class scores")
    return int(out.shape[1]), (int(out.shape[2]), int(out.shape[3]))


def load_card(card: str | os.PathLike | ModelConfig, device: str | torch.device = "cpu") -> SegmentationModel:
    """A ready :class:`SegmentationModel` from a model card (path or read configuration), dry-run checked."""
    cfg = card if isinstance(card, ModelConfig) else read_card(card)
    where = f"model card {cfg.card}"
    if cfg.format == "transformers":
        from sml.models.hf import complete_config

        network, cfg = complete_config(cfg)
    else:
        network = open_network(cfg)
        fixed = native_size(network)
        if fixed is not None and cfg.input_size != fixed:
            raise InputError(f"{where}: field input.size is {list(cfg.input_size) if cfg.input_size else None} but "
                             f"{Path(cfg.file).name} is exported for a fixed {fixed[0]}x{fixed[1]} (HxW) input. Set input.size: "
                             f"[{fixed[0]}, {fixed[1]}], or export with dynamic height and width.")
    channels, _ = dry_run(network, cfg.input_size or _DRY_SIZE, where)
    names = cfg.class_names
    if cfg.class_channels is None:
        if channels != len(names):
            raise InputError(f"{where}: the network returns {channels} output channels but the card names "
                             f"{len(names)} classes. Give output.channels (the {len(names)} channels that are "
                             f"the classes, in class order), e.g. channels: {list(range(len(names)))}.")
    elif max(cfg.class_channels) >= channels:
        raise InputError(f"{where}: field output.channels goes up to {max(cfg.class_channels)} but the network "
                         f"returns {channels} channels (0-{channels - 1}). Fix output.channels.")
    mean_std = {} if cfg.mean is None else {"mean": cfg.mean, "std": cfg.std}
    model = SegmentationModel(network, name=cfg.name, input_size=cfg.input_size, class_names=names,
                              class_channels=cfg.class_channels or range(channels), device=device,
                              channel_order=cfg.channel_order, scale=cfg.scale, resize=cfg.resize,
                              upsample=cfg.upsample, kind=cfg.kind, **mean_std)
    # identity: the network or weights file (its sha256 already checked when the card gives one);
    # transformers models, read from a hub cache or folder, are identified by their tensors
    file = cfg.file or cfg.weights
    return model.identify(file, cfg.sha256) if cfg.format != "transformers" and file else model


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


def card_template(file: str | os.PathLike, card_dir: str | os.PathLike | None = None) -> str:
    """A card for a network file, filled from one dry run; preprocessing fields are ``FILL-IN``."""
    path = Path(file).expanduser()
    if not path.is_file():
        raise InputError(f"{path} does not exist; give the network file (TorchScript, .onnx or .pt2)")
    fmt = file_format(path)
    if fmt is None:
        raise InputError(f"{path} is not a TorchScript, ONNX or torch.export (.pt2) network file. For a "
                         f"checkpoint of weights write a card with format: python, entry: package.module:build "
                         f"and weights: {path.name}")
    network = open_network(ModelConfig(name=path.stem, format=fmt, file=str(path)))
    native = native_size(network)
    channels, out_size = dry_run(network, native or (512, 1024), str(path))
    rel = os.path.relpath(path.resolve(), Path(card_dir or path.parent).resolve())
    size_line = (f"[{native[0]}, {native[1]}]          # fixed by the file" if native else
                 f"{TO_FILL}          # [H, W] it was trained at, or null for each image's own size")
    ran = f"{native[0]}x{native[1]}" if native else "512x1024"
    from sml.models.zoo import sha256_of

    chan_line = (f"# channels: [0, 1, ...]   # the network returns {channels} channels: list the ones that are "
                 f"the classes, in class order (default: all {channels})")
    return f"""\
# Model card for {path.name}, written by `sml models card` from one dry run
# (a {ran} input gave {channels} output channels at {out_size[0]}x{out_size[1]}).
# Replace every {TO_FILL} from the network's training code; sml never guesses preprocessing.
name: {path.stem}
format: {fmt}
file: {rel}
sha256: {sha256_of(path)}
input:
  size: {size_line}
  channel_order: {TO_FILL}   # RGB | BGR
  scale: {TO_FILL}           # 1: pixels in [0, 1]; 255: in [0, 255]
  mean: {TO_FILL}            # [m0, m1, m2] in channel_order and scale units; remove for no mean
  std: {TO_FILL}             # [s0, s1, s2]; remove for no std
  resize: bilinear-antialias  # | bilinear | nearest
output:
  kind: logits               # | mask-classification
  classes: {TO_FILL}         # cityscapes (the 19 train ids) or a list of class names
  {chan_line}
  upsample: bilinear         # | bilinear-align-corners
# licence: ...
"""
