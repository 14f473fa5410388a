"""Loaders on small trees built here in the exact layouts of datasets.md (tiny images)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sml.data import DATASETS, Dataset, Frame, Sample, open_dataset, parse_mapping, parse_spec
from sml.errors import DataError, InputError

H, W = 4, 6
RNG = np.random.default_rng(1)


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def rgb(h: int = H, w: int = W) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def labels_from(values, h: int = H, w: int = W) -> np.ndarray:
    return RNG.choice(np.asarray(values, dtype=np.uint8), size=(h, w))


def fishyscapes_tree(root: Path, n: int, nested: bool = True, values=(0, 1, 255)) -> dict[str, np.ndarray]:
    """Fishyscapes layout: leftImg8bit_trainvaltest/leftImg8bit/val/<city>/, gtFine_trainvaltest/gtFine/val/<city>/."""
    img = root / "leftImg8bit_trainvaltest" / "leftImg8bit" if nested else root / "leftImg8bit"
    gt = root / "gtFine_trainvaltest" / "gtFine" if nested else root / "gtFine"
    out = {}
    for i in range(n):
        city = ("city_a", "city_b")[i % 2]
        fid = f"{city}_{i:06d}_000019"
        save(img / "val" / city / f"{fid}_leftImg8bit.png", rgb())
        lab = labels_from(values)
        save(gt / "val" / city / f"{fid}_gtFine_labelIds.png", lab)
        out[fid] = lab
    return out


# ----------------------------------------------------------------------------- registry and spec parsing
def test_registry_names_and_descriptions():
    assert list(DATASETS) == [
        "cityscapes", "fishyscapes-laf", "fishyscapes-static", "road-anomaly",
        "smiyc-anomaly", "smiyc-obstacle", "lost-and-found", "folder",
    ]
    for kind, cls in DATASETS.items():
        assert issubclass(cls, Dataset) and cls.kind == kind and cls.description and "\n" not in cls.description


def test_parse_spec():
    assert parse_spec("road-anomaly:/a/b:c") == ("road-anomaly", "/a/b:c")
    assert parse_spec("Road_Anomaly") == ("road-anomaly", None)
    assert parse_spec("fs-laf:x") == ("fishyscapes-laf", "x")
    with pytest.raises(InputError, match="Did you mean 'road-anomaly'"):
        parse_spec("road-anomly:/x")
    with pytest.raises(InputError, match="names no folder"):
        parse_spec("cityscapes:")


def test_open_dataset_argument_errors(tmp_path):
    fishyscapes_tree(tmp_path, 30)
    with pytest.raises(InputError, match="no folder"):
        open_dataset("fishyscapes-static")
    ds = open_dataset("fishyscapes-static", root=tmp_path)
    assert len(ds) == 30
    with pytest.raises(InputError, match="given twice"):
        open_dataset(f"fishyscapes-static:{tmp_path}", root=tmp_path / "x")
    with pytest.raises(InputError, match="folder kind only"):
        open_dataset(f"fishyscapes-static:{tmp_path}", mapping={0: 0})
    with pytest.raises(InputError, match="unknown split"):
        open_dataset(f"fishyscapes-static:{tmp_path}", split="train")
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(f"fishyscapes-static:{tmp_path / 'missing'}")


# ----------------------------------------------------------------------------- fishyscapes
@pytest.mark.parametrize("kind,n", [("fishyscapes-laf", 100), ("fishyscapes-static", 30)])
def test_fishyscapes_full_release(tmp_path, kind, n):
    truth = fishyscapes_tree(tmp_path, n)
    ds = open_dataset(f"{kind}:{tmp_path}")
    assert (len(ds), ds.kind, ds.task, ds.split, ds.has_labels, ds.num_labelled) == (n, kind, "anomaly", "val", True, n)
    assert set(ds.ids) == set(truth)
    assert ds.smiyc_name == {"fishyscapes-laf": "FishyLAFAnomaly-val", "fishyscapes-static": None}[kind]
    assert all(isinstance(f, Frame) and f.label_path is not None for f in ds.frames)
    s = ds[3]
    assert isinstance(s, Sample) and s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
    np.testing.assert_array_equal(s.labels, truth[s.id])
    report = ds.validate()
    ref = np.bincount(np.concatenate([v.ravel() for v in truth.values()]), minlength=256)
    assert report == {"frames": n, "labelled": n, "values": {int(v): int(ref[v]) for v in np.flatnonzero(ref)}}


def test_fishyscapes_frame_count_checked_and_relaxed(tmp_path):
    fishyscapes_tree(tmp_path, 7, nested=False)
    with pytest.raises(DataError, match=r"only 7 frames.*100.*--allow-subset"):
        open_dataset(f"fishyscapes-laf:{tmp_path}")
    ds = open_dataset(f"fishyscapes-laf:{tmp_path}", allow_subset=True)
    assert len(ds) == 7 and "subset" in ds.describe()


def test_fishyscapes_too_many_frames(tmp_path):
    fishyscapes_tree(tmp_path, 31)
    with pytest.raises(DataError, match=r"31 frames.*has 30"):
        open_dataset(f"fishyscapes-static:{tmp_path}")


def test_fishyscapes_missing_label_and_orphan_label(tmp_path):
    truth = fishyscapes_tree(tmp_path, 30)
    gt = tmp_path / "gtFine_trainvaltest" / "gtFine" / "val"
    victim = sorted(truth)[4]
    lab = next(gt.rglob(f"{victim}_gtFine_labelIds.png"))
    lab.rename(lab.with_name("stray_000001_000019_gtFine_labelIds.png"))
    with pytest.raises(DataError, match=rf"1 of 30 images without a label file: .*{victim}_leftImg8bit\.png.*Also, "
                       r"1 label file without a matching image: .*stray_000001_000019_gtFine_labelIds\.png"):
        open_dataset(f"fishyscapes-static:{tmp_path}")
    # with the unlabelled image removed only the orphan label is left
    next(tmp_path.rglob(f"{victim}_leftImg8bit.png")).unlink()
    with pytest.raises(DataError, match=r"1 label file without a matching image: .*stray_000001_000019_gtFine_labelIds\.png"):
        open_dataset(f"fishyscapes-static:{tmp_path}")
    ds = open_dataset(f"fishyscapes-static:{tmp_path}", allow_subset=True)
    assert len(ds) == 29 and "1 label file without image ignored" in ds.describe()


def test_fishyscapes_unexpected_values_and_size_mismatch(tmp_path):
    truth = fishyscapes_tree(tmp_path, 30)
    gt = tmp_path / "gtFine_trainvaltest" / "gtFine" / "val"
    ids = sorted(truth)
    bad = np.zeros((H, W), np.uint8)
    bad[0, :3] = 7
    bad[1, 0] = 2
    bad_path = save(next(gt.rglob(f"{ids[0]}_gtFine_labelIds.png")), bad)
    small_path = save(next(gt.rglob(f"{ids[1]}_gtFine_labelIds.png")), np.zeros((H, W - 1), np.uint8))
    ds = open_dataset(f"fishyscapes-static:{tmp_path}")  # values and sizes are checked on load, not open
    with pytest.raises(DataError, match=rf"{bad_path.name} holds unexpected values 2 \(1 px\), 7 \(3 px\)"):
        ds[ds.index(ids[0])]
    with pytest.raises(DataError, match=rf"is {W}x{H} but its labels .*{small_path.name} are {W - 1}x{H}"):
        ds[ds.index(ids[1])]
    s = ds.load(ds.frames[ds.index(ids[0])], labels=False)  # images alone still load
    assert s.labels is None
    with pytest.raises(DataError, match=r"2 frames .* failed validation") as err:
        ds.validate()
    assert bad_path.name in str(err.value) and small_path.name in str(err.value)


def test_wrong_root_suggestions(tmp_path):
    fishyscapes_tree(tmp_path / "fs", 30, nested=False)
    with pytest.raises(DataError, match=rf"Did you mean --data fishyscapes-static:{tmp_path / 'fs'}\?"):
        open_dataset(f"fishyscapes-static:{tmp_path}")  # the parent
    with pytest.raises(DataError, match=rf"Did you mean --data fishyscapes-static:{tmp_path / 'fs'}\?"):
        open_dataset(f"fishyscapes-static:{tmp_path / 'fs' / 'leftImg8bit' / 'val'}")  # a child
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no leftImg8bit folder"):
        open_dataset(f"fishyscapes-static:{empty}")


def test_duplicate_frame_ids_rejected(tmp_path):
    fishyscapes_tree(tmp_path, 30)
    png = next(tmp_path.rglob("*_leftImg8bit.png"))
    Image.open(png).save(png.with_suffix(".jpg"))
    with pytest.raises(DataError, match="two images give the frame id"):
        open_dataset(f"fishyscapes-static:{tmp_path}")


# ----------------------------------------------------------------------------- cityscapes
def cityscapes_tree(root: Path, nested: bool = False) -> dict[str, np.ndarray]:
    img = root / "leftImg8bit_trainvaltest" / "leftImg8bit" if nested else root / "leftImg8bit"
    gt = root / "gtFine_trainvaltest" / "gtFine" if nested else root / "gtFine"
    truth = {}
    all_ids = np.arange(34, dtype=np.uint8)
    for i, (city, ext) in enumerate([("aachen", "png"), ("aachen", "jpg"), ("bonn", "png"), ("bonn", "png")]):
        fid = f"{city}_{i:06d}_000019"
        Image.fromarray(rgb()).save(_mk(img / "train" / city / f"{fid}_leftImg8bit.{ext}"))
        if i == 1:
            continue  # unlabelled JPEG frame, as in the mini set
        raw = labels_from(all_ids)
        truth[fid] = raw
        save(gt / "train" / city / f"{fid}_gtFine_labelIds.png", raw)
        save(gt / "train" / city / f"{fid}_gtFine_color.png", rgb())  # must be ignored
    return truth


def _mk(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def reference_train_ids(raw: np.ndarray) -> np.ndarray:
    """Literal per-pixel mapping through the official table (independent of the LUT code)."""
    from cityscapesscripts.helpers.labels import id2label

    out = np.empty_like(raw)
    for idx, v in np.ndenumerate(raw):
        t = id2label[int(v)].trainId
        out[idx] = 255 if t in (255, -1) else t
    return out


@pytest.mark.parametrize("nested", [False, True])
def test_cityscapes_train_ids_and_optional_labels(tmp_path, nested):
    truth = cityscapes_tree(tmp_path, nested)
    ds = open_dataset(f"cityscapes:{tmp_path}")
    assert ds.task == "segmentation" and ds.split == "train" and len(ds) == 4 and ds.num_labelled == 3
    assert ds.ids == ["aachen_000000_000019", "aachen_000001_000019", "bonn_000002_000019", "bonn_000003_000019"]
    assert ds.class_names[:3] == ("road", "sidewalk", "building") and len(ds.class_names) == 19
    for s in ds:
        if s.id in truth:
            np.testing.assert_array_equal(s.labels, reference_train_ids(truth[s.id]))
        else:
            assert s.labels is None and s.label_path is None and s.image_path.suffix == ".jpg"
    with pytest.raises(DataError, match=r"1 of 4 images without a label file: .*aachen_000001_000019_leftImg8bit\.jpg"):
        open_dataset(f"cityscapes:{tmp_path}", labels_required=True)


def test_cityscapes_prefers_train_id_files_and_rejects_unknown_ids(tmp_path):
    truth = cityscapes_tree(tmp_path)
    fid = "bonn_000002_000019"
    tid = reference_train_ids(truth[fid])
    tid[0, 0] = 18
    save(tmp_path / "gtFine" / "train" / "bonn" / f"{fid}_gtFine_labelTrainIds.png", tid)
    ds = open_dataset(f"cityscapes:{tmp_path}")
    f = ds.frames[ds.index(fid)]
    assert f.label_path.name.endswith("_labelTrainIds.png")
    np.testing.assert_array_equal(ds.load(f).labels, tid)
    save(tmp_path / "gtFine" / "train" / "bonn" / f"{fid}_gtFine_labelTrainIds.png", np.full((H, W), 19, np.uint8))
    with pytest.raises(DataError, match=r"unexpected values 19 \(24 px\)"):
        ds.load(f)
    save(ds.frames[0].label_path, np.full((H, W), 40, np.uint8))
    with pytest.raises(DataError, match=r"unexpected values 40 \(24 px\).*label ids are 0\.\.33"):
        ds[0]


def test_cityscapes_missing_split_lists_existing(tmp_path):
    cityscapes_tree(tmp_path)
    with pytest.raises(DataError, match=r"no split 'val' .*found: train"):
        open_dataset(f"cityscapes:{tmp_path}", split="val")


# ----------------------------------------------------------------------------- lost and found
def test_lost_and_found_mapping_and_unlabelled_frames(tmp_path):
    raws = {}
    for i in range(5):
        city = "04_Maurener_Weg_8" if i < 3 else "13_Elberfelder_Str"
        fid = f"{city}_{i:06d}_000030"
        save(tmp_path / "leftImg8bit" / "test" / city / f"{fid}_leftImg8bit.png", rgb())
        if i == 4:
            continue
        raw = labels_from(np.arange(0, 201, dtype=np.uint8))
        raw[0, :3] = [0, 1, 2]
        raws[fid] = raw
        save(tmp_path / "gtCoarse" / "test" / city / f"{fid}_gtCoarse_labelIds.png", raw)
    with pytest.raises(DataError, match="has 1203 frames"):
        open_dataset(f"lost-and-found:{tmp_path}")
    ds = open_dataset(f"lost-and-found:{tmp_path}", allow_subset=True)
    assert (len(ds), ds.num_labelled, ds.split) == (5, 4, "test")
    assert ds.smiyc_name == "LostAndFound-test"
    for s in ds:
        if s.id not in raws:
            assert s.labels is None
            continue
        raw = raws[s.id]
        expected = np.where(raw == 0, 255, np.where(raw == 1, 0, 1))
        np.testing.assert_array_equal(s.labels, expected)
    with pytest.raises(DataError, match="1 of 5 images without a label file"):
        open_dataset(f"lost-and-found:{tmp_path}", labels_required=True, allow_subset=True)


# ----------------------------------------------------------------------------- road anomaly
def road_anomaly_tree(root: Path, n: int) -> dict[str, np.ndarray]:
    frames = root / "frames"
    names, truth = [], {}
    for i in range(n):
        name = f"animals{i:02d}_some_place"
        names.append(f"{name}.jpg")
        Image.fromarray(rgb()).save(_mk(frames / f"{name}.jpg"), quality=95)
        lab = labels_from([0, 2])
        save(frames / f"{name}.labels" / "labels_semantic.png", lab)
        truth[name] = lab
    (root / "frame_list.json").write_text(json.dumps(names))
    return truth


def test_road_anomaly_maps_two_to_one(tmp_path):
    truth = road_anomaly_tree(tmp_path, 60)
    ds = open_dataset(f"road-anomaly:{tmp_path}")
    assert len(ds) == 60 and ds.ids == list(truth)
    s = ds[5]
    np.testing.assert_array_equal(s.labels, (truth[s.id] == 2).astype(np.uint8))
    with pytest.raises(InputError, match="no splits"):
        open_dataset(f"road-anomaly:{tmp_path}", split="test")


def test_road_anomaly_count_missing_listed_and_values(tmp_path):
    truth = road_anomaly_tree(tmp_path, 12)
    with pytest.raises(DataError, match=r"only 12 frames.*60.*--allow-subset"):
        open_dataset(f"road-anomaly:{tmp_path}")
    (tmp_path / "frames" / f"{list(truth)[0]}.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of the 12 images listed in .*frame_list\.json are missing"):
        open_dataset(f"road-anomaly:{tmp_path}")
    ds = open_dataset(f"road-anomaly:{tmp_path}", allow_subset=True)
    assert len(ds) == 11
    save(ds.frames[0].label_path, np.ones((H, W), np.uint8))  # 1 is not a Road Anomaly label
    with pytest.raises(DataError, match=r"unexpected values 1 \(24 px\); expected \{0, 2\}"):
        ds[0]


def test_road_anomaly_wrong_root_and_no_list(tmp_path):
    road_anomaly_tree(tmp_path / "RoadAnomaly_jpg", 60)
    with pytest.raises(DataError, match=rf"Did you mean --data road-anomaly:{tmp_path / 'RoadAnomaly_jpg'}\?"):
        open_dataset(f"road-anomaly:{tmp_path}")
    (tmp_path / "RoadAnomaly_jpg" / "frame_list.json").unlink()
    ds = open_dataset(f"road-anomaly:{tmp_path / 'RoadAnomaly_jpg'}")
    assert len(ds) == 60 and "frame_list.json" in ds.describe()


# ----------------------------------------------------------------------------- SegmentMeIfYouCan
@pytest.mark.parametrize("kind,ext", [("smiyc-anomaly", "jpg"), ("smiyc-obstacle", "webp")])
def test_smiyc_labelled_and_unlabelled(tmp_path, kind, ext):
    truth = {}
    for i in range(12):
        Image.fromarray(rgb()).save(_mk(tmp_path / "images" / f"{i}.{ext}"))
        if i < 10:
            truth[str(i)] = save(tmp_path / "labels_masks" / f"{i}_labels_semantic.png", labels_from([0, 1, 255]))
            save(tmp_path / "labels_masks" / f"{i}_labels_semantic_color.png", rgb())  # ignored
    ds = open_dataset(f"{kind}:{tmp_path}")
    assert ds.ids == [str(i) for i in range(12)]  # natural order
    assert (len(ds), ds.num_labelled) == (12, 10)
    assert ds[11].labels is None
    np.testing.assert_array_equal(ds[2].labels, np.asarray(Image.open(truth["2"])))
    with pytest.raises(DataError, match="2 of 12 images without a label file"):
        open_dataset(f"{kind}:{tmp_path}", labels_required=True)
    save(tmp_path / "labels_masks" / "99_labels_semantic.png", labels_from([0, 1]))
    with pytest.raises(DataError, match=r"without a matching image: .*99_labels_semantic\.png"):
        open_dataset(f"{kind}:{tmp_path}")
    assert len(open_dataset(f"{kind}:{tmp_path}", allow_subset=True)) == 12


def test_smiyc_empty_and_parent(tmp_path):
    (tmp_path / "dataset_ObstacleTrack" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        open_dataset(f"smiyc-obstacle:{tmp_path / 'dataset_ObstacleTrack'}")
    with pytest.raises(DataError, match=rf"Did you mean --data smiyc-obstacle:{tmp_path / 'dataset_ObstacleTrack'}\?"):
        open_dataset(f"smiyc-obstacle:{tmp_path}")


# ----------------------------------------------------------------------------- folder
def test_folder_root_with_images_and_labels(tmp_path):
    raws = {}
    for name in ("b", "a", "c"):
        Image.fromarray(rgb()).save(_mk(tmp_path / "images" / f"{name}.jpg"))
        if name != "c":
            raws[name] = save(tmp_path / "labels" / f"{name}.png", labels_from([0, 10, 20]))
    ds = open_dataset(f"folder:{tmp_path}", mapping="0:0,10:1,*:255")
    assert ds.ids == ["a", "b", "c"] and ds.num_labelled == 2 and ds.task == "anomaly"
    raw = np.asarray(Image.open(raws["a"]))
    np.testing.assert_array_equal(ds[0].labels, np.select([raw == 0, raw == 10], [0, 1], 255))
    assert ds[2].labels is None
    # without a mapping the masks must already be 0/1/255
    with pytest.raises(DataError, match=r"unexpected values 10 .*20 .*mapping"):
        open_dataset(f"folder:{tmp_path}")[0]


def test_folder_two_dirs_suffix_and_images_only(tmp_path):
    for name in ("x1", "x2"):
        Image.fromarray(rgb()).save(_mk(tmp_path / "imgs" / f"{name}.png"))
        save(tmp_path / "m" / f"{name}_mask.png", labels_from([0, 1]))
    ds = open_dataset(f"folder:{tmp_path / 'imgs'},{tmp_path / 'm'}", mask_suffix="_mask", mapping={0: 0, 1: 1})
    assert ds.num_labelled == 2 and ds.describe().endswith(f"masks {tmp_path / 'm'}")
    with pytest.raises(DataError, match=r"no mask in .* matches an image stem.*mask_suffix"):
        open_dataset(f"folder:{tmp_path / 'imgs'},{tmp_path / 'm'}")
    only = open_dataset(f"folder:{tmp_path / 'imgs'}")
    assert (len(only), only.has_labels) == (2, False)
    with pytest.raises(DataError, match="no mask folder"):
        open_dataset(f"folder:{tmp_path / 'imgs'}", labels_required=True)
    with pytest.raises(DataError, match=r"no images in .*sub-folders \(imgs, m\)"):
        open_dataset(f"folder:{tmp_path}")


def test_parse_mapping_errors():
    assert parse_mapping({"0": "0", 3: 1, "*": 255}) == ({0: 0, 3: 1}, 255)
    for bad in ("0-1", {0: 5}, {300: 1}, {"x": 1}, {}):
        with pytest.raises(InputError):
            parse_mapping(bad)


def test_safe_ids_and_pickle(tmp_path):
    import pickle

    Image.fromarray(rgb()).save(_mk(tmp_path / "a b#c.png"))
    ds = open_dataset(f"folder:{tmp_path}")
    assert ds.ids == ["a_b_c"]
    clone = pickle.loads(pickle.dumps(ds))  # DataLoader workers receive the data set pickled
    np.testing.assert_array_equal(clone[0].image, ds[0].image)


# ----------------------------------------------------------------------------- mapping vs a literal reference
from hypothesis import given, settings, strategies as st  # noqa: E402

from sml.data import label_table  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    table=st.dictionaries(st.integers(0, 255), st.sampled_from([0, 1, 255]), min_size=1, max_size=12),
    default=st.one_of(st.none(), st.sampled_from([0, 1, 255])),
    seed=st.integers(0, 2**32 - 1),
)
def test_folder_mapping_matches_literal_loop(tmp_path_factory, table, default, seed):
    rng = np.random.default_rng(seed)
    pool = np.array(sorted(table) + [int(rng.integers(0, 256))], dtype=np.uint8)
    raw = rng.choice(pool, size=(3, 5))
    mapping = {**table, **({"*": default} if default is not None else {})}
    root = tmp_path_factory.mktemp("fold")
    Image.fromarray(rgb(3, 5)).save(_mk(root / "images" / "f.png"))
    ds = open_dataset(f"folder:{root}", mapping=mapping)
    unknown = [int(v) for v in np.unique(raw) if int(v) not in table and default is None]
    if unknown:
        with pytest.raises(DataError, match="unexpected values " + str(unknown[0])):
            ds.map_labels(raw)
        return
    expected = np.array([[table.get(int(v), default) for v in row] for row in raw], dtype=np.uint8)
    np.testing.assert_array_equal(ds.map_labels(raw), expected)


def test_label_table_per_kind():
    from cityscapesscripts.helpers.labels import id2label

    ra = label_table("road-anomaly")
    assert (ra[0], ra[1], ra[2], ra[3]) == (0, 255, 1, 255)
    laf = label_table("lost-and-found")
    assert laf[0] == 255 and laf[1] == 0 and (laf[2:201] == 1).all() and (laf[201:] == 255).all()  # as the SMIYC tool
    cs = label_table("cityscapes")
    for i in range(34):
        t = id2label[i].trainId
        assert cs[i] == (255 if t in (255, -1) else t)
    assert (cs[34:] == 255).all()
    assert list(np.flatnonzero(label_table("smiyc-obstacle") != 255)) == [0, 1]
    np.testing.assert_array_equal(label_table("folder", "3:1,*:0")[[0, 3, 200]], [0, 1, 0])
    with pytest.raises(InputError):
        label_table("road-anomaly", mapping={0: 0})


def test_empty_split_and_file_root(tmp_path):
    (tmp_path / "leftImg8bit" / "train" / "aachen").mkdir(parents=True)
    with pytest.raises(DataError, match=r"cityscapes: no frames found under .* \(split train\)\. Expected ROOT/leftImg8bit/train/"):
        open_dataset(f"cityscapes:{tmp_path}")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="is a file"):
        open_dataset(f"smiyc-anomaly:{f}")


def test_dataset_access_protocol(tmp_path):
    fishyscapes_tree(tmp_path, 30)
    ds = open_dataset(f"fishyscapes-static:{tmp_path}")
    assert ds[-1].id == ds.frames[-1].id
    with pytest.raises(IndexError):
        ds[30]
    with pytest.raises(TypeError):
        ds["0"]
    with pytest.raises(InputError, match="no frame with id"):
        ds.index("nope")
    assert [s.id for s in ds] == ds.ids and repr(ds).startswith("<FishyscapesStatic fishyscapes-static at ")


# ----------------------------------------------------------------------------- public releases as published
def _tiny(path: Path, value: int = 0) -> None:
    Image.fromarray(np.full((4, 6), value, np.uint8)).save(_mk(path))


def test_road_anomaly21_full_release(tmp_path):
    from sml.data.releases import ANOMALY_TEST, ANOMALY_VALIDATION

    for fid in ANOMALY_TEST + ANOMALY_VALIDATION:
        Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(_mk(tmp_path / "images" / f"{fid}.jpg"))
    for fid in ANOMALY_VALIDATION:
        _tiny(tmp_path / "labels_masks" / f"{fid}_labels_semantic.png", 1)
    ds = open_dataset(f"smiyc-anomaly:{tmp_path}")
    assert (len(ds), ds.num_labelled, ds.split, ds.smiyc_name) == (110, 10, "all", "AnomalyTrack-all")
    val = open_dataset(f"smiyc-anomaly:{tmp_path}", split="validation")
    assert val.ids == list(ANOMALY_VALIDATION) and val.num_labelled == 10 and val.smiyc_name == "AnomalyTrack-all"
    assert len(open_dataset(f"smiyc-anomaly:{tmp_path}", split="test")) == 100
    (tmp_path / "images" / "cow0003.jpg").unlink()
    with pytest.raises(DataError, match="has 100 frames in the release"):
        open_dataset(f"smiyc-anomaly:{tmp_path}", split="test")
    assert len(open_dataset(f"smiyc-anomaly:{tmp_path}", split="test", allow_subset=True)) == 99
    with pytest.raises(InputError, match="unknown split"):
        open_dataset(f"smiyc-anomaly:{tmp_path}", split="val")


def test_road_anomaly21_renamed_subset_only_as_all(tmp_path):
    for i in range(3):
        _tiny(tmp_path / "images" / f"{i}.png")
    assert len(open_dataset(f"smiyc-anomaly:{tmp_path}")) == 3
    with pytest.raises(DataError, match="not the release's file names"):
        open_dataset(f"smiyc-anomaly:{tmp_path}", split="validation")


def test_road_obstacle21_scene_splits(tmp_path):
    test_scenes = ["curvy-street", "one-way-street", "gravel", "greyasphalt", "motorway", "paving", "darkasphalt",
                   "darkasphalt2"]
    ids = [f"{test_scenes[i % len(test_scenes)]}_{i:04d}" for i in range(327)]
    ids += [f"driveway_{i:03d}" for i in range(30)] + [f"snowstorm{1 + i % 2}_{i:03d}" for i in range(55)]
    ids += [f"validation_{k}" for k in range(1, 41)]
    for fid in ids:
        _tiny(tmp_path / "images" / f"{fid}.webp")
    for k in range(1, 41):
        _tiny(tmp_path / "labels_masks" / f"validation_{k}_labels_semantic.png", 1)
    counts = {split: len(open_dataset(f"smiyc-obstacle:{tmp_path}", split=split))
              for split in ("all", "test", "validation", "night", "snowstorm", "noNight", "scene-validation")}
    assert counts == {"all": 452, "test": 327, "validation": 30, "night": 30, "snowstorm": 55, "noNight": 422,
                      "scene-validation": 40}
    val = open_dataset(f"smiyc-obstacle:{tmp_path}", split="validation")
    assert "validation_19" not in val.ids and "validation_25" not in val.ids and "validation_20" in val.ids
    assert val.smiyc_name == "ObstacleTrack-all" and val.num_labelled == 30


def _laf_release(root: Path) -> list[str]:
    ids = ["01_Hanns_Klemm_Str_45_000006_000010", "01_Hanns_Klemm_Str_45_000007_000010"]
    ids += [f"04_Maurener_Weg_8_000000_{k:06d}" for k in range(1060)]
    ids += ["10_Schlossberg_9_000004_000010"] + [f"15_Rechbergstr_Deckenpfronn_000000_{k:06d}" for k in range(140)]
    for fid in ids:
        city = fid[: fid.index("_0000")]
        _tiny(root / "leftImg8bit" / "test" / city / f"{fid}_leftImg8bit.png")
        _tiny(root / "gtCoarse" / "test" / city / f"{fid}_gtCoarse_labelIds.png", 1)
    return sorted(ids)


def test_lost_and_found_official_splits(tmp_path):
    from sml.data.releases import LAF_INVALID_TEST_INDICES

    ids = _laf_release(tmp_path)
    full = open_dataset(f"lost-and-found:{tmp_path}")
    assert len(full) == 1203 and full.smiyc_name == "LostAndFound-test"
    valid = open_dataset(f"lost-and-found:{tmp_path}", split="testValid")
    assert len(valid) == 1186 and valid.smiyc_name == "LostAndFound-test"
    assert not {ids[i] for i in LAF_INVALID_TEST_INDICES} & set(valid.ids)
    noknown = open_dataset(f"lost-and-found:{tmp_path}", split="testNoKnown")
    assert len(noknown) == 1043 and not any(i.startswith(("15_", "10_", "01_")) for i in noknown.ids)
    # positions only mean something in the complete split
    victim = tmp_path / "leftImg8bit" / "test" / "04_Maurener_Weg_8" / f"{ids[5]}_leftImg8bit.png"
    victim.unlink()
    with pytest.raises(DataError, match="positions in the complete 1203-frame"):
        open_dataset(f"lost-and-found:{tmp_path}", split="testValid", allow_subset=True)


def test_lost_and_found_label_ids_as_the_tool(tmp_path):
    raw = np.array([[0, 1, 2, 200, 201, 255]], np.uint8)
    save(tmp_path / "gtCoarse" / "test" / "c" / "c_000000_000000_gtCoarse_labelIds.png", raw)
    save(tmp_path / "leftImg8bit" / "test" / "c" / "c_000000_000000_leftImg8bit.png", np.zeros((1, 6, 3), np.uint8))
    ds = open_dataset(f"lost-and-found:{tmp_path}", allow_subset=True)
    assert ds[0].labels.tolist() == [[255, 0, 1, 1, 255, 255]]


def test_png_gamma_chunk_ignored(tmp_path):
    from PIL import PngImagePlugin

    from sml.data.io import read_image

    arr = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3
    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", (100000).to_bytes(4, "big"))  # gamma 1.0: viewers that apply it wash the image out
    p = tmp_path / "g.png"
    Image.fromarray(arr).save(p, pnginfo=info)
    assert b"gAMA" in p.read_bytes()
    np.testing.assert_array_equal(read_image(p), arr)  # stored values, as the tool and the reference read them
