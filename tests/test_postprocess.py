"""Boundary suppression and dilated smoothing vs a literal pixel-loop reading of spec sections 3-4."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from sml.errors import InputError
from sml.scores.postprocess import (
    boundary_mask,
    boundary_suppression,
    dilated_smoothing,
    gaussian_kernel1d,
    suppression_radii,
)
from sml.scores.reference import literal_boundary, literal_smoothing, literal_suppression


# ----------------------------------------------------------------------------- literal spec (float64, loops)

def lit_boundary(pred: np.ndarray, border: str = "reference") -> np.ndarray:
    h, w = pred.shape
    out = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            cross = [pred[y, x]] + [pred[y + dy, x + dx] for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
                                    if 0 <= y + dy < h and 0 <= x + dx < w]
            square = []
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        square.append(pred[y + dy, x + dx])
                    elif border == "reference":
                        square.append(1)
            out[y, x] = max(cross) != min(square)
    return out


def lit_radii(width: int, iterations: int) -> list[int]:
    step = width // iterations
    return [0 if (i == iterations - 1 or width == 0) else width - step * i - 1 for i in range(iterations)]


def lit_suppression(s: np.ndarray, pred: np.ndarray, width: int = 4, iterations: int = 4,
                    border: str = "reference") -> np.ndarray:
    h, w = s.shape
    bnd = lit_boundary(pred, border)
    s = s.astype(np.float64).copy()
    pts = np.argwhere(bnd)
    for r in lit_radii(width, iterations):
        region = np.zeros((h, w), bool)
        for y in range(h):
            for x in range(w):
                region[y, x] = any(abs(y - by) + abs(x - bx) <= r for by, bx in pts)
        new = s.copy()
        for y in range(h):
            for x in range(w):
                if not region[y, x]:
                    continue
                tot, cnt = 0.0, 0
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        yy, xx = min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)  # replicate
                        if not region[yy, xx]:
                            tot += s[yy, xx]
                            cnt += 1
                if cnt:
                    new[y, x] = tot / cnt
        s = new
    return s


def lit_smoothing(s: np.ndarray, k: int = 7, d: int = 6, sigma: float = 1.0) -> np.ndarray:
    h, w = s.shape
    c = (k - 1) / 2
    g = np.array([[math.exp(-((i - c) ** 2 + (j - c) ** 2) / (2 * sigma ** 2)) for j in range(k)] for i in range(k)])
    g /= g.sum()
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            acc = 0.0
            for i in range(k):
                for j in range(k):
                    yy = min(max(y + d * (i - k // 2), 0), h - 1)
                    xx = min(max(x + d * (j - k // 2), 0), w - 1)
                    acc += g[i, j] * s[yy, xx]
            out[y, x] = acc
    return out


# ----------------------------------------------------------------------------- structured maps

def structured_maps(h: int, w: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    maps = {}
    maps["random"] = rng.integers(0, 4, (h, w))
    blocks = np.zeros((h, w), int)
    blocks[: h // 2, : w // 3] = 2
    blocks[h // 3:, w // 2:] = 1
    blocks[h // 2:, : w // 4] = 5
    maps["blocks"] = blocks
    lines = np.full((h, w), 3)
    lines[h // 2, :] = 0
    lines[:, w // 3] = 7
    lines[1::4, -1] = 1
    maps["thin_lines"] = lines
    iso = np.zeros((h, w), int)
    iso[rng.integers(0, h, 5), rng.integers(0, w, 5)] = 4
    iso[0, 0] = 9
    iso[h - 1, w - 1] = 1
    maps["isolated"] = iso
    edges = np.full((h, w), 1)
    edges[0, :] = 0
    edges[-1, :] = 2
    edges[:, 0] = 3
    maps["border_classes"] = edges
    for c in (0, 1, 2):
        maps[f"constant_{c}"] = np.full((h, w), c)
    return maps


SIZES = [(1, 1), (1, 7), (6, 1), (2, 2), (9, 13), (16, 11)]


@pytest.mark.parametrize("border", ["reference", "ignore"])
@pytest.mark.parametrize("size", SIZES)
def test_boundary_mask_matches_literal(size, border):
    rng = np.random.default_rng(hash(size) % 1000)
    for name, p in structured_maps(*size, rng).items():
        got = boundary_mask(torch.as_tensor(p), border).numpy()
        np.testing.assert_array_equal(got, lit_boundary(p, border), err_msg=f"{name} {size}")
        got8 = boundary_mask(torch.as_tensor(p, dtype=torch.uint8)[None], border)[0].numpy()
        np.testing.assert_array_equal(got8, got)


def test_reference_border_rule():
    # outer pixels predicted 0 or 1 are not boundaries, 2+ are (constant-1 erosion padding)
    for c, expect_edge in ((0, False), (1, False), (2, True), (5, True)):
        m = boundary_mask(torch.full((5, 6), c), "reference")
        assert bool(m[0, 0]) == expect_edge and bool(m[0, 3]) == expect_edge
        assert not bool(m[2, 2])
        assert not bool(boundary_mask(torch.full((5, 6), c), "ignore").any())


def test_radii_schedule():
    assert suppression_radii(4, 4) == [3, 2, 1, 0]
    for width, it in [(4, 2), (4, 1), (0, 3), (6, 3), (8, 4), (1, 1), (9, 3), (12, 4)]:
        assert suppression_radii(width, it) == lit_radii(width, it)
    for width, it in [(4, 3), (2, 4), (-1, 1), (4, 0), (4.5, 1), (True, 1)]:
        with pytest.raises(InputError):
            suppression_radii(width, it)


SUPPRESSION_SETTINGS = [(4, 4, "reference"), (4, 4, "ignore"), (4, 2, "reference"), (0, 4, "reference"),
                        (6, 3, "ignore"), (1, 1, "reference")]


@pytest.mark.parametrize("width,iterations,border", SUPPRESSION_SETTINGS)
def test_suppression_matches_literal(width, iterations, border):
    rng = np.random.default_rng(width * 10 + iterations)
    for size in [(1, 5), (7, 1), (9, 13), (14, 10)]:
        for name, p in structured_maps(*size, rng).items():
            s = rng.normal(size=size)
            want = lit_suppression(s, p, width, iterations, border)
            got64 = boundary_suppression(torch.as_tensor(s), torch.as_tensor(p), width, iterations, border)
            np.testing.assert_allclose(got64.numpy(), want, rtol=1e-12, atol=1e-12, err_msg=f"{name} {size}")
            got32 = boundary_suppression(torch.as_tensor(s, dtype=torch.float32), torch.as_tensor(p),
                                         width, iterations, border)
            np.testing.assert_allclose(got32.numpy(), want, rtol=1e-5, atol=1e-5, err_msg=f"{name} {size}")


def test_suppression_batch_and_bands(monkeypatch):
    """Batch > 1 and many small row bands (the Jacobi halo logic) give the per-image literal result."""
    import sml.scores.functional as fn

    rng = np.random.default_rng(3)
    preds = np.stack([structured_maps(23, 9, rng)[k] for k in ("random", "blocks", "thin_lines")])
    s = rng.normal(size=preds.shape)
    want = np.stack([lit_suppression(s[i], preds[i]) for i in range(3)])
    full = boundary_suppression(torch.as_tensor(s), torch.as_tensor(preds))
    np.testing.assert_allclose(full.numpy(), want, rtol=1e-12, atol=1e-12)
    for target in (1, 27, 60, 100):  # bands of 1, 1, 2 and 3-4 rows
        monkeypatch.setattr(fn, "_BAND_ELEMENTS", target)
        got = boundary_suppression(torch.as_tensor(s), torch.as_tensor(preds))
        np.testing.assert_array_equal(got.numpy(), full.numpy())
        sm = dilated_smoothing(torch.as_tensor(s))
        np.testing.assert_allclose(sm.numpy(), literal_smoothing(torch.as_tensor(s)).numpy(), rtol=1e-12, atol=1e-12)


SMOOTHING_SETTINGS = [(7, 6, 1.0), (3, 2, 0.5), (5, 1, 2.0), (1, 4, 1.0), (9, 3, 1.5)]


@pytest.mark.parametrize("k,d,sigma", SMOOTHING_SETTINGS)
def test_smoothing_matches_literal(k, d, sigma):
    rng = np.random.default_rng(k * d)
    for size in [(1, 1), (3, 40), (11, 7), (12, 19)]:
        s = rng.normal(size=size)
        want = lit_smoothing(s, k, d, sigma)
        got = dilated_smoothing(torch.as_tensor(s), k, d, sigma)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
        got32 = dilated_smoothing(torch.as_tensor(s[None], dtype=torch.float32), k, d, sigma)[0]
        np.testing.assert_allclose(got32.numpy(), want, rtol=1e-5, atol=1e-5)


def test_separable_equals_2d_kernel():
    """The separable form equals the reference's 2-D 7x7 convolution within float32 tolerance."""
    g = gaussian_kernel1d(7, 1.0).numpy()
    from sml.scores.reference import gaussian_kernel2d

    np.testing.assert_allclose(np.outer(g, g), gaussian_kernel2d(7, 1.0), rtol=1e-14, atol=1e-16)
    x = torch.randn(2, 70, 90)
    np.testing.assert_allclose(dilated_smoothing(x).numpy(), literal_smoothing(x).numpy(), rtol=2e-6, atol=2e-6)


