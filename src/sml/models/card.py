"""Model cards (models.md, "Your own network: the model card"): a YAML file saying how to feed a
network and how to read its output. :func:`read_card` validates every field into a
:class:`~sml.models.registry.ModelConfig`; :func:`load_card` opens the network, dry-runs it
(a traced file at two sizes, see :mod:`sml.models.probe`) and returns a :class:`~sml.models.contract.SegmentationModel`; :func:`card_template`
writes a card for a network file from dry runs, preprocessing left to be filled in. Cards are
read with a YAML loader that refuses anchors and aliases; a ``format: python`` entry point that
raises (or exits) at import or build is refused naming the card and the entry.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sml.errors import InputError
from sml.models.config import ModelConfig
from sml.models.contract import CITYSCAPES_CLASSES, RESIZE_MODES, _UPSAMPLE, SegmentationModel, normalisation_problem
# Opening network files is the layers below's (sml.models.files, sml.models.probe); importable from here.
from sml.models.files import _where, build_entry, file_format, open_network, sha256_of  # noqa: F401
from sml.models.hf import complete_config
from sml.models.probe import (DRY_SIZE, TRACED_FORMATS, check_size_follows, dry_run, native_size,  # noqa: F401
                              open_file, size_line)

CARD_SUFFIXES = (".yaml", ".yml")
FILE_FORMATS = ("torchscript", "onnx", "export")
CARD_FORMATS = (*FILE_FORMATS, "python", "transformers")
TO_FILL = "FILL-IN"  # placeholder of card_template; read_card refuses it
_TOP = ("name", "format", "file", "entry", "weights", "source", "sha256", "input", "output", "licence", "license")
_INPUT = ("size", "channel_order", "scale", "mean", "std", "resize")
_OUTPUT = ("kind", "classes", "channels", "upsample")

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


def needs_card_message(path: Path, fmt: str) -> str:
    """The refusal for a network file given without a card: how to write one."""
    return (f"{path} is a {fmt} network file; sml never guesses how to feed a network, so it needs a model "
            f"card (a YAML file) saying its input size, channel order, pixel scale, mean/std and which "
            f"output channels are which classes. Write one with `sml models card {path} -o CARD.yaml`, fill "
            f"in the fields marked {TO_FILL}, and give --model CARD.yaml (Python: sml.models.load('CARD.yaml'), "
            f"or sml.models.wrap(...) with the preprocessing as arguments). A card looks like:\n{EXAMPLE}")


MAX_CARD_BYTES = 1 << 20  # a card is a few hundred bytes; anything this large is not one


class _AnchorRefused(Exception):
    """A YAML anchor or alias, refused before anything is expanded."""

    def __init__(self, mark: Any) -> None:
        super().__init__(f"line {mark.line + 1}, column {mark.column + 1}")


@functools.lru_cache(maxsize=1)
def _card_loader() -> type:
    """yaml.SafeLoader that refuses anchors (&a) and aliases (*a) as it meets them, so a card can
    never expand into more than its own text (a "billion laughs" alias bomb stops at its first anchor)."""
    import yaml

    class CardLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise _AnchorRefused(event.start_mark)
            return super().compose_node(parent, index)

    return CardLoader


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages that quote a card's value."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + " ..."


def _key(key: Any) -> str:
    """A card key as a message shows it (cut to 40 characters)."""
    text = str(key)
    return text if len(text) <= 40 else text[:40] + " ..."


def _read_yaml(path: Path) -> dict:
    """The mapping a card file holds (InputError for a missing, huge, non-YAML or non-mapping file)."""
    import yaml

    if not path.is_file():
        raise InputError(f"model card {path} does not exist; check the --model path (a card is a YAML file, "
                         f"`sml models card NETWORK_FILE` writes one)")
    if path.stat().st_size > MAX_CARD_BYTES:
        raise InputError(f"model card {path} is {path.stat().st_size} bytes; a card is a short YAML file (under "
                         f"{MAX_CARD_BYTES // 1024} KiB). Check that --model names the card, not the network file.")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_card_loader())  # noqa: S506 - a SafeLoader
    except _AnchorRefused as exc:
        raise InputError(f"model card {path} uses a YAML anchor or alias (&name / *name) at {exc}; a card "
                         f"refuses them, so that it always means just what it shows. Write each value out "
                         f"in full.") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"model card {path} is not valid YAML: {str(exc).splitlines()[0][:200]}. Check the "
                         f"indentation and quoting around that place.") from None
    if not isinstance(data, dict):
        raise InputError(f"model card {path} must be a YAML mapping of fields (name, format, file, input, "
                         f"output, ...), got {type(data).__name__}. Example:\n{EXAMPLE}")
    return data


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
            raise self.fail(key, f"must be a mapping of {', '.join(allowed)}, got {_show(value)}",
                            f"Write it as '{key}:' followed by indented 'field: value' lines.")
        unknown = sorted(set(value) - set(allowed), key=str)
        if unknown:
            raise self.fail(f"{key}.{_key(unknown[0])}", "is not a card field",
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
            raise self.fail(prefix + key, f"must be a non-empty string, got {_show(value)}", "Quote it if in doubt.")
        if allowed is not None and value not in allowed:
            raise self.fail(prefix + key, f"is {_show(value)}", f"Use one of: {', '.join(allowed)}.")
        return value

    def file(self, key: str, required: bool) -> str | None:
        value = self.text(key, required)
        if value is None:
            return None
        p = Path(value).expanduser()
        p = p if p.is_absolute() else self.path.parent / p
        if not p.exists():
            raise self.fail(key, f"names {_show(value)}, and {p} does not exist",
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
                            f"in channel_order and scale units), got {_show(value)}",
                            f"E.g. {key}: [{', '.join([str(default)] * 3)}]; leave it out for {default}.")
        return tuple(float(v) for v in value)  # type: ignore[return-value]

    # -- the card's parts -------------------------------------------------------------------------
    def network_fields(self, fmt: str) -> dict[str, Any]:
        """Where the network comes from: file / entry and weights / source, sha256, licence."""
        needed = {"torchscript": ("file",), "onnx": ("file",), "export": ("file",), "python": ("entry", "weights"),
                  "transformers": ("source",)}[fmt]
        for key in ("file", "entry", "weights", "source"):
            if key not in needed and self.data.get(key) is not None:
                raise self.fail(key, f"does not apply to format {fmt}",
                                f"format {fmt} takes {' and '.join(needed)}; remove '{key}' or change the format.")
        fields: dict[str, Any] = {}
        if fmt in FILE_FORMATS:
            fields["file"] = self.file("file", True)
        elif fmt == "python":
            entry = self.text("entry", True)
            if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", entry):
                raise self.fail("entry", f"is {_show(entry)}", "Write it as package.module:function (a callable "
                                "returning an nn.Module), e.g. mynets.espnet:build.")
            fields["entry"], fields["weights"] = entry, self.file("weights", True)
        else:
            source = self.text("source", True)
            local = Path(source).expanduser()
            local = local if local.is_absolute() else self.path.parent / local
            fields["source"] = str(local) if local.exists() else source  # else a hub id, resolved by transformers
        fields.update(self.checksum(fmt == "transformers"))
        licence = self.data.get("licence", self.data.get("license"))
        if licence is not None:
            fields["licence"] = str(licence)
        return fields

    def checksum(self, hf: bool) -> dict[str, str]:
        sha = self.data.get("sha256")
        if sha is None:
            return {}
        if hf:
            raise self.fail("sha256", "does not apply to format transformers", "The hub checks its own files; "
                            "remove sha256.")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
            raise self.fail("sha256", f"must be 64 hex digits, got {_show(sha)}", "Compute it with `sha256sum FILE`.")
        return {"sha256": sha.lower()}

    def input_fields(self, inp: dict, hf: bool) -> dict[str, Any]:
        """size, channel_order, resize, scale, mean and std, the last three checked against each other."""
        fields = self.size(inp, hf)
        for key, allowed in (("channel_order", ("RGB", "BGR")), ("resize", RESIZE_MODES)):
            value = self.text(key, key == "channel_order" and not hf, allowed, inp, "input.")
            if value is not None:
                fields[key] = value
        if "scale" in inp or not hf:
            scale = inp.get("scale")
            if scale is None or isinstance(scale, bool) or scale not in (1, 255):
                raise self.fail("input.scale", "is missing" if scale is None else f"is {_show(scale)}",
                                "Use 1 when the network takes pixels in [0, 1], 255 when in [0, 255].")
            fields["scale"] = int(scale)
        mean, std = self.triple(inp, "mean", 0, False), self.triple(inp, "std", 1, True)
        if mean is not None or std is not None:
            fields["mean"], fields["std"] = mean or (0.0, 0.0, 0.0), std or (1.0, 1.0, 1.0)
        if "scale" in fields:  # a transformers card may leave the scale to the image processor
            check_units(self.path, fields["scale"], fields.get("mean"), fields.get("std"))
        return fields

    def size(self, inp: dict, hf: bool) -> dict[str, Any]:
        if "size" not in inp:
            if hf:
                return {}
            raise self.fail("input.size", "is missing", "Give [H, W], the size the network runs at, or null to run "
                            "each image at its own size.")
        size = inp["size"]
        if size is None:
            return {"input_size": None}
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                  and v > 0 for v in size)):
            raise self.fail("input.size", f"must be [height, width] in pixels or null, got {_show(size)}",
                            "E.g. size: [512, 1024].")
        return {"input_size": (size[0], size[1])}

    def output_fields(self, out: dict, hf: bool) -> dict[str, Any]:
        """kind, classes, channels and upsample."""
        fields: dict[str, Any] = {}
        kind = self.text("kind", False, ("logits", "mask-classification"), out, "output.")
        if kind is not None:
            fields["kind"] = kind
        names = self.classes(out, hf)
        if names is not None:
            fields["class_names"] = names
        channels = self.channels(out, names)
        if channels is not None:
            fields["class_channels"] = channels
        upsample = self.text("upsample", False, tuple(_UPSAMPLE), out, "output.")
        if upsample is not None:
            fields["upsample"] = upsample
        return fields

    def classes(self, out: dict, hf: bool) -> tuple[str, ...] | None:
        classes = out.get("classes")
        if classes is None:
            if hf:
                return None
            raise self.fail("output.classes", "is missing", "Give 'cityscapes' (the 19 train-id classes) or a list "
                            "of class names in class order.")
        if classes == "cityscapes":
            return CITYSCAPES_CLASSES
        if not (isinstance(classes, list) and classes and all(isinstance(n, str) and n for n in classes)):
            raise self.fail("output.classes", f"must be 'cityscapes' or a list of class names, got {_show(classes)}",
                            "E.g. classes: cityscapes, or classes: [road, car, person].")
        if len(set(classes)) != len(classes):
            raise self.fail("output.classes", "repeats a class name", "Give each class once, in class order.")
        return tuple(classes)

    def channels(self, out: dict, names: tuple[str, ...] | None) -> tuple[int, ...] | None:
        channels = out.get("channels")
        if channels is None:
            return None
        if not (isinstance(channels, list) and channels and all(isinstance(v, int) and not isinstance(v, bool)
                                                                and v >= 0 for v in channels)):
            raise self.fail("output.channels", f"must be a list of output channel indices (>= 0), got "
                            f"{_show(channels)}", "E.g. channels: [0, 1, 2] picks the first three output channels "
                            "as the classes.")
        if len(set(channels)) != len(channels):
            raise self.fail("output.channels", "repeats a channel", "Give each class's channel once.")
        if names is not None and len(channels) != len(names):
            raise self.fail("output.channels", f"lists {len(channels)} channels for {len(names)} classes",
                            "Give one channel per class, in class order.")
        return tuple(channels)


def check_units(card: Any, scale: float, mean: Any, std: Any) -> None:
    """Refuse a card whose mean/std are not in its scale's units (see :func:`normalisation_problem`)."""
    problem = normalisation_problem(scale, mean, std)
    if problem is not None:
        field, what, fix = problem
        raise InputError(f"model card {card}: field input.{field} {what}. {fix}")


