"""SML post-processing: iterative boundary suppression (spec 3) and dilated smoothing (spec 4).

Both work on a score map ``B x H x W`` (or ``H x W``) and are fully vectorised
over pixels and classes; the only Python loops run over the suppression
iterations and over bands of rows (to bound temporary memory to a fraction of
one map). Results equal the literal definitions of the spec up to float
rounding of the sums; every structural decision (boundary, suppressed region,
"no unsuppressed neighbour") is computed on integers and is exact.
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import Literal

import torch

from sml.errors import InputError
from sml.scores.functional import rows_per_band

__all__ = [
    "BORDERS",
    "boundary_mask",
    "suppression_radii",
    "boundary_suppression",
    "gaussian_kernel1d",
    "dilated_smoothing",
    "check_suppression_settings",
    "check_smoothing_settings",
]

Border = Literal["reference", "ignore"]
BORDERS = ("reference", "ignore")


# ----------------------------------------------------------------------------- validation

def _int_setting(name: str, value: object, minimum: int) -> int:
    integral = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    value = int(value)  # type: ignore[call-overload]
    if value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_suppression_settings(boundary_width: int, boundary_iterations: int, border: str) -> tuple[int, int, str]:
    """Validate suppression settings; return them normalised (raises :class:`InputError`)."""
    width = _int_setting("boundary_width", boundary_width, 0)
    iterations = _int_setting("boundary_iterations", boundary_iterations, 1)
    if width % iterations:
        raise InputError(
            f"boundary_width ({width}) must be a multiple of boundary_iterations ({iterations}): the "
            f"suppressed band shrinks by boundary_width // boundary_iterations each iteration "
            f"(e.g. boundary_width=4, boundary_iterations=4)")
    if border not in BORDERS:
        raise InputError(f"border must be one of {BORDERS}, got {border!r}")
    return width, iterations, border


def check_smoothing_settings(kernel_size: int, dilation: int, sigma: float) -> tuple[int, int, float]:
    """Validate smoothing settings; return them normalised (raises :class:`InputError`)."""
    k = _int_setting("smoothing_kernel", kernel_size, 1)
    if k % 2 == 0:
        raise InputError(f"smoothing_kernel must be odd (the kernel is centred), got {k}")
    d = _int_setting("smoothing_dilation", dilation, 1)
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise InputError(f"smoothing_sigma must be a positive number, got {sigma!r}") from None
    if not (math.isfinite(s) and s > 0):
        raise InputError(f"smoothing_sigma must be a positive finite number, got {sigma!r}")
    return k, d, s


def _as_maps(score: torch.Tensor, name: str = "score") -> tuple[torch.Tensor, bool]:
    if not isinstance(score, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(score).__name__}")
    if score.dim() == 2:
        return score.unsqueeze(0), True
    if score.dim() != 3:
        raise InputError(f"{name} must have shape B x H x W or H x W, got {tuple(score.shape)}")
    if min(score.shape) == 0:
        raise InputError(f"{name} is empty (shape {tuple(score.shape)})")
    return score, False


def _as_pred(pred: torch.Tensor, shape: torch.Size, device: torch.device) -> torch.Tensor:
    if not isinstance(pred, torch.Tensor):
        raise InputError(f"pred must be a torch.Tensor of class indices, got {type(pred).__name__}")
    if pred.dim() == 2:
        pred = pred.unsqueeze(0)
    if pred.shape != shape:
        raise InputError(f"pred has shape {tuple(pred.shape)} but the score map has shape {tuple(shape)}")
    if pred.is_floating_point() or pred.is_complex() or pred.dtype == torch.bool:
        raise InputError(f"pred must hold integer class indices, got dtype {pred.dtype}")
    if pred.device != device:
        raise InputError(f"pred is on {pred.device} but the score map is on {device}")
    if pred.dtype != torch.uint8 and bool((pred < 0).any()):
        raise InputError("pred holds negative class indices; class indices start at 0")
    return pred


# ----------------------------------------------------------------------------- boundaries

def _shift_combine_(out: torch.Tensor, src: torch.Tensor, op, vertical: bool, horizontal: bool) -> None:
    """``out = op(out, src shifted by one pixel)`` for the 4-neighbours selected (in-image only)."""
    if vertical:
        op(out[:, 1:], src[:, :-1], out=out[:, 1:])
        op(out[:, :-1], src[:, 1:], out=out[:, :-1])
    if horizontal:
        op(out[:, :, 1:], src[:, :, :-1], out=out[:, :, 1:])
        op(out[:, :, :-1], src[:, :, 1:], out=out[:, :, :-1])


def boundary_mask(pred: torch.Tensor, border: Border = "reference") -> torch.Tensor:
    """Boundary of a prediction map: ``dilate(pred, cross) != erode(pred, 3x3 square)`` (spec 3.1).

    ``border="reference"`` erodes with the image padded by the constant 1 (the
    published code's behaviour: outer pixels predicted >= 2 are boundary);
    ``border="ignore"`` treats outside pixels as absent. Returns a bool map.
    """
    if border not in BORDERS:
        raise InputError(f"border must be one of {BORDERS}, got {border!r}")
    squeeze = pred.dim() == 2
    p = pred.unsqueeze(0) if squeeze else pred
    if p.dim() != 3:
        raise InputError(f"pred must have shape B x H x W or H x W, got {tuple(pred.shape)}")
    out = _boundary(p, border)
    return out[0] if squeeze else out


def _boundary(p: torch.Tensor, border: str) -> torch.Tensor:
    # Square erosion is separable: rows then columns, each with the border constant.
    ero_h = p.clone()
    _shift_combine_(ero_h, p, torch.minimum, False, True)
    ero = ero_h.clone()
    _shift_combine_(ero, ero_h, torch.minimum, True, False)
    del ero_h
    if border == "reference":
        one = torch.ones((), dtype=p.dtype, device=p.device)
        for edge in (ero[:, 0], ero[:, -1], ero[:, :, 0], ero[:, :, -1]):
            torch.minimum(edge, one, out=edge)
    # Dilation: zero padding never wins a max over non-negative labels, so only
    # in-image neighbours matter.
    dil = p.clone()
    _shift_combine_(dil, p, torch.maximum, True, True)
    return dil != ero


def suppression_radii(boundary_width: int = 4, boundary_iterations: int = 4) -> list[int]:
    """Diamond radius of the suppressed band per iteration (spec 3.2); defaults give ``[3, 2, 1, 0]``."""
    width, iterations, _ = check_suppression_settings(boundary_width, boundary_iterations, "reference")
    step = width // iterations
    return [0 if (width == 0 or i == iterations - 1) else width - step * i - 1 for i in range(iterations)]


def _cover_levels(boundary: torch.Tensor, max_radius: int) -> torch.Tensor:
    """uint8 map: how many of the diamond dilations of radius 0..max_radius contain each pixel.

    The dilations are nested, so the pixel lies in the radius-``r`` region iff
    its level is ``>= max_radius + 1 - r``. A diamond of radius ``r`` is ``r``
    successive cross dilations (paths stay inside the rectangular image).
    """
    levels = boundary.view(torch.uint8).clone()  # same-dtype ops below: no slow casts
    cur = boundary
    for _ in range(max_radius):
        nxt = cur.clone()
        _shift_combine_(nxt, cur, torch.logical_or, True, True)
        cur = nxt
        levels.add_(cur.view(torch.uint8))
    return levels


class _SuppressionWorkspace:
    """Buffers for one band, reused across bands and iterations (no per-step allocation)."""

    def __init__(self, b: int, rows: int, w: int, dtype: torch.dtype, device: torch.device) -> None:
        # channel 0: S * keep, channel 1: keep; one halo row/column on every side
        self.pad = torch.empty((2, b, rows + 2, w + 2), dtype=dtype, device=device)
        self.hsum = torch.empty((2, b, rows + 2, w), dtype=dtype, device=device)
        self.vsum = torch.empty((2, b, rows, w), dtype=dtype, device=device)
        self.upd = torch.empty((b, rows, w), dtype=dtype, device=device)
        self.saved = torch.empty((b, w), dtype=dtype, device=device)


def _skip_bands(device: torch.device) -> bool:
    """Whether suppression reads the rows' levels to the host to skip empty bands (the CPU only)."""
    return device.type == "cpu"


def _suppress_iteration_(score: torch.Tensor, levels: torch.Tensor, row_levels: list[int] | None, threshold: int,
                         rows: int, ws: _SuppressionWorkspace) -> None:
    """One suppression step in place: pixels with ``levels >= threshold`` take the mean of their
    unsuppressed 3x3 neighbours (replicate padding), all read from the *previous* values.

    Bands of rows are updated in place top to bottom; the row above a band has
    already been updated, so its previous values are kept in ``ws.saved``.
    ``row_levels`` holds each row's highest level, to skip bands with nothing
    suppressed (None: process every band). Only same-dtype ops, written into the workspace.
    """
    b, h, w = score.shape
    have_saved = False
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        n = r1 - r0
        if row_levels is not None and max(row_levels[r0:r1]) < threshold:  # nothing suppressed in this band
            have_saved = False
            continue
        lo, hi = max(r0 - 1, 0), min(r1 + 1, h)
        top = 1 if r0 == 0 else 0  # buffer row of image row lo
        pad = ws.pad[:, :, : n + 2]
        inner = pad[:, :, top: top + hi - lo, 1:-1]
        torch.lt(levels[:, lo:hi], threshold, out=inner[1])  # keep = 1.0 / 0.0
        torch.mul(score[:, lo:hi], inner[1], out=inner[0])
        if have_saved and r0 > 0:
            torch.mul(ws.saved, inner[1][:, 0], out=inner[0][:, 0])
        # replicate padding of both S * keep and keep
        if r0 == 0:
            pad[:, :, 0, 1:-1] = pad[:, :, 1, 1:-1]
        if r1 == h:
            pad[:, :, n + 1, 1:-1] = pad[:, :, n, 1:-1]
        pad[..., 0] = pad[..., 1]
        pad[..., -1] = pad[..., -2]
        hs = ws.hsum[:, :, : n + 2]
        torch.add(pad[..., :-2], pad[..., 1:-1], out=hs)
        hs.add_(pad[..., 2:])
        vs = ws.vsum[:, :, :n]
        torch.add(hs[:, :, :-2], hs[:, :, 1:-1], out=vs)
        vs.add_(hs[:, :, 2:])
        sums, counts = vs[0], vs[1]
        # update iff suppressed with an unsuppressed neighbour: counts - 9 * keep > 0
        upd = ws.upd[:, :n]
        torch.sub(counts, pad[1, :, 1: n + 1, 1:-1], alpha=9, out=upd)
        torch.gt(upd, 0.5, out=upd)
        sums.div_(counts.clamp_(min=1))
        if r1 < h:
            ws.saved.copy_(score[:, r1 - 1])
            have_saved = True
        # lerp with weight 0 or 1 is an exact selection (ATen: w < 0.5 ? a + w*(b-a) : b - (b-a)*(1-w))
        score[:, r0:r1].lerp_(sums, upd)


def boundary_suppression(score: torch.Tensor, pred: torch.Tensor, boundary_width: int = 4,
                         boundary_iterations: int = 4, border: Border = "reference",
                         inplace: bool = False) -> torch.Tensor:
    """Iterative boundary suppression of a score map (spec 3) given the prediction ``pred``.

    ``score``: float ``B x H x W`` (or ``H x W``); ``pred``: integer class map of
    the same shape. Each iteration replaces the pixels within the (shrinking)
    diamond-dilated prediction boundary by the mean of their non-suppressed
    3x3 neighbours. Returns a new map unless ``inplace``.
    """
    width, iterations, border = check_suppression_settings(boundary_width, boundary_iterations, border)
    maps, squeeze = _as_maps(score)
    if not maps.is_floating_point():
        raise InputError(f"score must be a floating-point map, got dtype {maps.dtype}")
    p = _as_pred(pred, maps.shape, maps.device)
    out = maps if inplace else maps.clone()
    radii = suppression_radii(width, iterations)
    b, h, w = out.shape
    # band of ~2^18 pixels: the workspace (~7 band-sized float planes) stays under one map
    rows = min(h, rows_per_band(b * w))
    levels = _cover_levels(boundary_mask(p, border), max(radii))
    ws = _SuppressionWorkspace(b, rows, w, out.dtype, out.device)
    # Skipping bands with nothing to suppress needs each row's level on the host: free on the CPU,
    # a sync on other devices, where every band is simply processed.
    row_levels = levels.amax(dim=(0, 2)).tolist() if _skip_bands(out.device) else None
    for r in radii:
        _suppress_iteration_(out, levels, row_levels, max(radii) + 1 - r, rows, ws)
    return out[0] if squeeze else out


# ----------------------------------------------------------------------------- smoothing

def gaussian_kernel1d(kernel_size: int = 7, sigma: float = 1.0) -> torch.Tensor:
    """Normalised 1-D Gaussian (float64); its outer product is the spec's normalised 2-D kernel."""
    k, _, s = check_smoothing_settings(kernel_size, 1, sigma)
    x = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    g = torch.exp(-x * x / (2 * s * s))
    return g / g.sum()


@functools.lru_cache(maxsize=16)
def _gaussian_weights(kernel_size: int, sigma: float) -> tuple[float, ...]:
    return tuple(gaussian_kernel1d(kernel_size, sigma).tolist())


def _taps(src: torch.Tensor, n: int, dim: int, weights: list[float], dilation: int,
          out: torch.Tensor) -> torch.Tensor:
    """``out = sum_k w_k * src[k*dilation : k*dilation + n]`` along ``dim``."""
    torch.mul(src.narrow(dim, 0, n), weights[0], out=out)
    for k in range(1, len(weights)):
        out.add_(src.narrow(dim, k * dilation, n), alpha=weights[k])
    return out


def dilated_smoothing(score: torch.Tensor, kernel_size: int = 7, dilation: int = 6, sigma: float = 1.0,
                      inplace: bool = False) -> torch.Tensor:
    """Dilated Gaussian smoothing (spec 4): ``k x k`` Gaussian, dilation ``d``, replicate padding
    ``d * (k - 1) / 2``, same-size output. Applied as two separable 1-D passes."""
    k, d, s = check_smoothing_settings(kernel_size, dilation, sigma)
    maps, squeeze = _as_maps(score)
    if not maps.is_floating_point():
        raise InputError(f"score must be a floating-point map, got dtype {maps.dtype}")
    out = maps if inplace else maps.clone()
    if k == 1:
        return out[0] if squeeze else out
    _smooth_(out, list(_gaussian_weights(k, s)), d)
    return out[0] if squeeze else out


def _smooth_(out: torch.Tensor, weights: list[float], d: int) -> None:
    """Separable dilated convolution with replicate padding, in place on ``B x H x W``."""
    pad = d * (len(weights) - 1) // 2
    b, h, w = out.shape
    dt, dev = out.dtype, out.device
    # Horizontal pass: rows are independent, so each band is overwritten in place
    # from a replicate-padded copy.
    rows = min(h, rows_per_band(b * (w + 2 * pad)))
    wide = torch.empty((b, rows, w + 2 * pad), dtype=dt, device=dev)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        src = wide[:, : r1 - r0]
        band = out[:, r0:r1]
        src[:, :, pad: pad + w] = band
        src[:, :, :pad] = band[:, :, :1]
        src[:, :, pad + w:] = band[:, :, -1:]
        _taps(src, w, 2, weights, d, out=band)
    # Vertical pass: a band reads `pad` rows above it that are already overwritten,
    # so their previous values are carried over from the band before in `tall`.
    rows = min(h, rows_per_band(b * w))
    tall = torch.empty((b, rows + 2 * pad, w), dtype=dt, device=dev)
    above = torch.empty((b, pad, w), dtype=dt, device=dev)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        n = r1 - r0
        src = tall[:, : n + 2 * pad]
        if r0 == 0:
            src[:, :pad] = out[:, :1]
        else:
            src[:, :pad] = above
        hi = min(h, r1 + pad)
        src[:, pad: pad + hi - r0] = out[:, r0:hi]
        if hi - r0 < n + pad:
            src[:, pad + hi - r0:] = out[:, h - 1: h]
        if r1 < h:
            above.copy_(src[:, n: n + pad])  # previous values of rows r1 - pad .. r1 - 1
        _taps(src, n, 1, weights, d, out=out[:, r0:r1])
