"""Synthetic street scenes in the Cityscapes layout, and an anomaly set on the same streets.

Everything is drawn with NumPy and PIL from a seed: no download. A scene has
a road in perspective with lane marks, sidewalks paved in a grey close to the
asphalt's, a grass verge, buildings with windows, trees, sky with clouds,
street lamps and sign posts, cars and people, under varied layout, lighting
(gain, colour cast, cast shadows) and camera noise. The classes differ in
frequency and difficulty as in real streets: road and sky are large and
uniform, while people, poles and signs are small and rare, and grass, leaves
and paving are textured and easily confused. Labels use the real Cityscapes
label ids (road 7, sidewalk 8, building 11, pole 17, traffic sign 20,
vegetation 21, terrain 22, sky 23, person 24, car 26) so the official table
maps them to train ids.

The anomaly set shows new streets with objects that never occur in training:
irregular blobs and stars, lying flat or standing, about the size of people
and cars, with surfaces no street object has (saturated stripes, checks or
dots, multi-hue camouflage, colour mosaics, colour confetti), on the road and
drawn in depth order (a nearer car or person hides them). Labels: 1 anomaly,
0 in-distribution, 255 a one-pixel void ring around each object (its mixed,
antialiased edge).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sml.utils import atomic

ROAD, SIDEWALK, BUILDING, POLE, TRAFFIC_SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = (
    7, 8, 11, 17, 20, 21, 22, 23, 24, 26)
CLASS_IDS = {"road": ROAD, "sidewalk": SIDEWALK, "building": BUILDING, "pole": POLE, "traffic sign": TRAFFIC_SIGN,
             "vegetation": VEGETATION, "terrain": TERRAIN, "sky": SKY, "person": PERSON, "car": CAR}

_CAR_COLOURS = np.array([[0.55, 0.08, 0.08], [0.10, 0.15, 0.45], [0.85, 0.85, 0.85], [0.08, 0.08, 0.09],
                         [0.55, 0.56, 0.58], [0.25, 0.30, 0.25]], np.float32)
_CLOTHES = np.array([[0.15, 0.15, 0.2], [0.35, 0.2, 0.12], [0.45, 0.45, 0.5], [0.1, 0.25, 0.35],
                     [0.5, 0.12, 0.12], [0.2, 0.3, 0.15], [0.6, 0.55, 0.4], [0.3, 0.3, 0.3]], np.float32)
_FACADES = np.array([[0.72, 0.65, 0.52], [0.55, 0.30, 0.22], [0.60, 0.60, 0.62], [0.80, 0.76, 0.68],
                     [0.45, 0.42, 0.40], [0.50, 0.50, 0.48]], np.float32)
# Unseen in training: saturated hues no street object has.
_ANOMALY_COLOURS = np.array([[1.0, 0.0, 0.9], [0.0, 0.95, 0.95], [1.0, 0.55, 0.0], [0.5, 1.0, 0.0],
                             [1.0, 0.95, 0.0], [0.55, 0.0, 1.0]], np.float32)


def value_noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    """Smooth fractal noise in [0, 1], ``h x w``; ``cell`` is the coarsest feature size in pixels."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
        grid = rng.random((gh, gw)).astype(np.float32)
        out += amp * np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC))
        total += amp
        amp *= 0.5
        cell = max(1.0, cell / 2)
    out /= total
    return np.clip(out, 0, 1)


def _mask(h: int, w: int, draw_fn) -> np.ndarray:  # type: ignore[no-untyped-def]
    im = Image.new("L", (w, h), 0)
    draw_fn(ImageDraw.Draw(im))
    return np.asarray(im) > 127


def _paint(img: np.ndarray, lab: np.ndarray | None, mask: np.ndarray, colour: np.ndarray,
           label: int | None = None) -> None:
    img[mask] = colour[mask] if colour.ndim == 3 else colour
    if lab is not None and label is not None:
        lab[mask] = label


