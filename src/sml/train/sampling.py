"""Class-uniform sampling (Zhu et al. 2019, as used by the SML recipe) and the resumable crop stream.

Centroids: for every ``tile x tile`` block of every training label map and
every class present in it, the pixel of that class nearest to the class's
centre of mass in the block (the centre of mass itself may fall outside a
non-convex region, and a crop must be centred *on* the class). They are
computed once and cached in a JSON file keyed by the label files.

Stream: epoch ``e`` is a list of ``N`` items (``N`` = number of frames):
``round(share * N)`` class-centred items (a class drawn uniformly among the
classes that have centroids, then one of its centroids at random) and the
rest a random subset of the frames, shuffled together. The list and every
item's augmentation are pure functions of ``(seed, position)``, so the
sampler state is one integer and a resumed or sharded run sees exactly the
same crops as an uninterrupted single-process one.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from sml.train.config import DataConfig
from sml.train.frames import Frames
from sml.train.transforms import augment
from sml.utils import atomic
from sml.utils import distributed as du
from sml.utils.progress import progress

Centroids = dict[int, list[tuple[int, int, int]]]   # class -> [(frame, y, x), ...]


def tile_centroids(labels: np.ndarray, tile: int, num_classes: int) -> list[tuple[int, int, int]]:
    """``(class, y, x)`` for every class of every tile of ``labels``: the class pixel nearest the centre of mass."""
    h, w = labels.shape
    out: list[tuple[int, int, int]] = []
    for ty in range(0, h, tile):
        for tx in range(0, w, tile):
            block = labels[ty:ty + tile, tx:tx + tile]
            flat = block.ravel().astype(np.int64)
            valid = flat < num_classes
            cls = flat[valid]
            if cls.size == 0:
                continue
            yy, xx = np.divmod(np.flatnonzero(valid), block.shape[1])
            count = np.bincount(cls, minlength=num_classes)
            my = np.bincount(cls, weights=yy, minlength=num_classes) / np.maximum(count, 1)
            mx = np.bincount(cls, weights=xx, minlength=num_classes) / np.maximum(count, 1)
            for c in np.flatnonzero(count):
                sel = cls == c
                d = (yy[sel] - my[c]) ** 2 + (xx[sel] - mx[c]) ** 2
                k = int(np.argmin(d))
                out.append((int(c), int(yy[sel][k]) + ty, int(xx[sel][k]) + tx))
    return out


def _cache_path(frames: Frames, tile: int, num_classes: int, cache: str | None, out_dir: Path) -> Path | None:
    if cache is None:
        return None
    h = hashlib.sha256()
    h.update(f"v1 {tile} {num_classes}\n".encode())
    for p in frames.labels:
        st = p.stat()
        h.update(f"{p.resolve()} {st.st_size} {int(st.st_mtime)}\n".encode())
    name = f"centroids-{frames.split}-{h.hexdigest()[:16]}.json"
    if cache != "auto":
        p = Path(cache).expanduser()
        return p / name if p.is_dir() else p
    base = Path(os.environ.get("SML_CACHE", Path.home() / ".cache" / "sml")).expanduser()
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return base / name
    except OSError:
        pass
    return out_dir / name


def class_centroids(frames: Frames, tile: int, num_classes: int, cache: str | None = "auto",
                    out_dir: str | Path = ".") -> Centroids:
    """Centroids of every class in every tile of every frame (computed on rank 0, cached, shared)."""
    path = _cache_path(frames, tile, num_classes, cache, Path(out_dir))
    result: Centroids | None = None
    if path is not None and path.is_file():
        try:
            raw = json.loads(path.read_text())
            result = {int(c): [tuple(t) for t in v] for c, v in raw["centroids"].items()}  # type: ignore[misc]
        except (OSError, ValueError, KeyError):
            result = None   # a damaged cache is recomputed, not trusted
    if result is None:
        if du.is_main():
            result = {}
            for i in progress(range(len(frames)), total=len(frames), desc="class centroids"):
                for c, y, x in tile_centroids(frames.load_labels(i), tile, num_classes):
                    result.setdefault(c, []).append((i, y, x))
            if path is not None:
                atomic.write_json(path, {"tile": tile, "num_classes": num_classes, "frames": len(frames),
                                         "centroids": {str(c): v for c, v in sorted(result.items())}}, indent=0)
        result = du.broadcast_object(result)
    assert result is not None
    return result


@dataclass(frozen=True)
class Item:
    frame: int
    cls: int = -1            # -1: a random crop; else the crop is centred on a pixel of this class
    y: int = 0
    x: int = 0


class CropStream:
    """The endless, deterministic sequence of training items (see the module docstring)."""

    def __init__(self, num_frames: int, centroids: Centroids | None, share: float, seed: int) -> None:
        self.num_frames = num_frames
        self.share = share if centroids else 0.0
        self.seed = seed
        self.classes = sorted(c for c, v in (centroids or {}).items() if v)
        self.centroids = centroids or {}

    @lru_cache(maxsize=4)
    def epoch(self, e: int) -> list[Item]:
        """The ``N`` items of epoch ``e`` in order."""
        n = self.num_frames
        rng = np.random.default_rng([self.seed, e, 0x5EED])
        n_uni = int(round(self.share * n)) if self.classes else 0
        items = [Item(int(f)) for f in rng.permutation(n)[: n - n_uni]]
        if n_uni:
            cls = rng.integers(0, len(self.classes), n_uni)
            pick = rng.random(n_uni)
            for c_idx, u in zip(cls, pick):
                c = self.classes[int(c_idx)]
                f, y, x = self.centroids[c][int(u * len(self.centroids[c]))]
                items.append(Item(int(f), c, int(y), int(x)))
        order = rng.permutation(n)
        return [items[int(k)] for k in order]

    def __getitem__(self, position: int) -> Item:
        e, k = divmod(int(position), self.num_frames)
        return self.epoch(e)[k]


class TrainSet(torch.utils.data.Dataset):
    """Map-style view of the stream: index = global stream position -> (image, labels) crop."""

    def __init__(self, frames: Frames, stream: CropStream, cfg: DataConfig, seed: int) -> None:
        self.frames, self.stream, self.cfg, self.seed = frames, stream, cfg, seed

    def __len__(self) -> int:   # the stream is endless; DataLoader only asks with a batch sampler
        return 2**62

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.stream[position]
        image, labels = self.frames.load(item.frame)
        rng = np.random.default_rng([self.seed, int(position), 0xA06])
        centre = None if item.cls < 0 else (float(item.y), float(item.x))
        x, y = augment(image, labels, self.cfg, rng, centre=centre)
        return torch.from_numpy(x), torch.from_numpy(y)


class StreamBatchSampler(torch.utils.data.Sampler[list[int]]):
    """This rank's share of global batches ``start .. stop - 1``.

    Global iteration ``i`` consumes stream positions ``i*B .. i*B + B - 1``;
    rank ``r`` of ``W`` takes the ``r``-th contiguous ``B / W`` of them, so the
    union over ranks is exactly the single-process batch.
    """

    def __init__(self, start: int, stop: int, global_batch: int, rank: int = 0, world: int = 1) -> None:
        if global_batch % world:
            from sml.errors import InputError
            raise InputError(f"data.batch_size={global_batch} is not divisible by the number of processes "
                             f"({world}); set data.batch_size to a multiple of {world}")
        self.start, self.stop, self.batch, self.rank, self.world = start, stop, global_batch, rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        b = self.batch // self.world
        for i in range(self.start, self.stop):
            first = i * self.batch + self.rank * b
            yield list(range(first, first + b))

