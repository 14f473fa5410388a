"""ERFNet (Romera et al., IEEE T-ITS 2018) in plain PyTorch, laid out as the published weights.

Built exactly as ``models.md`` describes, so that ``erfnet_cityscapes.pth`` loads with
``strict=True``. The forward pass returns all 20 output channels; the model contract
(:class:`sml.models.SegmentationModel`) keeps channels 0-18 (the Cityscapes train ids).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_BN_EPS = 1e-3  # the published network uses eps 1e-3 in every batch norm


class DownsamplerBlock(nn.Module):
    """3x3 stride-2 conv to ``out - in`` channels, concatenated with a 2x2 max-pool of the input."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, stride=2, padding=1, bias=True)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(out_channels, eps=_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Order matters: convolution first, pooled input second (the weights were trained so).
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class NonBottleneck1d(nn.Module):
    """Factorised residual block: (3x1, 1x3) then dilated (3x1, 1x3), BN, dropout, residual ReLU."""

    def __init__(self, channels: int, dropout: float, dilation: int) -> None:
        super().__init__()
        d = dilation
        self.conv3x1_1 = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0), bias=True)
        self.conv1x3_1 = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1), bias=True)
        self.bn1 = nn.BatchNorm2d(channels, eps=_BN_EPS)
        self.conv3x1_2 = nn.Conv2d(channels, channels, (3, 1), padding=(d, 0), dilation=(d, 1), bias=True)
        self.conv1x3_2 = nn.Conv2d(channels, channels, (1, 3), padding=(0, d), dilation=(1, d), bias=True)
        self.bn2 = nn.BatchNorm2d(channels, eps=_BN_EPS)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv3x1_1(x))
        out = F.relu(self.bn1(self.conv1x3_1(out)))
        out = F.relu(self.conv3x1_2(out))
        out = self.bn2(self.conv1x3_2(out))
        if self.dropout.p != 0:
            out = self.dropout(out)
        return F.relu(out + x)


class UpsamplerBlock(nn.Module):
    """3x3 stride-2 transposed convolution (output padding 1), BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1,
                                       output_padding=1, bias=True)
        self.bn = nn.BatchNorm2d(out_channels, eps=_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Encoder(nn.Module):
    """Encoder at 1/8 resolution; ``output_conv`` serves only encoder-only training."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.initial_block = DownsamplerBlock(3, 16)
        layers: list[nn.Module] = [DownsamplerBlock(16, 64)]
        layers += [NonBottleneck1d(64, 0.03, 1) for _ in range(5)]
        layers.append(DownsamplerBlock(64, 128))
        layers += [NonBottleneck1d(128, 0.3, d) for d in (2, 4, 8, 16, 2, 4, 8, 16)]
        self.layers = nn.ModuleList(layers)
        self.output_conv = nn.Conv2d(128, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor, predict: bool = False) -> torch.Tensor:
        x = self.initial_block(x)
        for layer in self.layers:
            x = layer(x)
        return self.output_conv(x) if predict else x


class Decoder(nn.Module):
    """Decoder back to full resolution; the last transposed conv gives the class logits."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([
            UpsamplerBlock(128, 64), NonBottleneck1d(64, 0, 1), NonBottleneck1d(64, 0, 1),
            UpsamplerBlock(64, 16), NonBottleneck1d(16, 0, 1), NonBottleneck1d(16, 0, 1),
        ])
        self.output_conv = nn.ConvTranspose2d(16, num_classes, 2, stride=2, padding=0, output_padding=0,
                                              bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.output_conv(x)


class ERFNet(nn.Module):
    """ERFNet: ``B x 3 x H x W`` image in [0, 1] (H, W divisible by 8) to ``B x num_classes x H x W`` logits.

    ``num_classes`` counts every output channel (20 for the published Cityscapes weights,
    whose channel 19 is the void class).
    """

    def __init__(self, num_classes: int = 20) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encoder = Encoder(num_classes)
        self.decoder = Decoder(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
