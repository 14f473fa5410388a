"""Labelled Cityscapes-layout frames for training and validation.

A thin view over :mod:`sml.data`'s ``cityscapes`` loader (one loader serves
evaluation and training): training needs the list of label files without
decoding any image (the centroid cache is keyed on it) and train-id labels.
Frames without a label file cannot be trained on and are skipped (the count
is reported).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sml.data import open_dataset
from sml.data.base import Dataset, Frame
from sml.data.registry import label_table
from sml.errors import DataError


def label_id_to_train_id() -> np.ndarray:
    """256-entry lookup table: Cityscapes label id -> train id (255 for everything not trained on)."""
    return label_table("cityscapes")


@dataclass
class Frames:
    """The labelled frames of one split of a Cityscapes-layout data set, sorted by frame id."""

    dataset: Dataset
    frames: list[Frame]
    skipped: int = 0   # images found without a label file
    split: str = field(init=False)

    def __post_init__(self) -> None:
        self.split = str(self.dataset.split)

    @property
    def root(self) -> Path:
        return Path(self.dataset.root)

    @property
    def ids(self) -> list[str]:
        return [f.id for f in self.frames]

    @property
    def images(self) -> list[Path]:
        return [f.image_path for f in self.frames]

    @property
    def labels(self) -> list[Path]:
        return [f.label_path for f in self.frames]  # type: ignore[misc]

    def __len__(self) -> int:
        return len(self.frames)

    def load_labels(self, i: int) -> np.ndarray:
        """Train-id labels (uint8 H x W, 255 = ignore) of frame ``i``."""
        return self.dataset.load_labels(self.frames[i])

    def load_image(self, i: int) -> np.ndarray:
        """RGB uint8 H x W x 3 image of frame ``i``."""
        return self.dataset.load(self.frames[i], labels=False).image

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image and train-id labels of frame ``i`` (sizes checked by the loader)."""
        sample = self.dataset.load(self.frames[i])
        return sample.image, sample.labels  # type: ignore[return-value]


def cityscapes_frames(root: str | Path, split: str) -> Frames:
    """The labelled frames of ``root`` (Cityscapes layout) in ``split``; error if there are none."""
    ds = open_dataset("cityscapes", root=str(Path(root).expanduser()), split=split, labels_required=False)
    labelled = [f for f in ds.frames if f.label_path is not None]
    if not labelled:
        raise DataError(f"no labelled frames in {ds.describe()}: training needs gtFine/{split}/<city>/"
                        "*_gtFine_labelIds.png beside the images; check data.root and the split name")
    return Frames(ds, labelled, len(ds.frames) - len(labelled))