def read_card(path: str | os.PathLike) -> ModelConfig:
    """Parse and validate a model card into a :class:`ModelConfig` (InputError naming card, field, fix)."""
    path = Path(path).expanduser()
    data = _read_yaml(path)
    c = _Card(path, data)
    unknown = sorted(set(data) - set(_TOP), key=str)
    if unknown:
        raise c.fail(_key(unknown[0]), "is not a card field",
                     f"Fields: {', '.join(_TOP[:-1])} (check the spelling).")
    name = c.text("name", True)
    fmt = c.text("format", True, CARD_FORMATS)
    hf = fmt == "transformers"
    fields: dict[str, Any] = {"name": name, "format": fmt, "card": str(path), **c.network_fields(fmt)}
    inp = c.section("input", _INPUT, required=not hf)
    fields.update(c.input_fields(inp, hf))
    out = c.section("output", _OUTPUT, required=not hf)
    fields.update(c.output_fields(out, hf))
    rename = {"size": "input_size", "classes": "class_names", "channels": "class_channels"}
    fields["given"] = tuple(rename.get(k, k) for k in (*inp, *out))
    return ModelConfig(**fields)


def card_fields(cfg: ModelConfig) -> dict[str, Any]:
    """A configuration as the card that states every field of it (mean/std left out when there are none):
    what a ``format: transformers`` model ran with, filled in from its processor, for the run's records."""
    inp: dict[str, Any] = {"size": list(cfg.input_size) if cfg.input_size else None,
                           "channel_order": cfg.channel_order, "scale": int(cfg.scale), "resize": cfg.resize}
    if cfg.mean is not None:
        inp.update(mean=list(cfg.mean), std=list(cfg.std))
    classes = "cityscapes" if tuple(cfg.class_names) == CITYSCAPES_CLASSES else list(cfg.class_names)
    out = {"kind": cfg.kind, "classes": classes, "upsample": cfg.upsample}
    if cfg.class_channels is not None:
        out["channels"] = list(cfg.class_channels)
    where = {k: getattr(cfg, k) for k in ("file", "entry", "weights", "source") if getattr(cfg, k)}
    return {"name": cfg.name, "format": cfg.format, **where, "input": inp, "output": out}


