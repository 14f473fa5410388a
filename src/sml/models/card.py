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
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sml.errors import InputError
from sml.models.config import ModelConfig
from sml.models.contract import CITYSCAPES_CLASSES, SETTINGS, SegmentationModel, normalisation_problem, units_rule
# Opening network files is the layers below's (sml.models.files, sml.models.probe); importable from here.
from sml.models.files import _where, build_entry, file_format, open_network, sha256_of  # noqa: F401
from sml.models.hf import complete_config
from sml.models.probe import (DRY_SIZE, TRACED_FORMATS, check_size_follows, dry_run, native_size,  # noqa: F401
                              open_file, size_line)
from sml.utils import schema

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


# ---------------------------------------------------------------- the card's declarations
_SAYS = {  # every refusal names the card (the voice's prefix) and the field
    "unknown": "field {field} is not a card field",
    "missing": "field {field} is missing",
    "placeholder": "field {field} is still {placeholder}",
    "inapplicable": "field {field} does not apply to format {format}",
    "mapping": "field {field} must be {expected}, got {value}",
    "invalid": "field {field} must be {expected}, got {value}",
    "choice": "field {field} is {value}",
    "pattern": "field {field} is {value}",
    "check": "field {field} {text}",
    "rule": "field {field} {text}",
}
_FIXES = {
    "unknown": "Fields: {known} (check the spelling).",
    "missing": "Add '{key}: ...'{with_choices}.",
    "placeholder": "Fill it in from the network's documentation or training code; sml never guesses preprocessing.",
    "inapplicable": "format {format} takes {needed}; remove '{key}' or change the format.",
    "type": "Quote it if in doubt.",
    "choice": "Use one of: {choices}.",
}
_NEEDED = {"torchscript": ("file",), "onnx": ("file",), "export": ("file",), "python": ("entry", "weights"),
           "transformers": ("source",)}


def _card_path(value: str, ctx: schema.Context) -> str:
    """A path of the card, relative to the card's folder; it must exist."""
    p = Path(value).expanduser()
    p = p if p.is_absolute() else ctx.extra["folder"] / p
    if not p.exists():
        raise schema.Invalid(f"names {schema.show(value)}, and {p} does not exist",
                             "Paths in a card are relative to the card's folder; fix the path.")
    return str(p)


def _hub_source(value: str, ctx: schema.Context) -> str:
    """A local transformers folder (relative to the card) when it exists, else a hub id (transformers resolves it)."""
    local = Path(value).expanduser()
    local = local if local.is_absolute() else ctx.extra["folder"] / local
    return str(local) if local.exists() else value


def _format_is(*formats: str) -> Any:
    return lambda ctx: ctx.get("format") in formats


def _not_hf(ctx: schema.Context) -> bool:
    return ctx.get("format") != "transformers"


def _section(name: str, part: schema.Schema) -> schema.Field:
    return schema.Field(name, type="mapping", schema=part, required=_not_hf, fix={
        "missing": f"Add an '{name}:' section with {', '.join(part.names())}.",
        "mapping": f"Write it as '{name}:' followed by indented 'field: value' lines."})


def _part(name: str, fields: tuple[schema.Field, ...], rules: tuple[schema.Rule, ...] = ()) -> schema.Schema:
    return schema.Schema(fields, rules, unknown="refuse", null_is_absent=True, placeholder=TO_FILL, says=_SAYS,
                         fixes={**_FIXES, "unknown": f"Fields of {name}: {{known}} (check the spelling)."})


def _setting(name: str, **change: Any) -> schema.Field:
    return replace(SETTINGS[name], **change)


def _channels_per_class(values: dict[str, Any], ctx: schema.Context) -> list[schema.Problem]:
    channels, names = values["channels"], values["classes"]
    if channels is None or names is None or len(channels) == len(names):
        return []
    return [ctx.problem("channels", f"lists {len(channels)} channels for {len(names)} classes",
                        "Give one channel per class, in class order.")]


_INPUT = _part("input", (
    _setting("size", required=_not_hf, fix={"missing": "Give [H, W], the size the network runs at, or null to run "
                                                       "each image at its own size.", "invalid": "E.g. size: [512, 1024]."}),
    _setting("channel_order", required=_not_hf, default=None),
    _setting("scale", required=_not_hf, default=None,
             fix="Use 1 when the network takes pixels in [0, 1], 255 when in [0, 255]."),
    _setting("mean", fix="E.g. mean: [0, 0, 0]; leave it out for 0."),
    _setting("std", fix="E.g. std: [1, 1, 1]; leave it out for 1."),
    _setting("resize", default=None),
), rules=(units_rule,))
_OUTPUT = _part("output", (
    _setting("kind", default=None),
    _setting("classes", required=_not_hf, unique=True, expected="'cityscapes' or a list of class names",
             convert=lambda v, ctx: list(CITYSCAPES_CLASSES) if v == "cityscapes" else v,
             says={"unique": "field {field} repeats a class name"},
             fix={"missing": "Give 'cityscapes' (the 19 train-id classes) or a list of class names in class order.",
                  "invalid": "E.g. classes: cityscapes, or classes: [road, car, person].",
                  "unique": "Give each class once, in class order."}),
    _setting("channels", unique=True, says={"unique": "field {field} repeats a channel"},
             fix={"invalid": "E.g. channels: [0, 1, 2] picks the first three output channels as the classes.",
                  "unique": "Give each class's channel once."}),
    _setting("upsample", default=None),
), rules=(_channels_per_class,))