@dataclass
class _Scene:
    """A frame being drawn: image and labels, pixel coordinates, horizon and vanishing point, and (once the
    ground is laid by :func:`_ground`) the road's half-widths and mask, the sidewalk width, the depth map."""

    img: np.ndarray
    lab: np.ndarray
    xx: np.ndarray
    yy: np.ndarray
    hor: float
    vx: float
    half_l: float = 0.0
    half_r: float = 0.0
    walk: float = 0.0
    tt: np.ndarray = field(default_factory=lambda: np.zeros(0))      # 0 at the horizon, 1 at the bottom
    below: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    road: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    @property
    def h(self) -> int:
        return self.lab.shape[0]

    @property
    def w(self) -> int:
        return self.lab.shape[1]

    def ground_y(self, s: float) -> float:
        """The image row of a ground point at depth ``s`` (0 horizon, 1 bottom edge)."""
        return self.hor + s * (self.h - self.hor)

    def beside_road(self, rng: np.random.Generator, s: float, gap: float, lo: float, hi: float) -> float:
        """The column of a point at depth ``s`` on a random side, ``gap`` + a random share of the sidewalk out."""
        sgn = rng.choice([-1, 1])
        return self.vx + sgn * (gap * self.w + s * (self.half_l if sgn < 0 else self.half_r)
                                + s * self.walk * rng.uniform(lo, hi))