def _open_for_card(cfg: ModelConfig, where: str) -> tuple[nn.Module, ModelConfig]:
    """The card's network, and its configuration completed (transformers) and checked against the file."""
    if cfg.format == "transformers":
        network, cfg = complete_config(cfg)
        check_units(cfg.card or f"hf:{cfg.source}", cfg.scale, cfg.mean, cfg.std)  # the processor may have filled them
        return network, cfg
    network = open_network(cfg)
    fixed = native_size(network)
    if fixed is not None and cfg.input_size != fixed:
        raise InputError(f"{where}: field input.size is {list(cfg.input_size) if cfg.input_size else None} but "
                         f"{Path(cfg.file).name} is exported for a fixed {fixed[0]}x{fixed[1]} (HxW) input. Set "
                         f"input.size: [{fixed[0]}, {fixed[1]}], or export with dynamic height and width.")
    return network, cfg


def _check_channels(cfg: ModelConfig, channels: int, where: str) -> None:
    names = cfg.class_names
    if cfg.kind == "mask-classification":
        if cfg.class_channels not in (None, tuple(range(channels))):
            raise InputError(f"{where}: field output.channels is {list(cfg.class_channels)}, but a "
                             f"mask-classification network's classes are all the columns of its class logits "
                             f"before 'no object' (here {channels}), in order: its per-query scores are defined "
                             f"over all of them. Leave output.channels out.")
        if channels != len(names):
            raise InputError(f"{where}: the network's class logits have {channels} classes (and 'no object', the "
                             f"last column) but the card names {len(names)}. Name its {channels} classes in "
                             f"output.classes, in order.")
        return
    if cfg.class_channels is None:
        if channels != len(names):
            raise InputError(f"{where}: the network returns {channels} output channels but the card names "
                             f"{len(names)} classes. Give output.channels (the {len(names)} channels that are "
                             f"the classes, in class order), e.g. channels: {list(range(len(names)))}.")
    elif max(cfg.class_channels) >= channels:
        raise InputError(f"{where}: field output.channels goes up to {max(cfg.class_channels)} but the network "
                         f"returns {channels} channels (0-{channels - 1}). Fix output.channels.")


