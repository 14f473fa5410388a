"""Colour heatmaps, overlays and per-frame panels, composed with NumPy + Pillow.

Pillow (not matplotlib) composes the panels: a report draws one panel per
frame, and for 100+ frames matplotlib's figure machinery would dominate the
run time. matplotlib is used only for its colormap tables and the font file.
"""
from __future__ import annotations

import functools
from typing import Mapping, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sml.errors import InputError

Range = tuple[float, float]
RangeSpec = Union[str, Mapping[str, Range]]

# Colours of the label / detection overlays (RGB). Chosen to stay apart from
# every perceptual colormap's ends and from each other for colour-blind readers
# (blue / orange / green-red pairs also differ in lightness).
ANOMALY_COLOUR = (255, 133, 27)     # ground-truth anomaly
TP_COLOUR = (46, 204, 64)           # detected and anomalous
FP_COLOUR = (255, 40, 60)           # detected but in-distribution
FN_COLOUR = (0, 116, 217)           # anomalous but missed
DETECT_COLOUR = (255, 220, 0)       # detected, frame has no labels
VOID_COLOURS = ((70, 70, 78), (150, 150, 160))  # diagonal stripes: not evaluated
NAN_COLOUR = (128, 128, 128)        # non-finite scores in a heatmap
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
MUTED = (110, 110, 110)

_PERCENTILE_SAMPLES = 1 << 18  # percentiles of larger maps use a strided sample


@functools.lru_cache(maxsize=16)
def colormap_lut(cmap: str = "inferno") -> np.ndarray:
    """The 256 x 3 uint8 colour table of a matplotlib colormap (``InputError`` for unknown names)."""
    import matplotlib

    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError:
        raise InputError(
            f"unknown colormap {cmap!r}; use a matplotlib colormap name such as 'inferno', "
            "'magma', 'viridis' or 'cividis' (perceptually uniform)") from None
    # Integer indexing reads matplotlib's own 256-entry table, so heatmap() equals
    # ``cm(Normalize(vmin, vmax, clip=True)(x))`` exactly.
    lut = np.round(cm.resampled(256)(np.arange(256))[:, :3] * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # matplotlib ships DejaVu Sans, so every install has the same TrueType font.
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except Exception:  # pragma: no cover - only without matplotlib's font files
        return ImageFont.load_default()


def _as_map(anomaly: np.ndarray, name: str = "anomaly") -> np.ndarray:
    a = np.asarray(anomaly)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.size == 0:
        raise InputError(f"{name} must be a non-empty H x W array, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
            or a.dtype == bool):
        raise InputError(f"{name} must be numeric, got dtype {a.dtype}")
    return a.astype(np.float32, copy=False)


def _as_image(image: np.ndarray) -> np.ndarray:
    im = np.asarray(image)
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=2)
    if im.ndim != 3 or im.shape[2] not in (3, 4) or im.dtype != np.uint8:
        raise InputError(
            f"image must be a uint8 RGB array H x W x 3, got dtype {im.dtype} shape {im.shape}")
    return np.ascontiguousarray(im[..., :3])


