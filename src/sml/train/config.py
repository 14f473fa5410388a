"""Training configuration: typed sections, YAML files, dotted ``key=value`` overrides.

A config is a YAML file (packaged ones live in ``sml/train/configs``); every
value can be overridden on the command line as ``section.key=value``, the value
parsed as YAML (``optim.lr=5e-3``, ``data.crop_size=[512,512]``,
``model.pretrained_backbone=null``).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from sml.errors import InputError
from sml.utils import schema

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def _declare(default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING, **decl: Any) -> Any:
    """A dataclass field with schema declarations (:class:`sml.utils.schema.Field` arguments) beyond its type."""
    return field(default=default, default_factory=factory, metadata={"schema": decl})


_SIZE = dict(length=2, item=schema.Field("", type="int", ge=1, coerce=True),
             says={"invalid": "{field} must be [height, width] > 0, got {value}"})


def _at_most(low: str, high: str) -> schema.Rule:
    """The rule ``low <= high`` between two fields of one section."""
    def rule(values: dict[str, Any], ctx: schema.Context) -> list[schema.Problem]:
        if values[low] <= values[high]:
            return []
        return [ctx.problem(low, f"must be <= {ctx.path}{high}, got {values[low]!r} > {values[high]!r}")]
    return rule


@dataclass
class ModelConfig:
    arch: str = "deeplabv3plus_r101_os8"   # a name of sml.models, or "package.module:factory"
    num_classes: int = _declare(19, ge=1)
    pretrained_backbone: str | None = None  # ImageNet trunk weights (a path, never downloaded)
    # What a fresh run without pretrained_backbone (and without init_weights) does: "ignore" = fine
    # (trains from scratch), "warn" = a warning at start, "error" = refused before any work.
    trunk_required: str = _declare("ignore", choices=("ignore", "warn", "error"))
    init_weights: str | None = None         # full network weights to fine-tune from
    sync_bn: bool = True                    # SyncBatchNorm under torchrun
    freeze_bn: bool = False                 # keep batch norms in eval mode (fine-tuning with small batches)
    normalize: str = _declare("auto", choices=("auto", "imagenet", "none"))  # "none": RGB in [0,1]; "auto": per arch


_PROB = dict(ge=0, le=1)


@dataclass
class ColorJitterConfig:
    prob: float = _declare(0.5, **_PROB)
    brightness: float = _declare(0.4, ge=0)
    contrast: float = _declare(0.4, ge=0)
    saturation: float = _declare(0.4, ge=0)
    hue: float = _declare(0.1, ge=0, le=0.5)


@dataclass
class BlurConfig:
    prob: float = _declare(0.5, **_PROB)
    sigma_min: float = _declare(0.15, gt=0)
    sigma_max: float = _declare(1.3, gt=0)

    __rules__ = (_at_most("sigma_min", "sigma_max"),)


@dataclass
class ClassUniformConfig:
    share: float = _declare(0.5, **_PROB)  # fraction of crops centred on a pixel of a uniformly drawn class
    tile: int = _declare(1024, ge=1)       # centroids are computed per tile x tile block of every image
    cache: str | None = "auto"  # centroid cache file; "auto" = $SML_CACHE or ~/.cache/sml; null = no cache


@dataclass
class DataConfig:
    root: str = "data/cityscapes"
    kind: str = "cityscapes"
    train_split: str = "train"
    val_split: str = "val"
    ignore_index: int = _declare(255, ge=0, le=255)
    batch_size: int = _declare(4, ge=1)    # global batch: per-process batch = batch_size / world size
    num_workers: int = _declare(4, ge=0)
    crop_size: list[int] = _declare(factory=lambda: [768, 768], **_SIZE)   # [height, width]
    scale_min: float = _declare(0.5, gt=0)
    scale_max: float = _declare(2.0, gt=0)
    hflip: bool = True
    color_jitter: ColorJitterConfig = field(default_factory=ColorJitterConfig)
    blur: BlurConfig = field(default_factory=BlurConfig)
    class_uniform: ClassUniformConfig = field(default_factory=ClassUniformConfig)
    val_size: list[int] | None = _declare(None, **_SIZE)   # [height, width] to evaluate at; null = full resolution
    val_max_frames: int | None = _declare(None, ge=1)

    __rules__ = (_at_most("scale_min", "scale_max"),)


@dataclass
class OptimConfig:
    lr: float = _declare(0.01, gt=0)
    momentum: float = _declare(0.9, ge=0)
    weight_decay: float = _declare(5e-4, ge=0)
    nesterov: bool = False
    poly_power: float = _declare(0.9, ge=0)
    iterations: int = _declare(60000, ge=1)
    aux_weight: float = _declare(0.4, ge=0)


@dataclass
class TrainLoopConfig:
    out_dir: str = "runs/train"
    seed: int = 0
    device: str = "auto"          # "auto", "cpu", "cuda", "cuda:1"
    amp: bool = True              # mixed precision (CUDA only; ignored on CPU)
    deterministic: bool = False   # torch.use_deterministic_algorithms (slower on CUDA)
    checkpoint_every: int = _declare(1000, ge=1)
    val_every: int = _declare(5000, ge=0)         # 0 = never
    log_every: int = _declare(20, ge=1)
    stop_at: int | None = _declare(None, ge=0)    # stop after this iteration as if killed (resume tests)
    keep_every: int | None = _declare(None, ge=1)  # also keep iter_<n>.pth every n iterations
    threads: int | None = _declare(None, ge=1)    # torch CPU threads


@dataclass
class TrainConfig:
    """The whole training recipe; defaults are the published SML recipe (DeepLabV3+ R101 OS8).

    Every field is declared with its type and range (:data:`RECIPE`, read by :mod:`sml.utils.schema`):
    a recipe file, an override and :meth:`validate` are checked by the same declarations.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)

    # ---- construction -------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "") -> "TrainConfig":
        """Build from a nested dict; unknown keys, wrong types and values out of range are refused naming
        the key (and ``source``, the recipe file)."""
        return schema.build(cls, RECIPE.read(d, source))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def override(self, items: Iterable[str], source: str = "") -> "TrainConfig":
        """A copy with ``key.sub=value`` overrides applied (value parsed as YAML)."""
        d = self.to_dict()
        for item in items:
            if "=" not in item:
                raise InputError(f"override {item!r} is not of the form key=value (e.g. optim.lr=0.005)")
            key, _, raw = item.partition("=")
            try:
                value = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError as exc:
                raise InputError(f"override {item!r}: cannot parse value {raw!r}: {exc}") from None
            node = d
            parts = key.strip().split(".")
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise InputError(f"override {item!r}: unknown key {key!r}; see `sml train --print-config`")
                node = node[p]
            if parts[-1] not in node:
                raise InputError(f"override {item!r}: unknown key {key!r}; see `sml train --print-config`")
            node[parts[-1]] = value
        return TrainConfig.from_dict(d, source)

    def validate(self) -> None:
        """Refuse settings that cannot work (the recipe's declarations), with the fix in the message."""
        RECIPE.read(self.to_dict())


