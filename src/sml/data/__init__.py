"""Data-set loaders (``datasets.md``) and image decoding.

>>> from sml.data import open_dataset
>>> ds = open_dataset("road-anomaly:/data/RoadAnomaly_jpg")       # doctest: +SKIP
>>> print(ds.describe()); s = ds[0]; s.image.shape, s.labels.shape  # doctest: +SKIP

Opening checks pairing, frame counts and the root folder; loading a sample
maps labels to one convention (anomaly sets 1 / 0 / 255 void, Cityscapes
train ids 0..18 / 255) and rejects unexpected values.
"""
from __future__ import annotations

from sml.data.base import IGNORE_INDEX, Dataset, Frame, Sample
from sml.data.benchmarks import RoadAnomaly, SMIYCAnomaly, SMIYCObstacle
from sml.data.cityscapes import Cityscapes, FishyscapesLAF, FishyscapesStatic, LostAndFound
from sml.data.folder import Folder, parse_mapping
from sml.data.io import IMAGE_EXTENSIONS, image_size, read_image, read_labels
from sml.data.registry import DATASETS, canonical_kind, dataset_help, label_table, open_dataset, parse_spec

__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "IMAGE_EXTENSIONS",
    "Cityscapes",
    "Dataset",
    "FishyscapesLAF",
    "FishyscapesStatic",
    "Folder",
    "Frame",
    "LostAndFound",
    "RoadAnomaly",
    "SMIYCAnomaly",
    "SMIYCObstacle",
    "Sample",
    "canonical_kind",
    "dataset_help",
    "image_size",
    "label_table",
    "open_dataset",
    "parse_mapping",
    "parse_spec",
    "read_image",
    "read_labels",
]
