"""Loaders for Road Anomaly (Lis et al. 2019) and SegmentMeIfYouCan (RoadAnomaly21, RoadObstacle21)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sml.errors import DataError
from sml.data.base import (
    Dataset,
    Frame,
    build_lut,
    image_files,
    is_image,
    list_paths,
    natural_key,
    suggest_root,
)
from sml.data.io import IMAGE_EXTENSIONS
from sml.data.releases import OBSTACLE_SPLITS, select_split
from sml.utils.run_layout import safe_name


class RoadAnomaly(Dataset):
    """Road Anomaly (``RoadAnomaly_jpg``): 60 frames, labels 0 normal / 2 anomaly mapped to 0 / 1."""

    kind = "road-anomaly"
    description = "Road Anomaly (RoadAnomaly_jpg: frame_list.json, frames/), 60 frames, labels 0/2 -> 0/1"
    expected_frames = 60

    def _label_table(self) -> tuple[np.ndarray, np.ndarray]:
        return build_lut({0: 0, 2: 1})  # the release has no void class

    @staticmethod
    def _looks_like_root(p: Path) -> bool:
        return (p / "frame_list.json").is_file() and (p / "frames").is_dir()

    def _layout_hint(self) -> str:
        return (
            f"Expected ROOT/frame_list.json, ROOT/frames/<name>.jpg and "
            f"ROOT/frames/<name>.labels/labels_semantic.png (the RoadAnomaly_jpg release)."
        )

    def _label_hint(self) -> str:
        return "Each frame needs frames/<name>.labels/labels_semantic.png: restore them from the release."

    def _bad_value_hint(self) -> str:
        return "Road Anomaly labels are 0 (normal) and 2 (anomaly)."

    def _scan(self) -> list[Frame]:
        frames_dir = self.root / "frames"
        if not frames_dir.is_dir():
            hint = suggest_root(self.root, self._looks_like_root)
            better = f" Did you mean --data {self.kind}:{hint}?" if hint is not None else ""
            raise DataError(f"{self.kind}: no frames/ folder under {self.root}.{better} {self._layout_hint()}")
        images = self._listed_images(frames_dir)
        if images is None:
            # no list: scan the folder (documented fallback for hand-made copies)
            images = image_files(frames_dir)
            self.notes.append("no frame_list.json: frames found by scanning frames/")

        frames = []
        for img in images:
            lab = frames_dir / f"{img.stem}.labels" / "labels_semantic.png"
            frames.append(Frame(safe_name(img.stem), img, lab if lab.is_file() else None))
        stems = {img.stem for img in images}
        orphans = sorted(
            (d / "labels_semantic.png" for d in frames_dir.glob("*.labels") if d.is_dir() and d.name[: -len(".labels")] not in stems
             and (d / "labels_semantic.png").is_file()),
            key=lambda p: natural_key(str(p)),
        )
        self._orphan_labels(orphans)
        return frames

    def _listed_images(self, frames_dir: Path) -> list[Path] | None:
        """The images ``frame_list.json`` names (those present, with ``allow_subset``); None without the list."""
        list_file = self.root / "frame_list.json"
        if not list_file.is_file():
            return None
        try:
            names = json.loads(list_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.kind}: cannot read {list_file}: {exc}. Re-download the release.") from exc
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{self.kind}: {list_file} must be a JSON list of image file names.")
        images = [frames_dir / n for n in names]
        missing = [p for p in images if not p.is_file()]
        if missing:
            if not self.allow_subset:
                raise DataError(
                    f"{self.kind}: {len(missing)} of the {len(names)} images listed in {list_file} are missing: {list_paths(missing)}. "
                    "Restore them, or pass --allow-subset (allow_subset=True) to use the frames present."
                )
            images = [p for p in images if p.is_file()]
        return images


class _SMIYC(Dataset):
    """SegmentMeIfYouCan layout: ``images/<id>.<ext>``, ``labels_masks/<id>_labels_semantic.png``."""

    labels_required_default = False  # the release's test frames are unlabelled: scored, never in a metric
    track_folder = ""
    label_suffix = "_labels_semantic.png"

    def _looks_like_root(self, p: Path) -> bool:
        return (p / "images").is_dir() and (p.name == self.track_folder or (p / "labels_masks").is_dir())

    def _layout_hint(self) -> str:
        return (
            f"Expected ROOT/images/<id>.jpg|.png|.webp and ROOT/labels_masks/<id>{self.label_suffix} "
            f"(the {self.track_folder} folder of the SegmentMeIfYouCan release)."
        )

    def _label_hint(self) -> str:
        return f"Labels are read from labels_masks/<id>{self.label_suffix}; pass labels_required=False to score unlabelled frames."

    def _bad_value_hint(self) -> str:
        return "SegmentMeIfYouCan labels are 0, 1 (anomaly/obstacle) and 255 (void); use *_labels_semantic.png, not *_color.png."

    def _scan(self) -> list[Frame]:
        img_dir = self.root / "images"
        if not img_dir.is_dir():
            # prefer this track's folder when the user pointed at the release's parent
            direct = self.root / self.track_folder
            hint = direct if self._looks_like_root(direct) else suggest_root(self.root, self._looks_like_root)
            better = f" Did you mean --data {self.kind}:{hint}?" if hint is not None else ""
            raise DataError(f"{self.kind}: no images/ folder under {self.root}.{better} {self._layout_hint()}")
        images = image_files(img_dir)
        if not images:
            raise DataError(
                f"{self.kind}: {img_dir} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)}). {self._layout_hint()}"
            )
        lab_dir = self.root / "labels_masks"
        labels: dict[str, Path] = {}
        if lab_dir.is_dir():
            for p in lab_dir.iterdir():
                if p.name.endswith(self.label_suffix) and is_image(p):
                    labels[p.name[: -len(self.label_suffix)]] = p
        elif self.labels_required:
            raise DataError(f"{self.kind}: no labels_masks/ folder under {self.root}. {self._label_hint()}")
        stems = {p.stem for p in images}
        orphans = sorted((labels[k] for k in labels.keys() - stems), key=lambda p: natural_key(p.name))
        frames = [Frame(safe_name(p.stem), p, labels.get(p.stem)) for p in images]
        if self.split not in (None, "all"):
            frames = self._select(frames)
            keep = {f.id for f in frames}
            orphans = [p for p in orphans if p.name[: -len(self.label_suffix)] in keep]
        self._orphan_labels(orphans)
        return frames

    def _select(self, frames: list[Frame]) -> list[Frame]:
        """The frames of ``self.split`` by the official tool's rules, with its frame count checked."""
        ids, expected = select_split(self.kind, self.split, [f.id for f in frames])
        chosen = [f for f in frames if f.id in set(ids)]
        if not chosen:
            sample = ", ".join(f.id for f in frames[:4])
            raise DataError(
                f"{self.kind}: no frame of the official split {self.split!r} under {self.root}: its frame ids "
                f"({sample}, ...) are not the release's file names. A renamed or hand-made subset can only be "
                "evaluated as --split all; restore the published file names to use the official splits."
            )
        if expected is not None and len(chosen) != expected:
            if self.allow_subset:
                self.notes.append(f"subset: {len(chosen)} of the {expected} frames of split {self.split}")
            else:
                raise DataError(
                    f"{self.kind}: split {self.split!r} has {expected} frames in the release (the official tool "
                    f"checks this), found {len(chosen)} under {self.root}. Complete the download, or pass "
                    "--allow-subset to evaluate these frames anyway (results not comparable with the benchmark)."
                )
        return chosen


