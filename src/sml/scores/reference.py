"""Literal transcription of the published SML code path, kept as an oracle.

Used by the tests and ``benchmarks/bench_postprocess.py``: it follows the
structure of the reference implementation (per-class standardization loop,
unfold-based morphology, per-iteration padded 3x3 convolutions, a 2-D dilated
Gaussian convolution) with the semantics of the spec. Slow and memory-hungry
by design; never used by the library itself.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from sml.scores.postprocess import suppression_radii

__all__ = ["literal_sml", "literal_boundary", "literal_suppression", "literal_smoothing", "gaussian_kernel2d"]

_CROSS = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])


def _morph(x: torch.Tensor, kernel: torch.Tensor, pad_value: float, op: str) -> torch.Tensor:
    """Flat grey-scale dilation/erosion of ``B x 1 x H x W`` with a 3x3 structuring element via unfold."""
    patches = F.pad(x, (1, 1, 1, 1), mode="constant", value=pad_value).unfold(2, 3, 1).unfold(3, 3, 1)
    off = torch.where(kernel > 0, 0.0, -math.inf if op == "max" else math.inf).to(x)
    if op == "max":
        return (patches + off).amax(dim=(-1, -2))
    return (patches + off).amin(dim=(-1, -2))


def literal_boundary(pred: torch.Tensor, border: str = "reference") -> torch.Tensor:
    """``dilate(pred, cross) != erode(pred, square)`` as float ``B x 1 x H x W``."""
    p = pred[:, None].to(torch.float32)
    dil = _morph(p, _CROSS, 0.0, "max")
    ero = _morph(p, torch.ones(3, 3), 1.0 if border == "reference" else math.inf, "min")
    return (dil != ero).to(torch.float32)


def literal_suppression(score: torch.Tensor, pred: torch.Tensor, boundary_width: int = 4,
                        boundary_iterations: int = 4, border: str = "reference") -> torch.Tensor:
    """Per-iteration dense form of spec 3 on ``B x H x W`` maps."""
    boundaries = literal_boundary(pred, border)
    ones = torch.ones(1, 1, 3, 3, dtype=score.dtype)
    out = score[:, None]
    for r in suppression_radii(boundary_width, boundary_iterations):
        expanded = boundaries
        for _ in range(r):
            expanded = _morph(expanded, _CROSS, 0.0, "max")
        mask = (expanded == 0).to(score.dtype)
        y = F.conv2d(F.pad(out * mask, (1, 1, 1, 1), mode="replicate"), ones)
        n = F.conv2d(F.pad(mask, (1, 1, 1, 1), mode="replicate"), ones).long()
        avg = torch.where(n == 0, out, y / n)
        out = torch.where(mask == 0, avg, out)
    return out[:, 0]


def gaussian_kernel2d(kernel_size: int = 7, sigma: float = 1.0) -> np.ndarray:
    """The reference's normalised 2-D Gaussian (``np.fromfunction`` form), float64."""
    c = (kernel_size - 1) / 2
    k = np.fromfunction(lambda x, y: (1 / (2 * math.pi * sigma ** 2))
                        * math.e ** (-((x - c) ** 2 + (y - c) ** 2) / (2 * sigma ** 2)),
                        (kernel_size, kernel_size))
    return k / k.sum()


def literal_smoothing(score: torch.Tensor, kernel_size: int = 7, dilation: int = 6,
                      sigma: float = 1.0) -> torch.Tensor:
    """2-D dilated Gaussian convolution after replicate padding ``dilation * (k - 1) / 2``."""
    pad = dilation * (kernel_size - 1) // 2
    weight = torch.as_tensor(gaussian_kernel2d(kernel_size, sigma), dtype=score.dtype)[None, None]
    x = score[:, None]
    if pad:
        # replicate padding by clamped indices (F.pad refuses pads larger than the map)
        h, w = x.shape[-2:]
        rows = torch.arange(-pad, h + pad).clamp(0, h - 1)
        cols = torch.arange(-pad, w + pad).clamp(0, w - 1)
        x = x[:, :, rows][:, :, :, cols]
    return F.conv2d(x, weight, dilation=dilation)[:, 0]


def literal_sml(logits: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, boundary_width: int = 4,
                boundary_iterations: int = 4, smoothing_kernel: int = 7, smoothing_dilation: int = 6,
                smoothing_sigma: float = 1.0, border: str = "reference", suppression: bool = True,
                smoothing: bool = True) -> torch.Tensor:
    """The whole SML score, reference style (per-class ``torch.where`` loop), higher = more anomalous."""
    values, pred = torch.max(logits.float(), dim=1)
    out = values.clone()
    for c in range(logits.shape[1]):
        out = torch.where(pred == c, (values - float(mean[c])) / float(std[c]), out)
    if suppression:
        out = literal_suppression(out, pred, boundary_width, boundary_iterations, border)
    if smoothing:
        out = literal_smoothing(out, smoothing_kernel, smoothing_dilation, smoothing_sigma)
    return -out
