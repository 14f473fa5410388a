"""Loaders for data in the Cityscapes layout: Cityscapes, Fishyscapes (L&F, Static), Lost and Found.

``<root>/leftImg8bit/<split>/<city>/<id>_leftImg8bit.<ext>`` with labels in
``<root>/<gt>/<split>/<city>/<id>_<gt>_<kind>.png``; the nesting of the
released zips (``leftImg8bit_trainvaltest/leftImg8bit/...``) is accepted too.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from sml.errors import DataError
from sml.utils.run_layout import safe_name
from sml.data.base import (
    IGNORE_INDEX,
    Dataset,
    Frame,
    build_lut,
    is_image,
    natural_key,
    suggest_root,
)

_IMAGE_RE = re.compile(r"^(?P<id>.+)_leftImg8bit\.(png|jpe?g|webp)$", re.IGNORECASE)


@lru_cache(maxsize=1)
def cityscapes_tables() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], tuple[str, ...]]:
    """(labelIds table, labelTrainIds table, 19 class names) from the official cityscapesscripts label list."""
    from cityscapesscripts.helpers.labels import labels  # official table: id -> trainId

    mapping: dict[int, int] = {}
    names: dict[int, str] = {}
    for lab in labels:
        train_id = IGNORE_INDEX if lab.trainId in (255, -1) else int(lab.trainId)
        # id -1 (license plate) is 255 once stored as uint8
        mapping[lab.id % 256] = train_id
        if train_id != IGNORE_INDEX:
            names[train_id] = lab.name
    num = len(names)
    if sorted(names) != list(range(num)):  # pragma: no cover - guards a changed upstream table
        raise DataError(f"cityscapesscripts label table has non-contiguous train ids {sorted(names)}")
    train_ids = build_lut({**{t: t for t in range(num)}, IGNORE_INDEX: IGNORE_INDEX})
    return build_lut(mapping), train_ids, tuple(names[t] for t in range(num))


class CityscapesLayout(Dataset):
    """Common scanning and checks for data sets stored in the Cityscapes folder layout."""

    gt_folder: ClassVar[str] = "gtFine"
    #: label file suffixes in order of preference; the first present per frame is used
    gt_suffixes: ClassVar[tuple[str, ...]] = ("_gtFine_labelIds.png",)

    def _image_bases(self) -> list[Path]:
        return [self.root / "leftImg8bit", self.root / "leftImg8bit_trainvaltest" / "leftImg8bit"]

    def _gt_bases(self) -> list[Path]:
        g = self.gt_folder
        return [self.root / g, self.root / f"{g}_trainvaltest" / g]

    @staticmethod
    def _looks_like_root(p: Path) -> bool:
        return (p / "leftImg8bit").is_dir() or (p / "leftImg8bit_trainvaltest" / "leftImg8bit").is_dir()

    def _layout_hint(self) -> str:
        return (
            f"Expected ROOT/leftImg8bit/{self.split}/<city>/<city>_<seq>_<frame>_leftImg8bit.png "
            f"(or the zip nesting leftImg8bit_trainvaltest/leftImg8bit/...)."
        )

    def _label_hint(self) -> str:
        return (
            f"Labels are read from {self.gt_folder}/{self.split}/<city>/<id>{self.gt_suffixes[-1]} "
            f"(or {self.gt_folder}_trainvaltest/{self.gt_folder}/...): restore them, or pass "
            "labels_required=False if this task needs no labels."
        )

    def _folder_split(self) -> str:
        """The split's folder name (``--split`` names a folder except where a split is a subset of one)."""
        return self.split

    def _find_split_dir(self, bases: list[Path], what: str, required: bool) -> Path | None:
        """``<base>/<split>`` for the first base holding the split; a clear error when none does."""
        for base in bases:
            if (base / self._folder_split()).is_dir():
                return base / self._folder_split()
        if not required:
            return None
        existing = [b for b in bases if b.is_dir()]
        if existing:
            found = sorted(d.name for b in existing for d in b.iterdir() if d.is_dir())
            raise DataError(
                f"{self.kind}: no split {self._folder_split()!r} in {existing[0]} (found: {', '.join(found) or 'nothing'}). "
                f"Choose an existing split with --split, or complete the download."
            )
        hint = suggest_root(self.root, self._looks_like_root)
        better = f" Did you mean --data {self.kind}:{hint}?" if hint is not None and hint != self.root else ""
        raise DataError(f"{self.kind}: no {what} folder under {self.root}.{better} {self._layout_hint()}")

    def _scan(self) -> list[Frame]:
        img_dir = self._find_split_dir(self._image_bases(), "leftImg8bit", required=True)
        assert img_dir is not None
        gt_dir = self._find_split_dir(self._gt_bases(), self.gt_folder, required=self.labels_required)
        if gt_dir is None:
            self.notes.append(f"no {self.gt_folder} folder: no labels")
        images = self._images(img_dir)
        labels: dict[str, Path] = {}
        if gt_dir is not None:
            labels = self._labels(gt_dir)
            orphans = sorted((labels[k] for k in labels.keys() - images.keys()), key=lambda p: natural_key(p.name))
            self._orphan_labels(orphans)

        if not images and gt_dir is not None and labels:
            raise DataError(
                f"{self.kind}: {img_dir} holds no *_leftImg8bit images, though labels exist. {self._layout_hint()}"
            )
        return [Frame(fid, images[fid], labels.get(fid)) for fid in sorted(images, key=natural_key)]

    def _images(self, img_dir: Path) -> dict[str, Path]:
        """Frame id -> its ``*_leftImg8bit`` image, over the city folders; two images of one id are refused."""
        images: dict[str, Path] = {}
        for city in sorted(d for d in img_dir.iterdir() if d.is_dir()):
            for p in city.iterdir():
                m = _IMAGE_RE.match(p.name)
                if m is None or not is_image(p):
                    continue
                fid = safe_name(m["id"])
                if fid in images:
                    raise DataError(
                        f"{self.kind}: two images give the frame id {fid!r}: {images[fid]} and {p}. "
                        "Keep one of them (e.g. remove the JPEG copy of a PNG frame)."
                    )
                images[fid] = p
        return images

    def _labels(self, gt_dir: Path) -> dict[str, Path]:
        """Frame id -> its label file; of several, the one whose suffix comes first in ``gt_suffixes``."""
        # rank of each suffix: lower wins when a frame has several label files
        rank = {s: i for i, s in enumerate(self.gt_suffixes)}
        best: dict[str, int] = {}
        labels: dict[str, Path] = {}
        for city in (d for d in gt_dir.iterdir() if d.is_dir()):
            for p in city.iterdir():
                suffix = next((s for s in rank if p.name.endswith(s)), None)
                if suffix is None:
                    continue
                fid = safe_name(p.name[: -len(suffix)])
                if rank[suffix] < best.get(fid, len(rank)):
                    best[fid], labels[fid] = rank[suffix], p
        return labels