_RECIPE_SAYS = {
    "mapping": "config section '{section}' must be a mapping, got {value}",
    "unknown": "unknown config key(s) {unknown}; known keys in {section}: {known}",
    "null": "config key {field} may not be null",
    "type": "config key {field}: {value} is not a valid {kind}",
    "item": "config key {field}[{index}]: {value} is not {expected}",
    "rule": "{field} {text}",
}
_RECIPE_FIX = "`sml train --print-config` shows every key with its value."

#: The declarations of a training recipe (every section, key, type, range and rule)
RECIPE = schema.schema_of(TrainConfig, says=_RECIPE_SAYS,
                          fixes={"mapping": "Write it as 'section:' followed by indented 'key: value' lines."},
                          voice=schema.Voice(prefix="{source}: ", fix=_RECIPE_FIX))


def packaged_configs() -> list[str]:
    """Names of the configs shipped with sml (usable as ``--config NAME``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(path_or_name: str | os.PathLike | None, overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a YAML config (a path or a packaged name) and apply ``key=value`` overrides."""
    if path_or_name is None:
        path_or_name = "deeplabv3plus_r101_os8_cityscapes"
    path = Path(path_or_name)
    if not path.is_file():
        named = CONFIG_DIR / f"{path_or_name}.yaml"
        if not named.is_file():
            raise InputError(f"config {str(path_or_name)!r} is neither a file nor a packaged config; "
                             f"packaged configs: {', '.join(packaged_configs())}")
        path = named
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"config {path} is not valid YAML: {exc}") from None
    overrides, source = list(overrides), f"training config {path}"
    return TrainConfig.from_dict(raw, source).override(overrides, source + (" with overrides" if overrides else ""))