def robust_range(values: np.ndarray, low: float = 1.0, high: float = 99.0) -> Range:
    """The ``low``-th and ``high``-th percentiles of the finite values (a strided sample of big maps).

    Returns ``(0, 1)`` when no value is finite, and widens an empty range so it
    can be divided by.
    """
    v = np.asarray(values, dtype=np.float32).ravel()
    if v.size > _PERCENTILE_SAMPLES:
        v = v[:: v.size // _PERCENTILE_SAMPLES + 1]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(x) for x in np.percentile(v, [low, high]))
    if not hi > lo:
        hi = lo + max(abs(lo) * 1e-6, 1e-6)
    return (lo, hi)


def colour_bar_strip(width: int, vmin: float, vmax: float, *, cmap: str = "inferno",
                     label: str | None = None) -> np.ndarray:
    """A white strip ``width`` pixels wide (uint8 RGB): the colour bar from ``vmin`` to ``vmax`` with both
    values printed at its ends, and ``label`` (e.g. the method name) with "anomaly score" on the left."""
    if width < 64:
        raise InputError(f"a colour bar needs an image at least 64 pixels wide, got {width}")
    fs = max(11, min(28, width // 70))
    font = _font(fs)
    h = fs * 2 + 8
    canvas = Image.new("RGB", (width, h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    pad = max(4, fs // 2)
    title = f"{label}: anomaly score" if label else "anomaly score"
    budget = max(16, width // 3 - 2 * pad)
    if label and _text_width(draw, title, font) > budget:
        title = label  # narrow images: the method name matters more than the word "score"
    title = _fit(draw, title, font, budget)
    x = pad
    draw.text((x, (h - fs) // 2 - 1), title, fill=TEXT, font=font)
    x += int(_text_width(draw, title, font)) + 2 * pad
    lo_s, hi_s = _fmt(vmin), _fmt(vmax)
    hw = int(_text_width(draw, hi_s, font))
    draw.text((x, (h - fs) // 2 - 1), lo_s, fill=TEXT, font=font)
    x += int(_text_width(draw, lo_s, font)) + pad
    bw = width - x - hw - 2 * pad
    if bw >= 8:
        strip = np.repeat(colormap_lut(cmap)[np.linspace(0, 255, bw).astype(np.int64)][None], h // 2, axis=0)
        canvas.paste(Image.fromarray(strip), (x, h // 4))
        x += bw + pad
    draw.text((x, (h - fs) // 2 - 1), hi_s, fill=TEXT, font=font)
    return np.asarray(canvas)


#: narrowest image that leaves room for the bar beside its labels; a narrower image is widened to it with the background colour on the right
MIN_BAR_WIDTH = 160


def _with_bar(rgb: np.ndarray, vmin: float, vmax: float, cmap: str, label: str | None) -> np.ndarray:
    if rgb.shape[1] < MIN_BAR_WIDTH:
        pad = np.empty((rgb.shape[0], MIN_BAR_WIDTH - rgb.shape[1], 3), np.uint8)
        pad[:] = BACKGROUND
        rgb = np.concatenate([rgb, pad], axis=1)
    return np.concatenate([rgb, colour_bar_strip(rgb.shape[1], vmin, vmax, cmap=cmap, label=label)], axis=0)


def heatmap(anomaly: np.ndarray, vmin: float | None = None, vmax: float | None = None,
            cmap: str = "inferno", *, colour_bar: bool = False, label: str | None = None) -> np.ndarray:
    """Colour an H x W anomaly map: uint8 RGB H x W x 3, ``vmin`` darkest, ``vmax`` brightest.

    A missing ``vmin`` / ``vmax`` is the map's own 1st / 99th percentile (a
    per-image range); pass a data-set range to compare frames. Values outside
    the range are clipped; NaN / inf pixels are drawn grey. ``colour_bar``
    appends a strip below (:func:`colour_bar_strip`: the range and ``label``,
    e.g. the method name), so the result is taller than the map.
    """
    if colour_bar:
        a = _as_map(anomaly)
        vmin, vmax = _resolve(a, vmin, vmax)
        return _with_bar(heatmap(a, vmin, vmax, cmap), vmin, vmax, cmap, label)
    a = _as_map(anomaly)
    if vmin is None or vmax is None:
        lo, hi = robust_range(a)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    vmin, vmax = float(vmin), float(vmax)
    if not (np.isfinite(vmin) and np.isfinite(vmax)):
        raise InputError(f"heatmap range must be finite, got vmin={vmin}, vmax={vmax}")
    if vmax < vmin:
        raise InputError(f"heatmap range is reversed: vmin={vmin} > vmax={vmax}; swap them")
    finite = np.isfinite(a)
    lo, hi = np.float32(vmin), np.float32(vmax)
    # matplotlib's arithmetic (float32, normalize then bin floor(x * 256), the top
    # edge in the last bin); clip handles values outside the range.
    norm = (np.where(finite, a, lo) - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    idx = np.clip(np.floor(norm * np.float32(256)), 0, 255).astype(np.uint8)
    rgb = colormap_lut(cmap)[idx]
    if not finite.all():
        rgb[~finite] = NAN_COLOUR
    return rgb


def _resolve(a: np.ndarray, vmin: float | None, vmax: float | None) -> tuple[float, float]:
    if vmin is None or vmax is None:
        lo, hi = robust_range(a)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    return float(vmin), float(vmax)


def overlay(image: np.ndarray, anomaly: np.ndarray, alpha: float = 0.6,
            vmin: float | None = None, vmax: float | None = None, cmap: str = "inferno",
            weighted: bool = True, *, colour_bar: bool = False, label: str | None = None) -> np.ndarray:
    """Blend the heatmap of ``anomaly`` over the photo ``image`` (same H x W): uint8 RGB.

    With ``weighted`` the opacity at a pixel is ``alpha`` times its position in
    the colour range, so in-distribution regions keep the photo readable and
    only high scores are tinted; otherwise the whole heatmap is blended with
    opacity ``alpha``. ``colour_bar`` / ``label``: as for :func:`heatmap`.
    """
    if colour_bar:
        a = _as_map(anomaly)
        vmin, vmax = _resolve(a, vmin, vmax)
        return _with_bar(overlay(image, a, alpha, vmin, vmax, cmap, weighted), vmin, vmax, cmap, label)
    im = _as_image(image)
    a = _as_map(anomaly)
    if im.shape[:2] != a.shape:
        raise InputError(
            f"image ({im.shape[0]}x{im.shape[1]}) and anomaly map ({a.shape[0]}x{a.shape[1]}) "
            "differ in size; resize one of them first")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    if vmin is None or vmax is None:
        lo, hi = robust_range(a)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    hm = heatmap(a, vmin, vmax, cmap).astype(np.float32)
    if weighted:
        span = float(vmax) - float(vmin)
        w = np.clip((np.nan_to_num(a, nan=float(vmin)) - float(vmin)) / span, 0, 1) if span > 0 \
            else np.zeros_like(a)
        w = (alpha * w)[..., None]
    else:
        w = np.float32(alpha)
    out = im.astype(np.float32) * (1.0 - w) + hm * w
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- panels


def _resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if rgb.shape[1] == size[0] and rgb.shape[0] == size[1]:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR, reducing_gap=2.0))


def _resize_map(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # Box-average the scores (NaN kept as NaN via a finite mask) before colouring:
    # colouring the small map is ~10x cheaper than colouring the full one.
    if a.shape[1] == size[0] and a.shape[0] == size[1]:
        return a
    finite = np.isfinite(a)
    src = np.where(finite, a, 0).astype(np.float32)
    small = np.asarray(Image.fromarray(src, mode="F").resize(size, Image.BOX))
    if not finite.all():
        cover = np.asarray(Image.fromarray(finite.astype(np.float32), mode="F").resize(size, Image.BOX))
        small = np.where(cover > 0.5, small / np.maximum(cover, 1e-6), np.nan)
    return small


def _coverage(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Fraction of each output pixel covered by ``mask`` (antialiased downscale), H x W float32."""
    if not mask.any():
        return np.zeros((size[1], size[0]), np.float32)
    img = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    if img.size != size:
        img = img.resize(size, Image.BOX)
    cov = np.asarray(img, dtype=np.float32) / 255.0
    # Keep thin structures visible after downscaling: any coverage counts at least half.
    return np.where(cov > 0, np.maximum(cov, 0.5), 0.0).astype(np.float32)


def _stripes(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    on = ((xx + yy) // 5) % 2 == 0
    out = np.empty((h, w, 3), np.float32)
    out[on] = VOID_COLOURS[0]
    out[~on] = VOID_COLOURS[1]
    return out


def _paint(base: np.ndarray, cover: np.ndarray, colour, opacity: float) -> np.ndarray:
    w = (cover * opacity)[..., None]
    return base * (1.0 - w) + np.asarray(colour, np.float32) * w


def _dimmed(tile: np.ndarray) -> np.ndarray:
    # Grey, lighter photo: context without competing with the overlay colours.
    grey = tile.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat((0.45 * grey + 110.0)[..., None], 3, axis=2)


def label_tile(image_tile: np.ndarray, labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Ground truth over the dimmed photo: anomaly orange, void striped grey (uint8 RGB)."""
    base = _dimmed(image_tile)
    void = _coverage(labels == 255, size)
    base = base * (1 - void[..., None]) + _stripes(size[1], size[0]) * void[..., None]
    base = _paint(base, _coverage(labels == 1, size), ANOMALY_COLOUR, 0.85)
    return np.clip(base + 0.5, 0, 255).astype(np.uint8)


def detection_tile(image_tile: np.ndarray, anomaly: np.ndarray, threshold: float,
                   labels: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """Pixels with ``anomaly >= threshold`` over the dimmed photo.

    With labels: true positives green, false positives red, missed anomaly
    blue, void striped (not evaluated); without labels every detection is yellow.
    """
    base = _dimmed(image_tile)
    det = anomaly >= threshold  # NaN compares False: never a detection
    if labels is None:
        return np.clip(_paint(base, _coverage(det, size), DETECT_COLOUR, 0.85) + 0.5,
                       0, 255).astype(np.uint8)
    void = _coverage(labels == 255, size)
    base = base * (1 - void[..., None]) + _stripes(size[1], size[0]) * void[..., None]
    pos = labels == 1
    base = _paint(base, _coverage(pos & ~det, size), FN_COLOUR, 0.85)
    base = _paint(base, _coverage(det & (labels == 0), size), FP_COLOUR, 0.85)
    base = _paint(base, _coverage(det & pos, size), TP_COLOUR, 0.85)
    return np.clip(base + 0.5, 0, 255).astype(np.uint8)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> float:
    return draw.textlength(text, font=font)


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    # Truncate long method / frame names instead of overflowing into the next cell.
    if _text_width(draw, text, font) <= width:
        return text
    while text and _text_width(draw, text + "…", font) > width:
        text = text[:-1]
    return text + "…"


def _legend_items(has_labels: bool, has_detections: bool) -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    if has_labels:
        items += [("anomaly (ground truth)", ANOMALY_COLOUR), ("void: not evaluated", "void")]
    if has_detections:
        if has_labels:
            items += [("detected anomaly (TP)", TP_COLOUR), ("false positive", FP_COLOUR),
                      ("missed anomaly (FN)", FN_COLOUR)]
        else:
            items += [("detected (no labels)", DETECT_COLOUR)]
    return items


def resolve_ranges(maps: Mapping[str, np.ndarray], ranges: RangeSpec) -> dict[str, Range]:
    """Colour range per method: ``"image"`` (each map's 1st-99th percentile) or a given mapping."""
    if isinstance(ranges, str):
        if ranges != "image":
            raise InputError(f"ranges must be 'image' or a {{method: (vmin, vmax)}} mapping, got {ranges!r}")
        return {m: robust_range(a) for m, a in maps.items()}
    out = {}
    for m, a in maps.items():
        r = ranges.get(m)
        out[m] = (float(r[0]), float(r[1])) if r is not None else robust_range(a)
    return out


def frame_panel(image: np.ndarray, labels: np.ndarray | None, maps: Mapping[str, np.ndarray],
                thresholds: Mapping[str, float | None] | None = None, ranges: RangeSpec = "image",
                *, cmap: str = "inferno", tile_width: int = 400, title: str | None = None,
                numbers: Mapping[str, Mapping[str, float | None]] | None = None,
                method_order: Sequence[str] | None = None) -> np.ndarray:
    """One figure per frame as uint8 RGB: photo and ground truth, then per method its heatmap
    (with a colour bar and range) above its detections at ``thresholds[method]``.

    ``labels`` use the evaluation convention (1 anomaly, 0 in-distribution,
    255 void) or are None. ``maps`` are H x W at the labels' resolution; the
    photo is resized to them. ``ranges`` is ``"image"`` or ``{method: (vmin,
    vmax)}`` (e.g. a data-set range). ``numbers[method]`` may hold ``ap`` and
    ``fp_area`` (fractions) to print under the detections. A missing threshold
    leaves its detection cell empty with a note.
    """
    im = _as_image(image)
    methods = list(method_order) if method_order is not None else list(maps)
    arrays = {m: _as_map(maps[m], f"anomaly map of {m!r}") for m in methods}
    labels, (h, w) = _panel_inputs(im, labels, arrays, tile_width)
    thresholds = thresholds or {}
    numbers = numbers or {}
    rng = resolve_ranges(arrays, ranges)
    legend = _legend_items(labels is not None, any(thresholds.get(m) is not None for m in methods))
    panel = _Panel(int(tile_width), (h, w), 1 + len(methods), bool(title), bool(legend), cmap)
    img_tile = _resize_rgb(im, panel.size)
    if title:
        panel.draw.text((panel.pad, 6), _fit(panel.draw, title, panel.font, panel.width - 2 * panel.pad),
                        fill=TEXT, font=panel.font)
    panel.cell(0, 0, img_tile, "image", footer=f"{w} x {h}")
    if labels is not None:
        frac_void = float(np.mean(labels == 255))
        frac_anom = float(np.mean(labels == 1))
        panel.cell(0, 1, label_tile(img_tile, labels, panel.size), "ground truth",
                   footer=f"anomaly {100 * frac_anom:.1f}%, void {100 * frac_void:.1f}%")
    else:
        panel.cell(0, 1, None, "ground truth", note="no labels for this frame")
    for j, m in enumerate(methods, start=1):
        _method_cells(panel, j, m, arrays[m], rng[m], thresholds.get(m), numbers.get(m, {}), img_tile, labels)
    if legend:
        panel.legend(legend)
    return np.asarray(panel.canvas)


def _panel_inputs(im: np.ndarray, labels: np.ndarray | None, arrays: Mapping[str, np.ndarray],
                  tile_width: int) -> tuple[np.ndarray | None, tuple[int, int]]:
    """Checked labels and the one H x W that maps and labels share (the photo's when there are none)."""
    shapes = {a.shape for a in arrays.values()}
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise InputError(f"labels must be H x W, got shape {labels.shape}")
        shapes.add(labels.shape)
    if len(shapes) > 1:
        raise InputError(f"anomaly maps and labels must share one H x W, got {sorted(shapes)}")
    hw = next(iter(shapes)) if shapes else im.shape[:2]
    if tile_width < 32:
        raise InputError(f"tile_width must be at least 32 pixels, got {tile_width}")
    return labels, hw


def _method_cells(panel: _Panel, col: int, m: str, a: np.ndarray, rng: Range, t: float | None,
                  nums: Mapping[str, float | None], img_tile: np.ndarray, labels: np.ndarray | None) -> None:
    """One method's column: its heatmap with the colour range, below it its detections and numbers."""
    vmin, vmax = rng
    panel.cell(col, 0, heatmap(_resize_map(a, panel.size), vmin, vmax, panel.cmap), f"{m}: score",
               bar=(vmin, vmax))
    if t is None:
        panel.cell(col, 1, None, f"{m}: detections", note="no 95%-TPR threshold in metrics.json")
        return
    parts = [f"t={_fmt(float(t))}"]
    for key, label in (("ap", "AP"), ("fp_area", "FP area")):
        v = nums.get(key)
        if v is not None and np.isfinite(v):
            parts.append(f"{label} {100 * float(v):.1f}%")
    panel.cell(col, 1, detection_tile(img_tile, a, float(t), labels, panel.size),
               f"{m}: detections @95% TPR", footer=", ".join(parts))


class _Panel:
    """The canvas of :func:`frame_panel`: a title row, two rows of ``cols`` cells (heading, tile,
    footer) and a legend row; sizes follow the tile width."""

    def __init__(self, tw: int, hw: tuple[int, int], cols: int, title: bool, legend: bool, cmap: str):
        h, w = hw
        self.tw, self.th = tw, max(1, round(tw * h / w))
        self.size = (self.tw, self.th)
        self.fs = fs = max(11, min(16, tw // 26))
        self.font, self.small = _font(fs), _font(max(10, fs - 2))
        self.title_h, self.foot_h, self.pad = fs + 10, fs + 16, 6
        self.head_h = (fs + 14) if title else 0
        self.legend_h = (fs + 14) if legend else 0
        self.cell_h = self.title_h + self.th + self.foot_h
        self.width = self.pad + cols * (tw + self.pad)
        self.height = self.head_h + self.pad + 2 * (self.cell_h + self.pad) + self.legend_h
        self.canvas = Image.new("RGB", (self.width, self.height), BACKGROUND)
        self.draw = ImageDraw.Draw(self.canvas)
        self.cmap = cmap
        self.lut = colormap_lut(cmap)

    def cell(self, col: int, row: int, tile: np.ndarray | None, heading: str, footer: str = "",
             bar: Range | None = None, note: str = "") -> None:
        """Heading, then ``tile`` (or a grey box with ``note``), then the colour ``bar`` or ``footer``."""
        tw, th, fs = self.tw, self.th, self.fs
        x = self.pad + col * (tw + self.pad)
        y = self.head_h + self.pad + row * (self.cell_h + self.pad)
        self.draw.text((x, y + 3), _fit(self.draw, heading, self.font, tw), fill=TEXT, font=self.font)
        ty = y + self.title_h
        if tile is not None:
            self.canvas.paste(Image.fromarray(tile), (x, ty))
        else:
            self.draw.rectangle([x, ty, x + tw - 1, ty + th - 1], fill=(235, 235, 238))
            self.draw.text((x + 8, ty + th // 2 - fs // 2), _fit(self.draw, note, self.small, tw - 16),
                           fill=MUTED, font=self.small)
        fy = ty + th + 3
        if bar is not None:
            self._bar(x, fy, bar)
        elif footer:
            self.draw.text((x, fy), _fit(self.draw, footer, self.small, tw), fill=MUTED, font=self.small)

    def _bar(self, x: int, y: int, bar: Range) -> None:
        lo_s, hi_s = _fmt(bar[0]), _fmt(bar[1])
        lw = int(_text_width(self.draw, lo_s, self.small)) + 6
        rw = int(_text_width(self.draw, hi_s, self.small)) + 6
        bw = max(8, self.tw - lw - rw)
        strip = np.repeat(self.lut[np.linspace(0, 255, bw).astype(np.int64)][None], 8, axis=0)
        self.canvas.paste(Image.fromarray(strip), (x + lw, y + 4))
        self.draw.text((x, y), lo_s, fill=TEXT, font=self.small)
        self.draw.text((x + lw + bw + 5, y), hi_s, fill=TEXT, font=self.small)

    def legend(self, items: Sequence[tuple[str, object]]) -> None:
        """The colour key along the bottom row: a swatch (stripes for void) and its text per item."""
        fs = self.fs
        x, y = self.pad, self.height - self.legend_h + 4
        for text, colour in items:
            if colour == "void":
                self.canvas.paste(Image.fromarray(_stripes(fs, fs).astype(np.uint8)), (x, y))
            else:
                self.draw.rectangle([x, y, x + fs - 1, y + fs - 1], fill=colour)
            self.draw.text((x + fs + 5, y - 1), text, fill=TEXT, font=self.small)
            x += fs + 5 + int(_text_width(self.draw, text, self.small)) + 16
