"""A small segmentation network that trains in about a minute on two CPU cores (the demo's model).

Three stride-2 convolutions to 1/8, dilated residual blocks for context, a
decoder that adds back 1/4-resolution detail, and (in training mode) an
auxiliary head on the 1/8 features, so it exercises the same training path as
DeepLabV3+ (``(main, aux)`` output in training, logits alone in eval).
Input: RGB normalized with ImageNet mean/std.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _cbr(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, c: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_cbr(c, c, 1, dilation), nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation,
                                                                      bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class DemoNet(nn.Module):
    """``B x 3 x H x W`` normalized images -> ``B x num_classes x H x W`` logits (+ aux logits in training).

    The decoder works at 1/4 resolution (like DeepLabV3+), which keeps the
    network cheap enough to train on two CPU cores in about a minute.
    """

    def __init__(self, num_classes: int = 19, width: int = 16, dilations: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(_cbr(3, w, 2), _cbr(w, 2 * w, 2))
        self.down = _cbr(2 * w, 4 * w, 2)
        self.context = nn.Sequential(*[_Residual(4 * w, d) for d in dilations])
        self.fuse = _cbr(4 * w + 2 * w, 2 * w)
        self.classifier = nn.Conv2d(2 * w, num_classes, 1)
        self.aux = nn.Conv2d(4 * w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[-2:]
        fine = self.stem(x)
        deep = self.context(self.down(fine))
        up = F.interpolate(deep, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        out = self.classifier(self.fuse(torch.cat([up, fine], 1)))
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        if self.training:
            return out, self.aux(deep)
        return out


def demo_net(num_classes: int = 19, **kw: object) -> DemoNet:
    """The demo's network (width 16, four dilated context blocks)."""
    return DemoNet(num_classes, width=16)


def tiny_net(num_classes: int = 19, **kw: object) -> DemoNet:
    """A very small variant for tests and smoke runs (width 4, one context block)."""
    return DemoNet(num_classes, width=4, dilations=(2,))


def register() -> None:
    """Register ``demo_net`` in ``sml.models`` (ImageNet normalization, Cityscapes classes)."""
    from sml.models import ModelConfig, register_model
    from sml.models.config import IMAGENET_MEAN, IMAGENET_STD

    register_model("demo_net", demo_net, ModelConfig(name="demo_net", mean=IMAGENET_MEAN, std=IMAGENET_STD),
                   classifier_key="classifier.weight",
                   description="sml demo's small network (trained by `sml demo` on synthetic streets)")
