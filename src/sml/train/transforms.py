"""Training augmentations of the SML recipe, driven by an explicit ``numpy.random.Generator``.

Every random draw comes from the generator passed in, so a crop is a pure
function of (frame, generator seed): the training stream can be replayed
exactly after a resume, on any number of processes or loader workers.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from sml.train.config import DataConfig

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def scale_and_crop(image: np.ndarray, labels: np.ndarray, scale: float, crop: tuple[int, int],
                   rng: np.random.Generator, centre: tuple[float, float] | None = None,
                   ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Rescale by ``scale`` and cut a ``crop`` (h, w) window, padding with 0 / ``ignore_index``.

    Only the cropped region is resampled (PIL ``box``), which is what a full
    resize followed by a crop gives, without resizing a 4096x2048 frame.
    ``centre`` (y, x in source pixels) puts that pixel at the crop centre
    (clamped to the image); otherwise the window position is uniform.
    """
    h, w = labels.shape
    ch, cw = crop
    hs, ws = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    sy, sx = hs / h, ws / w
    oh, ow = min(ch, hs), min(cw, ws)

    def start(extent: int, size: int, c: float | None, s: float) -> int:
        if extent <= size:
            return 0
        if c is None:
            return int(rng.integers(0, extent - size + 1))
        # source pixel centre -> scaled pixel index, then put it at index size // 2 of the crop
        return int(np.clip(int(np.floor((c + 0.5) * s)) - size // 2, 0, extent - size))

    y0 = start(hs, ch, None if centre is None else centre[0], sy)
    x0 = start(ws, cw, None if centre is None else centre[1], sx)
    box = (x0 / sx, y0 / sy, (x0 + ow) / sx, (y0 + oh) / sy)
    img = np.asarray(Image.fromarray(image).resize((ow, oh), Image.BILINEAR, box=box))
    lab = np.asarray(Image.fromarray(labels).resize((ow, oh), Image.NEAREST, box=box))
    if (oh, ow) != (ch, cw):
        out_img = np.zeros((ch, cw, 3), dtype=np.uint8)
        out_lab = np.full((ch, cw), ignore_index, dtype=np.uint8)
        out_img[:oh, :ow], out_lab[:oh, :ow] = img, lab
        img, lab = out_img, out_lab
    return img, lab


def _gray(img: np.ndarray) -> np.ndarray:
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def rgb_to_hsv(img: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] -> HSV in [0, 1] (vectorised; hue as a fraction of a turn)."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    maxc, minc = img.max(-1), img.min(-1)
    v = maxc
    delta = maxc - minc
    s = np.where(maxc > 0, delta / np.maximum(maxc, 1e-12), 0.0)
    safe = np.maximum(delta, 1e-12)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = np.where(maxc == r, bc - gc, np.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    return np.stack([h, s, v], -1).astype(np.float32)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(np.int64) % 6
    choices = [np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    out = np.choose(i[..., None], choices)
    return out.astype(np.float32)


def color_jitter(img: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float,
                 saturation: float, hue: float) -> np.ndarray:
    """torchvision-style ColorJitter on float RGB in [0, 1]: the four ops in random order."""
    factors = {
        "b": rng.uniform(max(0.0, 1 - brightness), 1 + brightness),
        "c": rng.uniform(max(0.0, 1 - contrast), 1 + contrast),
        "s": rng.uniform(max(0.0, 1 - saturation), 1 + saturation),
        "h": rng.uniform(-hue, hue),
    }
    for op in rng.permutation(["b", "c", "s", "h"]):
        f = factors[str(op)]
        if op == "b":
            img = np.clip(img * f, 0, 1)
        elif op == "c":
            m = _gray(img).mean()
            img = np.clip((img - m) * f + m, 0, 1)
        elif op == "s":
            g = _gray(img)[..., None]
            img = np.clip((img - g) * f + g, 0, 1)
        elif f != 0.0:
            hsv = rgb_to_hsv(img)
            hsv[..., 0] = (hsv[..., 0] + f) % 1.0
            img = hsv_to_rgb(hsv)
    return img.astype(np.float32, copy=False)


def augment(image: np.ndarray, labels: np.ndarray, cfg: DataConfig, rng: np.random.Generator,
            centre: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The recipe's augmentation of one frame -> (float32 3 x h x w RGB in [0, 1], int64 h x w labels)."""
    scale = rng.uniform(cfg.scale_min, cfg.scale_max)
    img, lab = scale_and_crop(image, labels, scale, (cfg.crop_size[0], cfg.crop_size[1]), rng,
                              centre=centre, ignore_index=cfg.ignore_index)
    flip = cfg.hflip and rng.random() < 0.5
    jitter = rng.random() < cfg.color_jitter.prob
    blur = rng.random() < cfg.blur.prob
    sigma = rng.uniform(cfg.blur.sigma_min, cfg.blur.sigma_max)
    if flip:
        img, lab = img[:, ::-1], lab[:, ::-1]
    x = img.astype(np.float32) / 255.0
    if jitter:
        cj = cfg.color_jitter
        x = color_jitter(x, rng, cj.brightness, cj.contrast, cj.saturation, cj.hue)
    if blur and sigma > 0:
        x = gaussian_filter(x, sigma=(sigma, sigma, 0), mode="reflect")
    return np.ascontiguousarray(x.transpose(2, 0, 1)), np.ascontiguousarray(lab, dtype=np.int64)


def normalize_batch(x, mode: str):  # type: ignore[no-untyped-def]
    """Normalize a float B x 3 x H x W batch in [0, 1] in place of the model's preprocessing."""
    import torch

    if mode == "none":
        return x
    mean = torch.as_tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