def street_scene(rng: np.random.Generator, width: int = 320, height: int = 160,
                 anomalies: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One frame: (uint8 H x W x 3 image, uint8 Cityscapes label ids, 0/1/255 anomaly labels or None)."""
    h, w = height, width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    hor = rng.uniform(0.36, 0.5) * h
    vx = rng.uniform(0.35, 0.65) * w
    sc = _Scene(np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.uint8), xx, yy, hor, vx)
    _sky(rng, sc)
    _buildings(rng, sc)
    _background_trees(rng, sc)
    _ground(rng, sc)
    _near_trees(rng, sc)
    amask = _objects(rng, sc, anomalies)
    image = _light_and_noise(rng, sc)
    anomaly = _anomaly_labels(sc.lab, amask) if anomalies else None
    return image, sc.lab, anomaly


def _sky(rng: np.random.Generator, sc: _Scene) -> None:
    """Sky: a vertical gradient with clouds, over the whole frame (everything else is drawn on top)."""
    top, bottom = np.array([0.25, 0.45, 0.85]), np.array([0.70, 0.80, 0.95])
    t = np.clip(sc.yy / max(sc.hor, 1), 0, 1)[..., None]
    sky = top * (1 - t) + bottom * t
    clouds = np.clip(value_noise(rng, sc.h, sc.w, sc.w / 4) * 2.2 - 1.0, 0, 1)[..., None] * rng.uniform(0.2, 0.9)
    sc.img[:] = sky * (1 - clouds) + 0.95 * clouds
    sc.lab[:] = SKY


def _buildings(rng: np.random.Generator, sc: _Scene) -> None:
    """Blocks along the horizon, left and right of the vanishing point, out to the frame's edges."""
    w = sc.w
    for side in (-1, 1):
        x = sc.vx + side * rng.uniform(0.02, 0.12) * w
        while 0 <= x < w or (side < 0 and x >= w) or (side > 0 and x < 0):
            x = _building(rng, sc, side, x)
            if x <= 0 or x >= w:
                break


def _building(rng: np.random.Generator, sc: _Scene, side: int, x: float) -> float:
    """One block with a window grid, from ``x`` away from the vanishing point; returns its far edge."""
    h, w, hor = sc.h, sc.w, sc.hor
    bw = rng.uniform(0.08, 0.25) * w
    dist = abs(x - sc.vx) / w
    bh = rng.uniform(0.15, 0.45) * h + dist * h * 0.6
    x0, x1 = (x - bw, x) if side < 0 else (x, x + bw)
    y0 = max(0.0, hor - bh)
    m = _mask(h, w, lambda d: d.rectangle([x0, y0, x1, hor + 0.1 * h * (dist + 0.2)], fill=255))
    base = _FACADES[rng.integers(len(_FACADES))] * rng.uniform(0.85, 1.1)
    tex = base * (0.85 + 0.3 * value_noise(rng, h, w, 6, 2))[..., None]
    # window grid, darker glass
    sx, sy = rng.uniform(6, 12), rng.uniform(7, 12)
    win = ((np.mod(sc.xx - x0, sx) > 0.45 * sx) & (np.mod(sc.yy - y0, sy) > 0.5 * sy))
    tex = np.where(win[..., None], tex * 0.35 + np.array([0.05, 0.08, 0.12]), tex)
    _paint(sc.img, sc.lab, m, tex, BUILDING)
    return x1 if side > 0 else x0


def _background_trees(rng: np.random.Generator, sc: _Scene) -> None:
    """Tree crowns over buildings and sky, near the horizon."""
    h, w = sc.h, sc.w
    for _ in range(rng.integers(1, 6)):
        cx, r = rng.uniform(0, w), rng.uniform(0.06, 0.18) * h
        cy = sc.hor - r * rng.uniform(0.3, 1.2)
        m = _mask(h, w, lambda d: d.ellipse([cx - r * 1.2, cy - r, cx + r * 1.2, cy + r], fill=255))
        _paint(sc.img, sc.lab, m, _foliage(rng, h, w), VEGETATION)


def _ground(rng: np.random.Generator, sc: _Scene) -> None:
    """Grass verge (terrain), sidewalks and the road with lane marks, in perspective; records the layout."""
    h, w, xx, yy, hor, vx = sc.h, sc.w, sc.xx, sc.yy, sc.hor, sc.vx
    tt = np.clip((yy - hor) / max(h - hor, 1), 0, None)
    below = yy >= hor
    half_l, half_r = rng.uniform(0.35, 0.8) * w, rng.uniform(0.35, 0.8) * w
    walk = rng.uniform(0.15, 0.45) * w
    rl, rr = vx - 0.01 * w - tt * half_l, vx + 0.01 * w + tt * half_r
    road = below & (xx >= rl) & (xx <= rr)
    side = below & ~road & (xx >= rl - 0.005 * w - tt * walk) & (xx <= rr + 0.005 * w + tt * walk)
    verge = below & ~road & ~side
    _paint(sc.img, sc.lab, verge, _grass(rng, h, w), TERRAIN)
    # paving: a grey close to the asphalt's (sidewalks are the class networks confuse with road),
    # told apart mostly by faint tile joints of varying size and contrast
    pav = np.array([0.50, 0.48, 0.46]) * rng.uniform(0.75, 1.25) * (1 + rng.uniform(-0.06, 0.06, 3))
    tx, ty = rng.uniform(4, 9), rng.uniform(3, 7)
    tiles = (np.mod(xx, tx) < 0.8) | (np.mod(yy, ty) < 0.7)
    sw = (pav * (0.88 + 0.2 * value_noise(rng, h, w, 4, 2))[..., None]
          * np.where(tiles, rng.uniform(0.75, 0.92), 1.0)[..., None])
    _paint(sc.img, sc.lab, side, sw, SIDEWALK)
    asphalt = np.array([0.36, 0.36, 0.38]) * rng.uniform(0.8, 1.15)
    grain = (0.85 + 0.25 * value_noise(rng, h, w, 2, 2))[..., None]
    rtex = asphalt * grain
    # lane marks: dashes along the centre line, converging to the vanishing point
    cxl = vx + tt * (half_r - half_l) / 2
    dash = (np.abs(xx - cxl) < 0.3 + tt * 2.5) & (np.mod(np.log1p(tt * 30) * 6, 2) < 1) & below
    rtex = np.where(dash[..., None], np.array([0.9, 0.9, 0.85]), rtex)
    _paint(sc.img, sc.lab, road, rtex, ROAD)
    sc.half_l, sc.half_r, sc.walk, sc.tt, sc.below, sc.road = half_l, half_r, walk, tt, below, road


def _near_trees(rng: np.random.Generator, sc: _Scene) -> None:
    """Trees (trunk and crown) on the verge / sidewalk edge."""
    h, w = sc.h, sc.w
    for _ in range(rng.integers(0, 4)):
        s = rng.uniform(0.1, 1.0)
        y = sc.ground_y(s)
        x = sc.beside_road(rng, s, 0.02, 0.6, 1.3)
        r = (0.05 + 0.25 * s) * h
        trunk = _mask(h, w, lambda d: d.rectangle([x - r * 0.12, y - r * 1.6, x + r * 0.12, y], fill=255))
        _paint(sc.img, sc.lab, trunk, np.array([0.3, 0.22, 0.15]), VEGETATION)
        crown = _mask(h, w, lambda d: d.ellipse([x - r, y - r * 2.8, x + r, y - r * 1.2], fill=255))
        _paint(sc.img, sc.lab, crown, _foliage(rng, h, w), VEGETATION)


def _objects(rng: np.random.Generator, sc: _Scene, anomalies: int) -> np.ndarray:
    """Cars on the road, people and poles beside it and ``anomalies`` unseen objects lying on the road,
    drawn far to near so that a nearer object hides what is behind it; returns the visible anomaly mask."""
    objs: list[tuple[str, float, float]] = [("car", rng.uniform(0.05, 1.0), 0.0)
                                            for _ in range(rng.integers(0, 5))]
    objs += [("person", rng.uniform(0.1, 1.0), 0.0) for _ in range(rng.integers(0, 4))]
    objs += [("pole", rng.uniform(0.1, 1.0), 0.0) for _ in range(rng.integers(0, 4))]
    objs += [("anomaly", s, x) for s, x in _anomaly_spots(rng, sc, anomalies)]
    amask_all = np.zeros((sc.h, sc.w), bool)
    for kind, s, ax in sorted(objs, key=lambda o: o[1]):
        y = sc.ground_y(s)
        if kind == "anomaly":
            m = _anomaly_shape(rng, sc.h, sc.w, ax, y, (0.06 + 0.2 * s) * sc.h * rng.uniform(0.8, 1.3))
            _paint(sc.img, None, m, _anomaly_texture(rng, sc.xx, sc.yy))
            amask_all |= m
        else:
            amask_all &= ~_DRAW[kind](rng, sc, s, y)
    return amask_all


def _anomaly_spots(rng: np.random.Generator, sc: _Scene, n: int) -> list[tuple[float, float]]:
    """Up to ``n`` ground points (depth, column) on the road (50 tries each)."""
    spots = []
    for _ in range(n):
        for _try in range(50):
            s = rng.uniform(0.2, 1.0)
            x = sc.vx + rng.uniform(-0.75, 0.75) * s * (sc.half_l + sc.half_r) / 2
            if sc.road[min(sc.h - 1, int(sc.hor + s * (sc.h - sc.hor))), int(np.clip(x, 0, sc.w - 1))]:
                spots.append((s, x))
                break
    return spots


def _car(rng: np.random.Generator, sc: _Scene, s: float, y: float) -> np.ndarray:
    """A car standing on the road at depth ``s``; returns the pixels it covers (body, cabin, wheels)."""
    h, w = sc.h, sc.w
    x = sc.vx + (rng.uniform(-0.9, 0.9)) * s * (sc.half_l + sc.half_r) / 2
    cw, ch = (0.06 + 0.5 * s) * w * rng.uniform(0.8, 1.1), (0.05 + 0.35 * s) * h
    col = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))] * rng.uniform(0.8, 1.15)
    body = _mask(h, w, lambda d: d.rounded_rectangle([x - cw / 2, y - ch * 0.62, x + cw / 2, y - ch * 0.12],
                                                     radius=max(1, ch * 0.1), fill=255))
    cab = _mask(h, w, lambda d: d.polygon([(x - cw * 0.35, y - ch * 0.6), (x - cw * 0.25, y - ch),
                                           (x + cw * 0.25, y - ch), (x + cw * 0.35, y - ch * 0.6)], fill=255))
    shade = (0.9 + 0.2 * value_noise(rng, h, w, 3, 1))[..., None]
    _paint(sc.img, sc.lab, body | cab, col * shade, CAR)
    covered = body | cab
    glass = _mask(h, w, lambda d: d.polygon([(x - cw * 0.3, y - ch * 0.62), (x - cw * 0.22, y - ch * 0.93),
                                             (x + cw * 0.22, y - ch * 0.93), (x + cw * 0.3, y - ch * 0.62)], fill=255))
    _paint(sc.img, sc.lab, glass, np.array([0.15, 0.2, 0.28]), CAR)
    for wx in (x - cw * 0.32, x + cw * 0.32):
        wr = ch * 0.17
        wheel = _mask(h, w, lambda d: d.ellipse([wx - wr, y - ch * 0.12 - wr, wx + wr, y - ch * 0.12 + wr], fill=255))
        _paint(sc.img, sc.lab, wheel, np.array([0.05, 0.05, 0.05]), CAR)
        covered = covered | wheel
    return covered


