"""One model registry, timm-style: architectures register builders; networks are described by
:class:`ModelConfig` (one per ``arch.tag`` for the built-ins, one per model card).

An architecture is a builder plus what is needed to read its checkpoints (the classifier key,
extra non-class output channels, a signature to recognise unlabelled state dicts). Everything
about how to *use* a network -- where its weights are and their sha256, input size, channel
order, pixel scale, mean/std, which output channels are which classes, licence -- is a
:class:`ModelConfig`, whether the network is built in, in the zoo, or described by a card.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from torch import nn

from sml.errors import InputError
# ModelConfig and the class tables are sml.models.config's (the layer below); importable from here.
from sml.models.config import CITYSCAPES_CLASSES, FORMATS, IMAGENET_MEAN, IMAGENET_STD, ModelConfig  # noqa: F401

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class Architecture:
    """A registered builder: ``builder(num_classes=..., **kw) -> nn.Module`` and how to read its checkpoints.

    ``extra_channels``: output channels after the classes that a checkpoint may carry and that
    are never classes (ERFNet's void channel 19). ``classifier_key``: the state-dict entry whose
    first dimension is the number of output channels. ``signature``: state-dict keys (and
    shapes, or () for any) that identify the architecture in an unlabelled checkpoint.
    """

    name: str
    builder: Builder
    classifier_key: str | None = None
    extra_channels: int = 0
    signature: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: run in channels-last layout on the CPU by default (faster for plain convolutional networks)
    cpu_channels_last: bool = True
    description: str = ""


_ARCHS: dict[str, Architecture] = {}
_CONFIGS: dict[str, ModelConfig] = {}
_DEFAULT_TAG: dict[str, str] = {}


def register_model(name: str, builder: Builder, config: ModelConfig | dict[str, Any] | None = None, *,
                   classifier_key: str | None = None, extra_channels: int = 0,
                   signature: dict[str, tuple[int, ...]] | None = None, cpu_channels_last: bool = True,
                   description: str = "") -> None:
    """Register an architecture (its builder and checkpoint facts); ``config`` becomes ``name.default``.

    Registering an existing name replaces it (so user code can override a built-in). A
    ``config`` dict holds :class:`ModelConfig` fields (its ``name`` and ``arch`` are set here).
    """
    if not name or not isinstance(name, str) or "." in name:
        raise InputError(f"model name must be a non-empty string without '.', got {name!r}")
    _ARCHS[name] = Architecture(name, builder, classifier_key, int(extra_channels), dict(signature or {}),
                                bool(cpu_channels_last), description)
    if config is not None:
        fields = dict(config) if isinstance(config, dict) else config.__dict__.copy()
        fields.update(name=f"{name}.default", arch=name, format="builtin")
        register_pretrained(ModelConfig(**fields), default=True)


def register_pretrained(config: ModelConfig, default: bool = False) -> None:
    """Register a configuration ``arch.tag`` of a registered architecture; the first one (or
    ``default=True``) is what the bare ``arch`` name resolves to."""
    arch, _, tag = config.name.partition(".")
    if not tag or arch != config.arch:
        raise InputError(f"a registered configuration is named ARCH.TAG with ARCH its arch; got "
                         f"name={config.name!r} arch={config.arch!r}")
    get_architecture(arch)
    _CONFIGS[config.name] = config
    if default or arch not in _DEFAULT_TAG:
        _DEFAULT_TAG[arch] = tag


def list_models() -> list[str]:
    """Names of the registered architectures, sorted."""
    return sorted(_ARCHS)


def list_pretrained() -> list[str]:
    """Names (``arch.tag``) of the registered configurations, sorted."""
    return sorted(_CONFIGS)


def get_architecture(name: str) -> Architecture:
    """A registered architecture (InputError naming the known ones otherwise)."""
    try:
        return _ARCHS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; registered: {', '.join(list_models())} "
                         f"(or describe your own network with a model card, see `sml models card`)") from None


def get_model(name: str) -> tuple[Builder, ModelConfig]:
    """Builder and default configuration of a registered architecture."""
    arch = get_architecture(name)
    return arch.builder, get_config(name)


def get_config(name: str) -> ModelConfig:
    """The configuration ``arch.tag``, or the default one of ``arch`` (InputError otherwise)."""
    if name in _CONFIGS:
        return _CONFIGS[name]
    if name in _DEFAULT_TAG:
        return _CONFIGS[f"{name}.{_DEFAULT_TAG[name]}"]
    if name in _ARCHS:  # registered without any configuration: contract defaults
        return ModelConfig(name=f"{name}.default", arch=name)
    raise InputError(f"unknown model {name!r}; registered: {', '.join(list_models() + list_pretrained())}, "
                     f"or a model card (CARD.yaml; `sml models card FILE` writes one)")


def is_registered(name: str) -> bool:
    """True for a registered architecture or ``arch.tag`` configuration."""
    return name in _ARCHS or name in _CONFIGS


def build(arch: str, num_classes: int = 19, **kw: Any) -> nn.Module:
    """A fresh network of a registered architecture, in training mode (for ``sml train``).

    ``num_classes`` is the number of output channels. DeepLabV3+ takes
    ``pretrained_backbone=PATH`` (ImageNet deep-stem ResNet weights, a local file).
    """
    if int(num_classes) < 1:
        raise InputError(f"num_classes must be >= 1, got {num_classes}")
    return get_architecture(arch.split(".")[0]).builder(num_classes=int(num_classes), **kw)


# -- built-ins ----------------------------------------------------------------------------------
# Class statistics published with the reference SML implementation for r101_os8_base_cty.pth
# (its cityscapes_mean.npy / cityscapes_var.npy, train ids 0..18), copied here as numbers.
REFERENCE_MEAN = (
    9.472783088684082, 8.337652206420898, 8.446386337280273, 7.7195143699646, 6.942926406860352,
    6.599900722503662, 7.0457682609558105, 7.17092752456665, 8.439570426940918, 7.494316101074219,
    7.899521350860596, 7.611802101135254, 6.815601825714111, 8.610281944274902, 7.902485370635986,
    8.231664657592773, 7.62032413482666, 7.360630512237549, 6.763288497924805)
REFERENCE_VAR = (
    1.8806684017181396, 1.5584830045700073, 2.396284580230713, 3.6321520805358887, 3.5763161182403564,
    4.16933012008667, 1.349108099937439, 1.676076889038086, 3.1614744663238525, 2.036546230316162,
    4.482692718505859, 2.3304731845855713, 1.7234714031219482, 1.6093931198120117, 4.868859767913818,
    6.726682186126709, 4.301109313964844, 3.0069637298583984, 2.3316891193389893)

ERFNET_RESTORATION_NOTE = (
    "the weights are a local float32 restoration of the published 8-bit quantized ERFNet release "
    "(not a file any URL serves); give its path (--weights erfnet_cityscapes.pth) or put it in a "
    "mirror folder")


def _deeplab_builder(depth: int, output_stride: int) -> Builder:
    def make(num_classes: int = 19, pretrained_backbone: str | None = None, trust: bool = False) -> nn.Module:
        from sml.models.deeplab import DeepLabV3Plus, load_pretrained_trunk

        net = DeepLabV3Plus(num_classes=num_classes, depth=depth, output_stride=output_stride)
        if pretrained_backbone:
            load_pretrained_trunk(net, pretrained_backbone, trust=trust)
        return net
    return make


def _erfnet_builder(num_classes: int = 20) -> nn.Module:
    from sml.models.erfnet import ERFNet

    return ERFNet(num_classes=num_classes)


def _register_builtins() -> None:
    for depth in (50, 101):
        for os_ in (8, 16):
            arch = f"deeplabv3plus_r{depth}_os{os_}"
            register_model(arch, _deeplab_builder(depth, os_), classifier_key="final2.0.weight",
                           description=f"DeepLabV3+ ResNet-{depth} deep stem, output stride {os_}; full resolution input",
                           signature={"layer0.6.weight": (128, 64, 3, 3),
                                      f"layer3.{22 if depth == 101 else 5}.conv1.weight": ()})
            published = depth == 101 and os_ == 8
            register_pretrained(ModelConfig(
                name=f"{arch}.cityscapes", arch=arch, input_size=None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                filename="r101_os8_base_cty.pth" if published else None,
                stats_mean=REFERENCE_MEAN if published else None, stats_var=REFERENCE_VAR if published else None,
                homepage="https://github.com/shjung13/Standardized-max-logits" if published else "",
                licence="see the reference repository" if published else "",
                notes=("SML paper model (Cityscapes val 80.3 mIoU); the reference repository publishes "
                       "r101_os8_base_cty.pth on Google Drive behind a confirmation page with no checksum: "
                       "download it from the homepage and give --weights PATH") if published
                else "Cityscapes preprocessing (ImageNet mean/std, full resolution); no published weights"))
    register_model("erfnet", _erfnet_builder, classifier_key="decoder.output_conv.bias", extra_channels=1,
                   description="ERFNet (Romera et al. 2018); 1024x512 input in [0, 1], channel 19 = void",
                   signature={"encoder.initial_block.conv.weight": ()})
    register_pretrained(ModelConfig(
        name="erfnet.cityscapes", arch="erfnet", filename="erfnet_cityscapes.pth",
        sha256="621544dfdc7d08162ef777144544c9aafe3d2b716e4ab85e8247739caa3579d2",
        input_size=(512, 1024), mean=None, std=None, class_channels=tuple(range(19)),
        homepage="https://github.com/Eromera/erfnet_pytorch", licence="CC BY-NC 4.0 (research use)",
        notes=f"Cityscapes (72.1 mIoU val); {ERFNET_RESTORATION_NOTE}"))


_register_builtins()


def detect_arch(state_dict: dict[str, Any], names: Sequence[str] | None = None) -> str | None:
    """Guess the registered architecture of an unlabelled state dict from its signature keys.

    DeepLabV3+ output stride cannot be read off weights; output stride 8 (the published model's)
    is assumed. Returns None when nothing matches.
    """
    matches = []
    for name in names or list_models():
        sig = _ARCHS[name].signature
        if sig and all(k in state_dict and (not s or tuple(state_dict[k].shape) == s) for k, s in sig.items()):
            matches.append(name)
    if any(m.endswith("_os8") for m in matches):
        matches = [m for m in matches if m.endswith("_os8")]
    # r101 matches r50's signature too (it has a layer3.5); prefer the deeper one when it matches.
    matches.sort(key=lambda m: ("r101" not in m, m))
    return matches[0] if matches else None