def test_fast_equals_reference_transcription():
    """Against the conv/unfold transcription of the published code at a larger size."""
    torch.manual_seed(1)
    low = torch.randint(0, 6, (2, 1, 12, 16)).float()
    pred = torch.nn.functional.interpolate(low, size=(97, 131), mode="nearest")[:, 0].long()
    pred[0, 40:42, :] = 8  # thin line
    s = torch.randn(2, 97, 131)
    for border in ("reference", "ignore"):
        np.testing.assert_array_equal(boundary_mask(pred, border).numpy(),
                                      literal_boundary(pred, border)[:, 0].numpy() > 0)
        got = boundary_suppression(s, pred, border=border)
        np.testing.assert_allclose(got.numpy(), literal_suppression(s, pred, border=border).numpy(),
                                   rtol=1e-5, atol=1e-5)


def test_stages_keep_input_and_inplace():
    s = torch.randn(1, 10, 12)
    p = torch.randint(0, 3, (1, 10, 12))
    before = s.clone()
    out = boundary_suppression(s, p)
    assert torch.equal(s, before) and out.data_ptr() != s.data_ptr()
    out2 = boundary_suppression(s, p, inplace=True)
    assert out2.data_ptr() == s.data_ptr() and torch.equal(out2, out)
    sm = dilated_smoothing(before.clone(), inplace=False)
    assert torch.equal(dilated_smoothing(before.clone(), inplace=True), sm)