def _pole(rng: np.random.Generator, sc: _Scene, s: float, y: float) -> np.ndarray:
    """A street lamp or sign post at the outer edge of a sidewalk (half of them with a sign); returns its pixels."""
    h, w = sc.h, sc.w
    x = sc.beside_road(rng, s, 0.01, 0.3, 0.9)
    ph, pw = (0.18 + 1.0 * s) * h, max(0.6, (0.004 + 0.012 * s) * w)
    post = _mask(h, w, lambda d: d.rectangle([x - pw / 2, y - ph, x + pw / 2, y], fill=255))
    _paint(sc.img, sc.lab, post, np.array([0.35, 0.36, 0.38]) * rng.uniform(0.6, 1.4), POLE)
    if rng.random() >= 0.5:
        return post
    sw_, sh_ = pw * rng.uniform(3, 6), pw * rng.uniform(3, 5)
    top = y - ph * rng.uniform(0.7, 0.95)
    sign = _mask(h, w, lambda d: d.rectangle([x - sw_ / 2, top, x + sw_ / 2, top + sh_], fill=255))
    face = [np.array([0.1, 0.3, 0.7]), np.array([0.9, 0.9, 0.9]), np.array([0.8, 0.15, 0.1]),
            np.array([0.9, 0.75, 0.1])][int(rng.integers(4))]
    _paint(sc.img, sc.lab, sign, face * rng.uniform(0.8, 1.1), TRAFFIC_SIGN)
    return post | sign