def load_card(card: str | os.PathLike | ModelConfig, device: str | torch.device = "cpu") -> SegmentationModel:
    """A ready :class:`SegmentationModel` from a model card (path or read configuration), dry-run checked.

    A TorchScript or ONNX file with no fixed input size is also run at a second size: one traced
    with its sizes fixed runs only at the size it was traced at (:func:`check_size_follows`).
    """
    cfg = card if isinstance(card, ModelConfig) else read_card(card)
    where = _where(cfg)
    network, cfg = _open_for_card(cfg, where)
    channels, out = dry_run(network, cfg.input_size or DRY_SIZE, where, cfg.kind)
    if cfg.format in TRACED_FORMATS and native_size(network) is None:
        check_size_follows(network, cfg.input_size, out, where, Path(cfg.file).name, setting="field input.size",
                           kind=cfg.kind)
    _check_channels(cfg, channels, where)
    mean_std = {} if cfg.mean is None else {"mean": cfg.mean, "std": cfg.std}
    model = SegmentationModel(network, name=cfg.name, input_size=cfg.input_size, class_names=cfg.class_names,
                              class_channels=cfg.class_channels or range(channels), device=device,
                              channel_order=cfg.channel_order, scale=cfg.scale, resize=cfg.resize,
                              upsample=cfg.upsample, kind=cfg.kind, **mean_std)
    # identity: the network or weights file (its sha256 already checked when the card gives one);
    # transformers models, read from a hub cache or folder, are identified by their tensors, and
    # carry the card they ran with, every field filled in (a hf: shorthand has no card file to show)
    file = cfg.file or cfg.weights
    if cfg.format == "transformers":
        model.card = card_fields(cfg)
        return model
    return model.identify(file, cfg.sha256) if file else model


