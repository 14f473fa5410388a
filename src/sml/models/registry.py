"""Registry of architectures: name -> builder + the contract's defaults (preprocessing, classes)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from torch import nn

from sml.errors import InputError
from sml.models.contract import CITYSCAPES_CLASSES, IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class ModelConfig:
    """What a built network needs to be used correctly (see :class:`SegmentationModel`).

    ``extra_channels``: output channels after the classes that a checkpoint may carry and that
    are never classes (ERFNet's void channel 19). ``classifier_key``: the state-dict entry whose
    first dimension is the number of output channels (to read the class count off a checkpoint).
    ``signature``: a state-dict key that identifies the architecture in an unlabelled checkpoint.
    """

    input_size: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    class_names: tuple[str, ...] = CITYSCAPES_CLASSES
    extra_channels: int = 0
    classifier_key: str | None = None
    description: str = ""
    signature: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: run in channels-last layout on the CPU by default (faster for plain convolutional networks)
    cpu_channels_last: bool = True


Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, tuple[Builder, ModelConfig]] = {}


def register_model(name: str, builder: Builder, config: ModelConfig | dict[str, Any] | None = None) -> None:
    """Register an architecture: ``builder(num_classes=..., **kw) -> nn.Module`` and its contract defaults.

    Registering an existing name replaces it (so user code can override a built-in).
    """
    if not name or not isinstance(name, str):
        raise InputError(f"model name must be a non-empty string, got {name!r}")
    if isinstance(config, dict):
        config = ModelConfig(**config)
    _REGISTRY[name] = (builder, config or ModelConfig())


def list_models() -> list[str]:
    """Names of the registered architectures, sorted."""
    return sorted(_REGISTRY)


def get_model(name: str) -> tuple[Builder, ModelConfig]:
    """Builder and config of a registered architecture (InputError naming the known ones otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; registered: {', '.join(list_models())} "
                         f"(or wrap your own with sml.models.wrap)") from None


def build(arch: str, num_classes: int = 19, **kw: Any) -> nn.Module:
    """A fresh network of a registered architecture, in training mode (for ``sml train``).

    ``num_classes`` is the number of output channels. DeepLabV3+ takes
    ``pretrained_backbone=PATH`` (ImageNet deep-stem ResNet weights, a local file).
    """
    if int(num_classes) < 1:
        raise InputError(f"num_classes must be >= 1, got {num_classes}")
    builder, _ = get_model(arch)
    return builder(num_classes=int(num_classes), **kw)


# -- built-ins ----------------------------------------------------------------------------------
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
            register_model(f"deeplabv3plus_r{depth}_os{os_}", _deeplab_builder(depth, os_), ModelConfig(
                input_size=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, classifier_key="final2.0.weight",
                description=f"DeepLabV3+ ResNet-{depth} deep stem, output stride {os_}; full resolution input",
                signature={"layer0.6.weight": (128, 64, 3, 3), f"layer3.{22 if depth == 101 else 5}.conv1.weight": ()}))
    register_model("erfnet", _erfnet_builder, ModelConfig(
        input_size=(512, 1024), mean=None, std=None, extra_channels=1, classifier_key="decoder.output_conv.bias",
        description="ERFNet (Romera et al. 2018); 1024x512 input in [0, 1], channel 19 = void",
        signature={"encoder.initial_block.conv.weight": ()}))


_register_builtins()


def detect_arch(state_dict: dict[str, Any], names: Sequence[str] | None = None) -> str | None:
    """Guess the registered architecture of an unlabelled state dict from its signature keys.

    DeepLabV3+ output stride cannot be read off weights; output stride 8 (the published model's)
    is assumed. Returns None when nothing matches.
    """
    matches = []
    for name in names or list_models():
        sig = _REGISTRY[name][1].signature
        if sig and all(k in state_dict and (not s or tuple(state_dict[k].shape) == s) for k, s in sig.items()):
            matches.append(name)
    if any(m.endswith("_os8") for m in matches):
        matches = [m for m in matches if m.endswith("_os8")]
    # r101 matches r50's signature too (it has a layer3.5); prefer the deeper one when it matches.
    matches.sort(key=lambda m: ("r101" not in m, m))
    return matches[0] if matches else None