def _person(rng: np.random.Generator, sc: _Scene, s: float, y: float) -> np.ndarray:
    """A person on a sidewalk (legs, torso, head); returns their pixels."""
    h, w = sc.h, sc.w
    x = sc.beside_road(rng, s, 0.01, 0.2, 0.8)
    ph = (0.08 + 0.45 * s) * h
    pw = ph * 0.28
    col = _CLOTHES[rng.integers(len(_CLOTHES))]
    legs = _mask(h, w, lambda d: d.rectangle([x - pw * 0.4, y - ph * 0.45, x + pw * 0.4, y], fill=255))
    torso = _mask(h, w, lambda d: d.ellipse([x - pw / 2, y - ph * 0.85, x + pw / 2, y - ph * 0.35], fill=255))
    head = _mask(h, w, lambda d: d.ellipse([x - pw * 0.28, y - ph, x + pw * 0.28, y - ph * 0.8], fill=255))
    _paint(sc.img, sc.lab, legs, col * 0.6, PERSON)
    _paint(sc.img, sc.lab, torso, col, PERSON)
    _paint(sc.img, sc.lab, head, np.array([0.85, 0.67, 0.55]) * rng.uniform(0.5, 1.1), PERSON)
    return legs | torso | head


_DRAW = {"car": _car, "pole": _pole, "person": _person}


