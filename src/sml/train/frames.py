"""Labelled Cityscapes-layout frames for training and validation.

Training needs the list of label files without decoding any image (the
centroid cache is keyed on it) and train-id labels; this module provides that
on top of the Cityscapes layout of ``datasets.md``. Frames without a label
file cannot be trained on and are skipped (the count is reported).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from sml.errors import DataError

_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")


@lru_cache(maxsize=1)
def label_id_to_train_id() -> np.ndarray:
    """256-entry lookup table: Cityscapes label id -> train id (255 for everything not trained on)."""
    from cityscapesscripts.helpers.labels import labels

    lut = np.full(256, 255, dtype=np.uint8)
    for lab in labels:
        if 0 <= lab.id < 256 and 0 <= lab.trainId < 255:
            lut[lab.id] = lab.trainId
    return lut


@dataclass
class Frames:
    """Paired image / label files of one split, sorted by frame id."""

    root: Path
    split: str
    ids: list[str]
    images: list[Path]
    labels: list[Path]
    skipped: int = 0   # images found without a label file

    def __len__(self) -> int:
        return len(self.ids)

    def load_labels(self, i: int) -> np.ndarray:
        """Train-id labels (uint8 H x W, 255 = ignore) of frame ``i``."""
        path = self.labels[i]
        arr = np.asarray(Image.open(path))
        if arr.ndim != 2:
            raise DataError(f"label file {path} is not a single-channel image (shape {arr.shape})")
        if path.name.endswith("_labelTrainIds.png"):
            return arr.astype(np.uint8, copy=False)
        return label_id_to_train_id()[arr]

    def load_image(self, i: int) -> np.ndarray:
        """RGB uint8 H x W x 3 image of frame ``i``."""
        with Image.open(self.images[i]) as im:
            return np.asarray(im.convert("RGB"))

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image, labels = self.load_image(i), self.load_labels(i)
        if image.shape[:2] != labels.shape:
            raise DataError(f"image {self.images[i]} is {image.shape[1]}x{image.shape[0]} but its labels "
                            f"{self.labels[i]} are {labels.shape[1]}x{labels.shape[0]}")
        return image, labels


def _nested(root: Path, name: str) -> Path:
    # The released zips nest as leftImg8bit_trainvaltest/leftImg8bit/...
    for cand in (root / name, root / f"{name}_trainvaltest" / name):
        if cand.is_dir():
            return cand
    return root / name


def cityscapes_frames(root: str | Path, split: str) -> Frames:
    """The labelled frames of ``root`` (Cityscapes layout) in ``split``; error if there are none."""
    root = Path(root).expanduser()
    img_dir = _nested(root, "leftImg8bit") / split
    gt_dir = _nested(root, "gtFine") / split
    if not img_dir.is_dir():
        raise DataError(f"no Cityscapes images at {img_dir}: data.root must hold leftImg8bit/{split}/<city>/ "
                        f"(and gtFine/{split}/<city>/); set data.root=PATH")
    ids, images, labels, skipped = [], [], [], 0
    for img in sorted(p for p in img_dir.glob("*/*_leftImg8bit.*") if p.suffix.lower() in _IMAGE_EXTS):
        stem = img.name[: -len("_leftImg8bit" + img.suffix)]
        city = img.parent.name
        lab = None
        for suffix in ("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png"):
            cand = gt_dir / city / f"{stem}{suffix}"
            if cand.is_file():
                lab = cand
                break
        if lab is None:
            skipped += 1
            continue
        ids.append(stem)
        images.append(img)
        labels.append(lab)
    if not ids:
        raise DataError(f"no labelled frames under {img_dir} with labels in {gt_dir} "
                        f"({skipped} images without *_gtFine_labelIds.png); check data.root and the split name")
    return Frames(root, split, ids, images, labels, skipped)