def card_template(file: str | os.PathLike, card_dir: str | os.PathLike | None = None) -> str:
    """A card for a network file, filled from dry runs; preprocessing fields are ``FILL-IN``.

    The size is the file's fixed size, or for a file traced with fixed sizes the size its output
    shows it was traced at (never null: see :func:`check_size_follows`).
    """
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
    ran = native or (512, 1024)
    channels, out_size = dry_run(network, ran, str(path))
    rel = os.path.relpath(path.resolve(), Path(card_dir or path.parent).resolve())
    size = (f"[{native[0]}, {native[1]}]          # fixed by the file" if native else
            size_line(network, out_size, ran, TO_FILL))
    chan_line = (f"# channels: [0, 1, ...]   # the network returns {channels} channels: list the ones that are "
                 f"the classes, in class order (default: all {channels})")
    return f"""\
# Model card for {path.name}, written by `sml models card` from a dry run
# (a {ran[0]}x{ran[1]} input gave {channels} output channels at {out_size[0]}x{out_size[1]}).
# Replace every {TO_FILL} from the network's training code; sml never guesses preprocessing.
name: {path.stem}
format: {fmt}
file: {rel}
sha256: {sha256_of(path)}
input:
  size: {size}
  channel_order: {TO_FILL}   # RGB | BGR
  scale: {TO_FILL}           # 1: pixels in [0, 1]; 255: in [0, 255]
  mean: {TO_FILL}            # [m0, m1, m2] in channel_order and scale units; remove for no mean
  std: {TO_FILL}             # [s0, s1, s2]; remove for no std
  resize: bilinear-antialias  # | bilinear | nearest | pil-bilinear | pil-bicubic
output:
  kind: logits               # | mask-classification
  classes: {TO_FILL}         # cityscapes (the 19 train ids) or a list of class names
  {chan_line}
  upsample: bilinear         # | bilinear-align-corners
# licence: ...
"""
