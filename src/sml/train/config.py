"""Training configuration: typed sections, YAML files, dotted ``key=value`` overrides.

A config is a YAML file (packaged ones live in ``sml/train/configs``); every
value can be overridden on the command line as ``section.key=value``, the value
parsed as YAML (``optim.lr=5e-3``, ``data.crop_size=[512,512]``,
``model.pretrained_backbone=null``).
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from sml.errors import InputError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class ModelConfig:
    arch: str = "deeplabv3plus_r101_os8"   # a name of sml.models, or "package.module:factory"
    num_classes: int = 19
    pretrained_backbone: str | None = None  # ImageNet trunk weights (a path, never downloaded)
    # What a fresh run without pretrained_backbone (and without init_weights) does: "ignore" = fine
    # (trains from scratch), "warn" = a warning at start, "error" = refused before any work.
    trunk_required: str = "ignore"
    init_weights: str | None = None         # full network weights to fine-tune from
    sync_bn: bool = True                    # SyncBatchNorm under torchrun
    freeze_bn: bool = False                 # keep batch norms in eval mode (fine-tuning with small batches)
    normalize: str = "auto"                 # "imagenet", "none" (RGB in [0,1]) or "auto" (per arch)


@dataclass
class ColorJitterConfig:
    prob: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1


@dataclass
class BlurConfig:
    prob: float = 0.5
    sigma_min: float = 0.15
    sigma_max: float = 1.3


@dataclass
class ClassUniformConfig:
    share: float = 0.5          # fraction of crops centred on a pixel of a uniformly drawn class
    tile: int = 1024            # centroids are computed per tile x tile block of every image
    cache: str | None = "auto"  # centroid cache file; "auto" = $SML_CACHE or ~/.cache/sml; null = no cache


@dataclass
class DataConfig:
    root: str = "data/cityscapes"
    kind: str = "cityscapes"
    train_split: str = "train"
    val_split: str = "val"
    ignore_index: int = 255
    batch_size: int = 4          # global batch: per-process batch = batch_size / world size
    num_workers: int = 4
    crop_size: list[int] = field(default_factory=lambda: [768, 768])   # [height, width]
    scale_min: float = 0.5
    scale_max: float = 2.0
    hflip: bool = True
    color_jitter: ColorJitterConfig = field(default_factory=ColorJitterConfig)
    blur: BlurConfig = field(default_factory=BlurConfig)
    class_uniform: ClassUniformConfig = field(default_factory=ClassUniformConfig)
    val_size: list[int] | None = None   # [height, width] to evaluate at; null = full resolution
    val_max_frames: int | None = None


@dataclass
class OptimConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    poly_power: float = 0.9
    iterations: int = 60000
    aux_weight: float = 0.4


@dataclass
class TrainLoopConfig:
    out_dir: str = "runs/train"
    seed: int = 0
    device: str = "auto"          # "auto", "cpu", "cuda", "cuda:1"
    amp: bool = True              # mixed precision (CUDA only; ignored on CPU)
    deterministic: bool = False   # torch.use_deterministic_algorithms (slower on CUDA)
    checkpoint_every: int = 1000
    val_every: int = 5000         # 0 = never
    log_every: int = 20
    stop_at: int | None = None    # stop after this iteration as if killed (resume tests)
    keep_every: int | None = None  # also keep iter_<n>.pth every n iterations
    threads: int | None = None    # torch CPU threads


@dataclass
class TrainConfig:
    """The whole training recipe; defaults are the published SML recipe (DeepLabV3+ R101 OS8)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)

    # ---- construction -------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a nested dict; unknown keys are an error that names them."""
        return _from_dict(cls, d, "")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def override(self, items: Iterable[str]) -> "TrainConfig":
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
        return TrainConfig.from_dict(d)

    def validate(self) -> None:
        """Reject settings that cannot work, with the fix in the message."""
        d, o = self.data, self.optim
        if len(d.crop_size) != 2 or min(d.crop_size) <= 0:
            raise InputError(f"data.crop_size must be [height, width] > 0, got {d.crop_size}")
        if not 0 < d.scale_min <= d.scale_max:
            raise InputError(f"data.scale_min/scale_max must satisfy 0 < min <= max, got {d.scale_min}, {d.scale_max}")
        if not 0.0 <= d.class_uniform.share <= 1.0:
            raise InputError(f"data.class_uniform.share must be in [0, 1], got {d.class_uniform.share}")
        if d.batch_size < 1:
            raise InputError(f"data.batch_size must be >= 1, got {d.batch_size}")
        if o.iterations < 1 or o.lr <= 0:
            raise InputError(f"optim.iterations must be >= 1 and optim.lr > 0, got {o.iterations}, {o.lr}")
        if self.model.trunk_required not in ("ignore", "warn", "error"):
            raise InputError(f"model.trunk_required must be ignore, warn or error, got {self.model.trunk_required!r}")
        if self.model.normalize not in ("auto", "imagenet", "none"):
            raise InputError(f"model.normalize must be auto, imagenet or none, got {self.model.normalize!r}")


def _from_dict(cls: type, d: Any, prefix: str) -> Any:
    if not isinstance(d, dict):
        raise InputError(f"config section {prefix or '<root>'!r} must be a mapping, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise InputError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
                         f"known keys in {prefix or '<root>'}: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in d.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _from_dict(tp, value if value is not None else {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(tp, value, prefix + name)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check/convert a scalar against its annotation (YAML gives 5e-4 as a string in some forms)."""
    args = typing.get_args(tp)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise InputError(f"config key {key} may not be null")
    base = next((a for a in args if a is not type(None)), tp) if args and typing.get_origin(tp) is not list else tp
    origin = typing.get_origin(base)
    try:
        if origin is list:
            if not isinstance(value, (list, tuple)):
                value = [value, value] if isinstance(value, (int, float)) else value
            (inner,) = typing.get_args(base)
            return [inner(v) for v in value]
        if base is bool:
            if isinstance(value, bool):
                return value
            raise ValueError
        if base is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if base is float:
            return float(value)
        if base is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise InputError(f"config key {key}: {value!r} is not a valid {getattr(base, '__name__', base)}")


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
    cfg = TrainConfig.from_dict(raw).override(overrides)
    cfg.validate()
    return cfg