class SMIYCAnomaly(_SMIYC):
    """SegmentMeIfYouCan RoadAnomaly21 (``dataset_AnomalyTrack``): 0 / 1 anomaly / 255 void."""

    kind = "smiyc-anomaly"
    description = ("SegmentMeIfYouCan RoadAnomaly21 (images/, labels_masks/), labels 0/1/255, unlabelled test frames "
                   "allowed; splits all (default: every frame present), validation (10), test (100)")
    track_folder = "dataset_AnomalyTrack"
    splits = ("all", "validation", "test")
    default_split = "all"


class SMIYCObstacle(_SMIYC):
    """SegmentMeIfYouCan RoadObstacle21 (``dataset_ObstacleTrack``): 0 road / 1 obstacle / 255 off-road."""

    kind = "smiyc-obstacle"
    description = ("SegmentMeIfYouCan RoadObstacle21 (images/, labels_masks/), labels 0/1/255, unlabelled test frames "
                   "allowed; splits all (default), test (327), validation (30), noNight, night, snowstorm, scene-*")
    track_folder = "dataset_ObstacleTrack"
    splits = tuple(OBSTACLE_SPLITS)
    default_split = "all"


__all__ = ["RoadAnomaly", "SMIYCAnomaly", "SMIYCObstacle"]