def _light_and_noise(rng: np.random.Generator, sc: _Scene) -> np.ndarray:
    """Cast shadow on the ground, global gain and colour cast, sensor noise; the uint8 image."""
    img = sc.img
    if rng.random() < 0.5:
        sx0 = rng.uniform(0, sc.w)
        shadow = sc.below & (sc.xx - sx0 + (sc.yy - sc.hor) * rng.uniform(-1.5, 1.5) > 0)
        img[shadow] *= rng.uniform(0.5, 0.75)
    gain = rng.uniform(0.55, 1.3)
    cast = 1 + rng.uniform(-0.12, 0.12, 3)
    img = img * gain * cast
    img += rng.normal(0, 0.015, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _anomaly_labels(lab: np.ndarray, amask: np.ndarray) -> np.ndarray:
    """0/1/255 labels (a one-pixel void ring around each object); ``lab`` gets 0 (unlabelled) under them."""
    from scipy.ndimage import binary_dilation, binary_erosion
    anomaly = np.zeros(lab.shape, np.uint8)
    anomaly[amask] = 1
    ring = binary_dilation(amask) & ~binary_erosion(amask)
    anomaly[ring] = 255
    lab[amask] = 0   # unlabelled in the Cityscapes sense
    return anomaly


def _anomaly_shape(rng: np.random.Generator, h: int, w: int, x: float, y: float, r: float) -> np.ndarray:
    """An irregular blob or a star of radius ~``r`` on the ground point (``x``, ``y``): half of them lie flat
    on the road (lost cargo, a tarpaulin), the others stand up."""
    k = int(rng.integers(5, 11))
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    spikes = rng.random() < 0.5
    rad = r * (np.where(np.arange(k) % 2 == 0, 1.0, 0.45) if spikes else rng.uniform(0.55, 1.0, k))
    f = rng.uniform(0.3, 0.55) if rng.random() < 0.5 else rng.uniform(0.7, 1.0)   # vertical extent
    pts = [(float(x + rr * np.cos(a)), float(y - r * f + rr * np.sin(a) * f)) for rr, a in zip(rad, ang)]
    return _mask(h, w, lambda d: d.polygon(pts, fill=255))


def _anomaly_texture(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """A surface no street object has: saturated two-colour stripes/checks/dots, multi-hue camouflage,
    a colour mosaic or colour confetti (H x W x 3 in [0, 1])."""
    h, w = xx.shape
    style = rng.integers(4)
    if style == 0:
        c1 = _ANOMALY_COLOURS[rng.integers(len(_ANOMALY_COLOURS))]
        c2 = _ANOMALY_COLOURS[rng.integers(len(_ANOMALY_COLOURS))] * rng.uniform(0.2, 0.6)
        pattern = rng.integers(3)
        p = rng.uniform(2.5, 6)
        if pattern == 0:
            sel = np.mod(xx + yy * rng.uniform(-1, 1), p) < p / 2           # stripes
        elif pattern == 1:
            sel = (np.mod(xx, p) < p / 2) ^ (np.mod(yy, p) < p / 2)          # checks
        else:
            sel = (np.mod(xx, p) - p / 2) ** 2 + (np.mod(yy, p) - p / 2) ** 2 < (p / 3) ** 2   # dots
        return np.where(sel[..., None], c1, c2)
    if style == 1:   # camouflage: smoothly varying saturated hues
        from sml.train.transforms import hsv_to_rgb
        hsv = np.stack([value_noise(rng, h, w, 3, 2), np.full((h, w), rng.uniform(0.6, 0.95), np.float32),
                        0.4 + 0.5 * value_noise(rng, h, w, 5, 1)], -1)
        return hsv_to_rgb(hsv)
    if style == 2:   # mosaic of random colours
        cell = int(rng.integers(3, 6))
        tiles = rng.random((h // cell + 1, w // cell + 1, 3)).astype(np.float32)
        return np.repeat(np.repeat(tiles, cell, 0), cell, 1)[:h, :w]
    return rng.random((h, w, 3)).astype(np.float32)   # confetti

def _grass(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Grass: lighter and yellower than leaves, finely textured (the terrain class)."""
    base = np.array([0.38, 0.48, 0.20]) * rng.uniform(0.65, 1.2) * (1 + rng.uniform(-0.08, 0.08, 3))
    return base * (0.7 + 0.6 * value_noise(rng, h, w, rng.uniform(1.5, 3), 2))[..., None]


def _foliage(rng: np.random.Generator, h: int, w: int, dark: float = 1.0) -> np.ndarray:
    """Leaves: greens from olive to blue-green (now and then autumn brown), strongly textured."""
    greens = np.array([[0.22, 0.42, 0.15], [0.30, 0.40, 0.12], [0.15, 0.35, 0.22], [0.35, 0.45, 0.20],
                       [0.45, 0.33, 0.15]], np.float32)
    base = greens[rng.choice(len(greens), p=[0.35, 0.2, 0.2, 0.15, 0.1])] * rng.uniform(0.6, 1.25) * dark
    n = value_noise(rng, h, w, rng.uniform(1.5, 4), 3)
    return base * (0.4 + 1.2 * n)[..., None]


# ----------------------------------------------------------------------- writers
def _save_png(path: Path, array: np.ndarray) -> None:
    import io
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    atomic.write_bytes(path, buf.getvalue())


def write_cityscapes(root: str | Path, splits: dict[str, int], seed: int = 0, width: int = 320,
                     height: int = 160) -> Path:
    """Write ``{split: n_frames}`` synthetic frames in the Cityscapes layout under ``root``; returns ``root``."""
    root = Path(root)
    for k, (split, n) in enumerate(sorted(splits.items())):
        city = {"train": "synthtown", "val": "synthville"}.get(split, f"synth{split}")
        for i in range(n):
            rng = np.random.default_rng([seed, k, i])
            image, lab, _ = street_scene(rng, width, height)
            stem = f"{city}_{i:06d}_000019"
            _save_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
            _save_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", lab)
    return root


def write_anomaly_set(root: str | Path, n: int, seed: int = 1, width: int = 320, height: int = 160) -> Path:
    """Write ``n`` street frames with road anomalies as ``root/images/*.png`` + ``root/labels/*.png`` (0/1/255)."""
    root = Path(root)
    for i in range(n):
        rng = np.random.default_rng([seed, 99, i])
        image, _, anomaly = street_scene(rng, width, height, anomalies=int(rng.integers(1, 4)))
        assert anomaly is not None
        _save_png(root / "images" / f"synth_anomaly_{i:04d}.png", image)
        _save_png(root / "labels" / f"synth_anomaly_{i:04d}.png", anomaly)
    return root

