"""Loaders on the real data in ../shared/data (read through the ``shared`` fixture)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sml.data import open_dataset
from sml.errors import DataError


def _pil_labels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _reference_train_ids(raw: np.ndarray) -> np.ndarray:
    """Per-value mapping through cityscapesscripts' id2label, written out literally."""
    from cityscapesscripts.helpers.labels import id2label

    out = np.full(raw.shape, 255, np.uint8)
    for v in np.unique(raw):
        t = id2label[int(v)].trainId
        out[raw == v] = 255 if t in (255, -1) else t
    return out


def test_cityscapes_mini_train(shared):
    root = shared / "data" / "cityscapes_mini"
    ds = open_dataset(f"cityscapes:{root}")
    assert (len(ds), ds.num_labelled, ds.split, ds.task) == (188, 8, "train", "segmentation")
    assert sum(f.image_path.suffix == ".jpg" for f in ds.frames) == 174
    labelled = sorted(f.id for f in ds.frames if f.label_path is not None)
    assert labelled == [f"aachen_00000{i}_000019" for i in range(8)]
    s = ds[ds.index("aachen_000003_000019")]
    assert s.image.shape == (1024, 2048, 3) and s.image.dtype == np.uint8
    np.testing.assert_array_equal(s.labels, _reference_train_ids(_pil_labels(s.label_path)))
    assert s.image_path.name == "aachen_000003_000019_leftImg8bit.png"
    with pytest.raises(DataError, match="180 of 188 images without a label file"):
        open_dataset(f"cityscapes:{root}", labels_required=True)


def test_cityscapes_mini_jpeg_frames_decode_at_full_resolution(shared):
    ds = open_dataset(f"cityscapes:{shared / 'data' / 'cityscapes_mini'}")
    f = next(f for f in ds.frames if f.image_path.suffix == ".jpg")
    s = ds.load(f)
    assert s.labels is None
    np.testing.assert_array_equal(s.image, np.asarray(Image.open(f.image_path).convert("RGB")))


def test_cityscapes_mini_val_and_wrong_root(shared):
    ds = open_dataset("cityscapes", root=shared / "data" / "cityscapes_mini", split="val", labels_required=True)
    assert ds.ids == ["frankfurt_000000_000576"]
    s = ds[0]
    np.testing.assert_array_equal(s.labels, _reference_train_ids(_pil_labels(s.label_path)))
    with pytest.raises(DataError, match=rf"Did you mean --data cityscapes:{shared / 'data' / 'cityscapes_mini'}\?"):
        open_dataset(f"cityscapes:{shared / 'data'}")


def test_road_anomaly_release(shared):
    root = shared / "data" / "road_anomaly" / "RoadAnomaly_jpg"
    ds = open_dataset(f"road-anomaly:{root}")
    names = json.loads((root / "frame_list.json").read_text())
    assert len(ds) == 60 and ds.ids == [n.rsplit(".", 1)[0] for n in names] and ds.num_labelled == 60
    s = ds[0]
    assert s.image.shape == (720, 1280, 3)
    raw = _pil_labels(s.label_path)
    np.testing.assert_array_equal(s.labels, (raw == 2).astype(np.uint8))
    assert set(np.unique(s.labels)) <= {0, 1}


@pytest.mark.parametrize(
    "kind,folder,n,shape",
    [("smiyc-anomaly", "dataset_AnomalyTrack", 10, (720, 1280)), ("smiyc-obstacle", "dataset_ObstacleTrack", 30, (1080, 1920))],
)
def test_smiyc_tracks(shared, kind, folder, n, shape):
    root = shared / "data" / "smiyc" / folder
    ds = open_dataset(f"{kind}:{root}")
    assert (len(ds), ds.num_labelled) == (n, n)
    assert ds.ids[:3] == ["0", "1", "2"]
    s = ds[ds.index("1")]
    assert s.image.shape == (*shape, 3) and s.labels.shape == shape
    np.testing.assert_array_equal(s.labels, _pil_labels(s.label_path))
    with pytest.raises(DataError, match=rf"Did you mean --data {kind}:{root}\?"):
        open_dataset(f"{kind}:{root.parent}")


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    ["road-anomaly:road_anomaly/RoadAnomaly_jpg", "smiyc-anomaly:smiyc/dataset_AnomalyTrack",
     "smiyc-obstacle:smiyc/dataset_ObstacleTrack", "cityscapes:cityscapes_mini"],
)
def test_validate_real_sets_against_independent_counts(shared, spec):
    kind, rel = spec.split(":")
    ds = open_dataset(f"{kind}:{shared / 'data' / rel}")
    report = ds.validate()
    ref = np.zeros(256, np.int64)
    for f in ds.frames:
        if f.label_path is None:
            continue
        raw = _pil_labels(f.label_path)
        assert Image.open(f.image_path).size == raw.shape[::-1]
        mapped = {"road-anomaly": lambda r: (r == 2).astype(np.uint8), "cityscapes": _reference_train_ids}.get(kind, lambda r: r)(raw)
        ref += np.bincount(mapped.ravel(), minlength=256)
    assert report["values"] == {int(v): int(ref[v]) for v in np.flatnonzero(ref)}
    assert report["labelled"] == ds.num_labelled
    allowed = set(range(19)) | {255} if kind == "cityscapes" else {0, 1, 255}
    assert set(report["values"]) <= allowed and 1 in report["values"]
