"""DeepLabV3+ with a deep-stem ResNet-50/101 trunk, laid out as the published SML checkpoint.

Plain PyTorch (no torchvision). Module names match ``deeplabv3plus_r101_os8.keys.txt``
(``layer0..4``, ``aspp``, ``bot_aspp``, ``bot_fine``, ``final1``, ``final2``, ``dsn``), so
the published ``r101_os8_base_cty.pth`` loads name for name. Every upsampling is bilinear
with ``align_corners=True``, as in the reference implementation.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sml.errors import CheckpointError, InputError

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# ASPP rates per output stride: the reference doubles (6, 12, 18) at output stride 8.
ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}


def _up(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def _conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3 with the stride and dilation, 1x1 x4) with optional projection."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _stage(cin: int, width: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    """One ResNet stage; a dilated stage keeps stride 1 in ``conv2`` and in ``downsample.0``."""
    s = 1 if dilation > 1 else stride
    downsample = None
    if s != 1 or cin != width * 4:
        downsample = nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride=s, bias=False), nn.BatchNorm2d(width * 4))
    layers = [Bottleneck(cin, width, s, dilation, downsample)]
    layers += [Bottleneck(width * 4, width, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: image pooling, 1x1 and three dilated 3x3 branches (5 x 256)."""

    def __init__(self, cin: int = 2048, dim: int = 256, rates: tuple[int, ...] = (12, 24, 36)) -> None:
        super().__init__()
        self.features = nn.ModuleList([_conv_bn_relu(cin, dim, 1)] +
                                      [_conv_bn_relu(cin, dim, 3, dilation=r) for r in rates])
        self.img_pooling = nn.AdaptiveAvgPool2d(1)
        self.img_conv = _conv_bn_relu(cin, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Concatenation order of the reference: image pooling first, then 1x1, then the rates.
        pooled = _up(self.img_conv(self.img_pooling(x)), x.shape[2:])
        return torch.cat([pooled] + [f(x) for f in self.features], 1)


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ (ResNet-``depth`` deep stem, output stride 8 or 16).

    ``forward`` maps a normalized ``B x 3 x H x W`` batch to ``B x num_classes x H x W`` logits
    in eval mode; in training mode it returns ``(main, aux)`` where ``aux`` is the ``dsn``
    head's output at the ``layer3`` resolution (the reference resizes the labels to it,
    nearest neighbour, and weights that loss 0.4).
    """

    def __init__(self, num_classes: int = 19, depth: int = 101, output_stride: int = 8) -> None:
        super().__init__()
        if depth not in BLOCKS:
            raise InputError(f"DeepLabV3+ trunk depth {depth} is not supported; use 50 or 101")
        if output_stride not in ASPP_RATES:
            raise InputError(f"DeepLabV3+ output stride {output_stride} is not supported; use 8 or 16")
        self.num_classes, self.depth, self.output_stride = num_classes, depth, output_stride
        n1, n2, n3, n4 = BLOCKS[depth]
        self.layer0 = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1))
        d3, d4 = (2, 4) if output_stride == 8 else (1, 2)
        self.layer1 = _stage(128, 64, n1, 1, 1)
        self.layer2 = _stage(256, 128, n2, 2, 1)
        self.layer3 = _stage(512, 256, n3, 2, d3)
        self.layer4 = _stage(1024, 512, n4, 2, d4)
        self.aspp = ASPP(2048, 256, ASPP_RATES[output_stride])
        self.bot_aspp = _conv_bn_relu(1280, 256, 1)
        self.bot_fine = _conv_bn_relu(256, 48, 1)
        self.final1 = nn.Sequential(*_conv_bn_relu(304, 256, 3), *_conv_bn_relu(256, 256, 3))
        self.final2 = nn.Sequential(nn.Conv2d(256, num_classes, 1, bias=True))
        self.dsn = nn.Sequential(
            nn.Conv2d(1024, 512, 3, padding=1, bias=True), nn.BatchNorm2d(512), nn.ReLU(inplace=True),
            nn.Dropout2d(0.1), nn.Conv2d(512, num_classes, 1, bias=True))

    def trunk_modules(self) -> list[str]:
        """Names of the ResNet trunk's sub-modules (what ImageNet pretraining initialises)."""
        return ["layer0", "layer1", "layer2", "layer3", "layer4"]

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[2:]
        x = self.layer0(x)
        low = self.layer1(x)
        x = self.layer3(self.layer2(low))
        aux = x
        x = self.aspp(self.layer4(x))
        up = _up(self.bot_aspp(x), low.shape[2:])
        out = self.final2(self.final1(torch.cat([self.bot_fine(low), up], 1)))
        out = _up(out, size)
        if self.training:
            return out, self.dsn(aux)
        return out


# ImageNet trunks come with either the deep stem as separate modules (conv1/bn1/conv2/...)
# or already as layer0.*; both map onto ``layer0`` here.
_STEM = {"conv1.": "layer0.0.", "bn1.": "layer0.1.", "conv2.": "layer0.3.", "bn2.": "layer0.4.",
         "conv3.": "layer0.6.", "bn3.": "layer0.7."}


def load_pretrained_trunk(net: DeepLabV3Plus, path: str | Path, trust: bool = False) -> None:
    """Load ImageNet weights for the deep-stem ResNet trunk from a local file (never downloaded).

    Accepts the reference's deep-stem layout (``conv1..3``/``bn1..3`` + ``layer1..4``, optional
    ``module.`` prefix and ``fc.*``) or ``layer0..4`` names; every trunk tensor must be present.
    """
    from sml.models.checkpoint import load_checkpoint, unwrap_state_dict

    sd = unwrap_state_dict(load_checkpoint(path, trust=trust))
    mapped: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        for old, new in _STEM.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        if key.split(".")[0] in net.trunk_modules():
            mapped[key] = value
    own = {k: v for k, v in net.state_dict().items() if k.split(".")[0] in net.trunk_modules()}
    missing = sorted(set(own) - set(mapped))
    bad = sorted(k for k in own.keys() & mapped.keys() if tuple(own[k].shape) != tuple(mapped[k].shape))
    if missing or bad:
        from sml.models.checkpoint import describe_mismatch
        raise CheckpointError(
            f"{path} is not a deep-stem ResNet-{net.depth} trunk: "
            + describe_mismatch(missing, [], [(k, tuple(mapped[k].shape), tuple(own[k].shape)) for k in bad])
            + ". Use ImageNet weights of the deep-stem ResNet (three 3x3 stem convolutions) of that depth.")
    net.load_state_dict(mapped, strict=False)