class Cityscapes(CityscapesLayout):
    """Cityscapes (in-distribution): label ids -> 19 train ids via cityscapesscripts; labels optional."""

    kind = "cityscapes"
    description = "Cityscapes leftImg8bit/gtFine (train ids 0..18, 255 ignore); labels optional"
    task = "segmentation"
    splits = ("train", "val", "test")
    default_split = "train"
    labels_required_default = False  # statistics need none; the mini set labels 8 of 188 frames
    allowed_values = tuple(range(19)) + (IGNORE_INDEX,)
    gt_suffixes = ("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png")

    def __init__(self, *args, **kw) -> None:
        self.class_names = cityscapes_tables()[2]
        super().__init__(*args, **kw)

    def _label_table(self) -> tuple[np.ndarray, np.ndarray]:
        return cityscapes_tables()[0]

    def _table_for(self, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
        ids, train_ids, _ = cityscapes_tables()
        return train_ids if label_path.name.endswith("_labelTrainIds.png") else ids

    def _bad_value_hint(self) -> str:
        return "Cityscapes label ids are 0..33 (or train ids 0..18/255 in *_labelTrainIds.png)."


class FishyscapesLAF(CityscapesLayout):
    """Fishyscapes Lost & Found validation set (100 frames; 0 / 1 anomaly / 255 void)."""

    kind = "fishyscapes-laf"
    description = "Fishyscapes Lost & Found val, Cityscapes layout, 100 frames, labels 0/1/255"
    splits = ("val",)
    default_split = "val"
    expected_frames = 100

    def _bad_value_hint(self) -> str:
        return "Fishyscapes labels are 0 (inlier), 1 (anomaly), 255 (void); is this the Fishyscapes release?"


class FishyscapesStatic(FishyscapesLAF):
    """Fishyscapes Static validation set (30 frames, v3; 0 / 1 / 255)."""

    kind = "fishyscapes-static"
    description = "Fishyscapes Static val (v3), Cityscapes layout, 30 frames, labels 0/1/255"
    expected_frames = 30


class LostAndFound(CityscapesLayout):
    """Lost and Found with gtCoarse labels, mapped as the SegmentMeIfYouCan tool maps them.

    Label ids: 0 (outside the annotated region) -> 255, 1 road -> 0, 2..200
    obstacles -> 1, anything else -> 255; so the evaluated region of interest is
    the annotated road area. Splits are the tool's: ``test`` (1203 frames),
    ``testValid`` (1186: without the 17 frames whose labels are all 0),
    ``testNoKnown`` (1043: also without frames of children and bicycles),
    ``train`` (1036), ``trainValid`` (1030). Images are read as stored: the
    release's PNGs carry a gamma chunk, which neither the tool nor sml applies.
    """

    kind = "lost-and-found"
    description = ("Lost and Found, Cityscapes layout with gtCoarse (1 road->0, 2..200->1, 0->255); splits test (1203), "
                   "testValid (1186), testNoKnown (1043), train (1036), trainValid (1030)")
    splits = ("test", "testValid", "testNoKnown", "train", "trainValid")
    default_split = "test"
    labels_required_default = False  # 17 of the 1203 test frames have no labels: scored, never in a metric
    gt_folder = "gtCoarse"
    gt_suffixes = ("_gtCoarse_labelIds.png",)

    def _label_table(self) -> tuple[np.ndarray, np.ndarray]:
        # the tool: ignore = 0, usual = 1 (road), anomaly = ids 2..200; every other value is void
        return build_lut({0: IGNORE_INDEX, 1: 0, **{v: 1 for v in range(2, 201)}}, default=IGNORE_INDEX)

    def _folder_split(self) -> str:
        from sml.data.releases import LAF_SPLITS

        return LAF_SPLITS[self.split][0]

    def _scan(self) -> list[Frame]:
        from sml.data.releases import LAF_SPLITS, select_split

        frames = super()._scan()
        folder, invalid, prefixes, expected = LAF_SPLITS[self.split]
        full = LAF_SPLITS[folder][3]
        if invalid or prefixes:
            if len(frames) != full:
                # the tool names the invalid frames by their position in the complete split
                raise DataError(
                    f"{self.kind}: split {self.split!r} is defined by the official tool as positions in the complete "
                    f"{full}-frame {folder!r} split, but {len(frames)} frames were found under {self.root}. Point "
                    f"--data at the complete release, or use --split {folder} (with --allow-subset for a subset)."
                )
            ids = set(select_split(self.kind, self.split, [f.id for f in frames])[0])
            frames = [f for f in frames if f.id in ids]
        if len(frames) != expected:
            if not self.allow_subset:
                raise DataError(
                    f"{self.kind}: split {self.split!r} has {expected} frames in the release (the official tool "
                    f"checks this), found {len(frames)} under {self.root}. Complete the download, or pass "
                    "--allow-subset to evaluate these frames anyway (results not comparable with the benchmark)."
                )
            self.notes.append(f"subset: {len(frames)} of the {expected} frames of split {self.split}")
        return frames