def test_invalid_inputs():
    s = torch.randn(1, 4, 4)
    p = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(InputError, match="multiple"):
        boundary_suppression(s, p, 4, 3)
    with pytest.raises(InputError, match="border"):
        boundary_suppression(s, p, border="zero")
    with pytest.raises(InputError, match="shape"):
        boundary_suppression(s, p[:, :3])
    with pytest.raises(InputError, match="integer"):
        boundary_suppression(s, p.float())
    with pytest.raises(InputError, match="negative"):
        boundary_suppression(s, p - 1)
    with pytest.raises(InputError, match="odd"):
        dilated_smoothing(s, kernel_size=6)
    with pytest.raises(InputError, match="dilation"):
        dilated_smoothing(s, dilation=0)
    with pytest.raises(InputError, match="sigma"):
        dilated_smoothing(s, sigma=0.0)
    with pytest.raises(InputError, match="sigma"):
        dilated_smoothing(s, sigma=float("nan"))
    with pytest.raises(InputError, match="shape"):
        dilated_smoothing(torch.randn(4))


# ----------------------------------------------------------------------------- properties

label_maps = st.integers(1, 12).flatmap(lambda h: st.integers(1, 12).flatmap(
    lambda w: arrays(np.int64, (h, w), elements=st.integers(0, 4))))


@settings(max_examples=60, deadline=None)
@given(pred=label_maps, seed=st.integers(0, 2 ** 16), border=st.sampled_from(["reference", "ignore"]))
def test_suppression_leaves_far_pixels_untouched(pred, seed, border):
    s = torch.as_tensor(np.random.default_rng(seed).normal(size=pred.shape))
    p = torch.as_tensor(pred)
    out = boundary_suppression(s, p, border=border)
    bnd = lit_boundary(pred, border)
    # largest suppressed region: diamond of radius 3 around the boundary
    ys, xs = np.nonzero(bnd)
    yy, xx = np.mgrid[: pred.shape[0], : pred.shape[1]]
    far = np.ones(pred.shape, bool)
    for y, x in zip(ys, xs):
        far &= np.abs(yy - y) + np.abs(xx - x) > 3
    np.testing.assert_array_equal(out.numpy()[far], s.numpy()[far])
    np.testing.assert_allclose(out.numpy(), lit_suppression(s.numpy(), pred, border=border), rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(pred=label_maps, value=st.floats(-1e3, 1e3), k=st.sampled_from([1, 3, 7]), d=st.integers(1, 7))
def test_constant_maps_stay_constant(pred, value, k, d):
    s = torch.full(pred.shape, value, dtype=torch.float64)
    np.testing.assert_allclose(dilated_smoothing(s, k, d).numpy(), value, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(boundary_suppression(s, torch.as_tensor(pred)).numpy(), value, rtol=1e-12, atol=1e-9)