#: A model card (models.md, "the model card"): every field, its type, range and rules
CARD = schema.Schema((
    schema.Field("name", type="str", required=True),
    schema.Field("format", type="str", required=True, choices=CARD_FORMATS),
    schema.Field("file", type="str", required=True, applies=_format_is(*FILE_FORMATS), check=_card_path),
    schema.Field("entry", type="str", required=True, applies=_format_is("python"),
                 pattern=r"[A-Za-z_][\w.]*:[A-Za-z_]\w*",
                 fix={"pattern": "Write it as package.module:function (a callable returning an nn.Module), e.g. "
                                 "mynets.espnet:build."}),
    schema.Field("weights", type="str", required=True, applies=_format_is("python"), check=_card_path),
    schema.Field("source", type="str", required=True, applies=_format_is("transformers"), check=_hub_source),
    schema.Field("sha256", type="str", applies=_not_hf, pattern="[0-9a-fA-F]{64}", expected="64 hex digits",
                 check=lambda v, ctx: v.lower(), says={"pattern": _SAYS["invalid"]},
                 fix={"invalid": "Compute it with `sha256sum FILE`.",
                      "inapplicable": "The hub checks its own files; remove sha256."}),
    schema.Field("licence", aliases=("license",)),
    _section("input", _INPUT),
    _section("output", _OUTPUT),
), unknown="refuse", null_is_absent=True, placeholder=TO_FILL, says=_SAYS, fixes=_FIXES,
   words={"needed": lambda ctx: " and ".join(_NEEDED.get(ctx.get("format"), ()))},
   voice=schema.Voice(prefix="model card {source}: "))


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
    card = CARD.read(data, path, folder=path.parent)
    fields = {k: card[k] for k in ("name", "format", "file", "entry", "weights", "source", "sha256")
              if card[k] is not None}
    if card["licence"] is not None:
        fields["licence"] = str(card["licence"])
    given = _given(data)
    fields.update(_contract(card["input"] or {}, card["output"] or {}, given))
    return ModelConfig(**fields, card=str(path), given=given)


def _given(data: dict) -> tuple[str, ...]:
    """The input/output fields a card states, by their ModelConfig names."""
    rename = {"size": "input_size", "classes": "class_names", "channels": "class_channels"}
    sections = [data.get(k) if isinstance(data.get(k), dict) else {} for k in ("input", "output")]
    return tuple(rename.get(k, k) for part in sections for k in part)


def _contract(inp: dict[str, Any], out: dict[str, Any], given: tuple[str, ...]) -> dict[str, Any]:
    """ModelConfig's contract fields from a card's checked input and output sections (what the card states)."""
    fields = {k: v for k, v in {"channel_order": inp.get("channel_order"), "resize": inp.get("resize"),
                                "kind": out.get("kind"), "upsample": out.get("upsample")}.items() if v is not None}
    if "input_size" in given:
        fields["input_size"] = None if inp.get("size") is None else tuple(inp["size"])
    if inp.get("scale") is not None:
        fields["scale"] = int(inp["scale"])
    if inp.get("mean") is not None or inp.get("std") is not None:
        fields["mean"] = tuple(inp.get("mean") or (0.0, 0.0, 0.0))
        fields["std"] = tuple(inp.get("std") or (1.0, 1.0, 1.0))
    if out.get("classes") is not None:
        fields["class_names"] = tuple(out["classes"])
    if out.get("channels") is not None:
        fields["class_channels"] = tuple(out["channels"])
    return fields


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
    settings = dict(input_size=cfg.input_size, class_names=cfg.class_names, mean=cfg.mean, std=cfg.std,
                    class_channels=list(cfg.class_channels or range(channels)), channel_order=cfg.channel_order,
                    scale=cfg.scale, resize=cfg.resize, upsample=cfg.upsample, kind=cfg.kind)
    if isinstance(card, ModelConfig) or cfg.format == "transformers":  # not (all) read through the card's schema
        model = SegmentationModel(network, name=cfg.name, device=device, **settings)
    else:
        model = SegmentationModel.from_checked(network, name=cfg.name, device=device, **settings)
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
