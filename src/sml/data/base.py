"""The data-set contract shared by every loader: frames, samples, label mapping and checks.

A :class:`Dataset` is opened cheaply: the constructor only lists files and
checks their pairing and count (``datasets.md``); pixels are decoded in
:meth:`Dataset.load`, which also maps raw label values through a 256-entry
lookup table and rejects values the data set should not contain.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from sml.errors import DataError, InputError
from sml.data.io import IMAGE_EXTENSIONS, image_size, read_image, read_labels

IGNORE_INDEX = 255
_MAX_LISTED = 8  # paths listed in an error message before "... and N more"


@dataclass(frozen=True)
class Frame:
    """One frame on disk: a stable id and its files; nothing decoded."""

    id: str
    image_path: Path
    label_path: Path | None = None


@dataclass
class Sample:
    """A decoded frame: uint8 ``H x W x 3`` RGB image and uint8 ``H x W`` labels (or None)."""

    id: str
    image: np.ndarray
    labels: np.ndarray | None
    image_path: Path
    label_path: Path | None = None


def natural_key(text: str) -> tuple:
    """Sort key that orders ``2`` before ``10`` (SMIYC ids are bare numbers)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def _count(n: int, noun: str) -> str:
    """``1 image`` / ``3 images``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def list_paths(paths: Sequence[os.PathLike | str], limit: int = _MAX_LISTED) -> str:
    """``a, b, c ... and 12 more`` for error messages."""
    shown = [str(p) for p in list(paths)[:limit]]
    rest = len(paths) - len(shown)
    return ", ".join(shown) + (f" ... and {rest} more" if rest > 0 else "")


def is_image(path: Path) -> bool:
    """True for a regular, non-hidden file with an image extension."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def build_lut(mapping: Mapping[int, int], default: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """256-entry lookup table and "raw value is expected" mask from ``{raw: target}``.

    Raw values not in ``mapping`` map to ``default`` when given, else they are
    flagged unexpected (and map to 255 should anyone ignore the flag).
    """
    lut = np.full(256, IGNORE_INDEX if default is None else default, dtype=np.uint8)
    known = np.zeros(256, dtype=bool) if default is None else np.ones(256, dtype=bool)
    for raw, target in mapping.items():
        raw, target = int(raw), int(target)
        if not (0 <= raw <= 255 and 0 <= target <= 255):
            raise InputError(f"label mapping {raw} -> {target} is out of range; both values must be in 0..255")
        lut[raw] = target
        known[raw] = True
    return lut, known


class Dataset:
    """Base class of every loader. Subclasses set the class attributes and implement ``_scan``.

    ``frames`` is the list of :class:`Frame` in a stable order; ``ds[i]`` and
    iteration decode samples; :meth:`validate` decodes every label once.
    """

    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""
    task: ClassVar[str] = "anomaly"  # "segmentation" for cityscapes
    #: frame count of the complete release, checked unless allow_subset
    expected_frames: ClassVar[int | None] = None
    #: default of labels_required when the caller passes None
    labels_required_default: ClassVar[bool] = True
    #: splits that exist (None: the data set has no splits) and the default one
    splits: ClassVar[tuple[str, ...] | None] = None
    default_split: ClassVar[str | None] = None
    #: target values a mapped label may hold (anomaly convention by default)
    allowed_values: ClassVar[tuple[int, ...]] = (0, 1, IGNORE_INDEX)
    class_names: ClassVar[tuple[str, ...] | None] = None
    ignore_index: ClassVar[int] = IGNORE_INDEX

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        allow_subset: bool = False,
        labels_required: bool | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise DataError(f"{self.kind}: data folder {self.root} does not exist. Check the path given to --data {self.kind}:PATH.")
        if not self.root.is_dir():
            raise DataError(f"{self.kind}: {self.root} is a file; --data {self.kind}:PATH needs the data set's root folder.")
        self.root = self.root.resolve()
        self.split = self._check_split(split)
        self.allow_subset = bool(allow_subset)
        self.labels_required = self.labels_required_default if labels_required is None else bool(labels_required)
        self.notes: list[str] = []  # things worth a line in the log (subset used, fallbacks taken)
        self._orphans: list[Path] = []
        self._lut, self._known = self._label_table()
        frames = self._scan()
        self.frames: list[Frame] = frames
        self._check_frames()
        self._index = {f.id: i for i, f in enumerate(self.frames)}

    # ------------------------------------------------------------------ subclass hooks
    def _scan(self) -> list[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _label_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Raw label value -> target value; identity on ``allowed_values`` by default."""
        return build_lut({v: v for v in self.allowed_values})

    # ------------------------------------------------------------------ checks at open time
    def _check_split(self, split: str | None) -> str | None:
        if self.splits is None:
            if split is not None:
                raise InputError(
                    f"{self.kind} has no splits, but split={split!r} was given; leave --split out for this data set."
                )
            return None
        split = self.default_split if split is None else split
        if split not in self.splits:
            raise InputError(f"{self.kind}: unknown split {split!r}; choose one of {', '.join(self.splits)}.")
        return split

    def _check_frames(self) -> None:
        ids: dict[str, Frame] = {}
        for f in self.frames:
            if f.id in ids:
                raise DataError(
                    f"{self.kind}: two images give the frame id {f.id!r}: {ids[f.id].image_path} and {f.image_path}. "
                    "Keep one of them (e.g. remove the JPEG copy of a PNG frame)."
                )
            ids[f.id] = f
        if not self.frames:
            raise DataError(f"{self.kind}: no frames found under {self.root}{self._where()}. {self._layout_hint()}")
        # pairing: report images without labels and labels without images together, since
        # both at once usually mean misnamed files
        problems = []
        missing = [f.image_path for f in self.frames if f.label_path is None] if self.labels_required else []
        if missing:
            problems.append(
                f"{len(missing)} of {_count(len(self.frames), 'image')} without a label file: {list_paths(missing)}. "
                f"{self._label_hint()}"
            )
        if self._orphans and not self.allow_subset:
            problems.append(
                f"{_count(len(self._orphans), 'label file')} without a matching image: {list_paths(self._orphans)}. "
                "The images are missing or misnamed: restore them, or pass --allow-subset "
                "(allow_subset=True) to ignore these labels."
            )
        elif self._orphans:
            self.notes.append(f"{_count(len(self._orphans), 'label file')} without image ignored")
        if problems:
            raise DataError(f"{self.kind}: " + " Also, ".join(problems))
        n = len(self.frames)
        if self.expected_frames is not None and n != self.expected_frames:
            if self.allow_subset:
                self.notes.append(f"subset: {n} of {self.expected_frames} frames (allow_subset)")
            else:
                what = "only" if n < self.expected_frames else "as many as"
                raise DataError(
                    f"{self.kind}: found {what} {n} frames under {self.root}, but the benchmark has "
                    f"{self.expected_frames}. Point --data at the complete release, or pass --allow-subset "
                    "(allow_subset=True) to use these frames anyway; the results are then not comparable "
                    "with published numbers."
                )

    def _where(self) -> str:
        return f" (split {self.split})" if self.split else ""

    def _layout_hint(self) -> str:
        return f"Expected the {self.kind} layout of datasets.md."

    def _label_hint(self) -> str:
        return "Restore the missing label files, or remove those images."

    def _orphan_labels(self, orphans: Sequence[Path]) -> None:
        """Record label files without an image (an incomplete copy); reported by the pairing check."""
        self._orphans = list(orphans)

    # ------------------------------------------------------------------ access
    @property
    def smiyc_name(self) -> str | None:
        """The folder the SegmentMeIfYouCan tool stores and reads this split's maps under
        (``anomaly_p/<method>/<smiyc_name>/<id>.hdf5``), e.g. ``AnomalyTrack-all``; None if it has none."""
        from sml.data.releases import SMIYC_FOLDER

        name = SMIYC_FOLDER.get(self.kind)
        return None if name is None else name(self.split)

    @property
    def has_labels(self) -> bool:
        """True when at least one frame has a label file."""
        return any(f.label_path is not None for f in self.frames)

    @property
    def num_labelled(self) -> int:
        """Number of frames with a label file."""
        return sum(f.label_path is not None for f in self.frames)

    @property
    def ids(self) -> list[str]:
        """Frame ids in order."""
        return [f.id for f in self.frames]

    def index(self, frame_id: str) -> int:
        """Position of the frame with id ``frame_id``."""
        try:
            return self._index[frame_id]
        except KeyError:
            raise InputError(f"{self.kind}: no frame with id {frame_id!r} under {self.root}") from None

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Sample:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"{type(self).__name__} indices must be integers, not {type(i).__name__}")
        n = len(self.frames)
        if not -n <= i < n:
            raise IndexError(f"frame index {i} out of range for {n} frames")
        return self.load(self.frames[int(i)])

    def __iter__(self) -> Iterator[Sample]:
        for f in self.frames:
            yield self.load(f)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def describe(self) -> str:
        """One line for logs: kind, root, split, frame and label counts, notes."""
        split = f" split={self.split}" if self.split else ""
        notes = f"; {'; '.join(self.notes)}" if self.notes else ""
        return f"{self.kind} at {self.root}{split}: {len(self)} frames, {self.num_labelled} labelled ({self.task}){notes}"

    # ------------------------------------------------------------------ decoding
    def load(self, frame: Frame, labels: bool = True) -> Sample:
        """Decode ``frame``; labels are mapped and checked (skip them with ``labels=False``)."""
        image = read_image(frame.image_path)
        lab = None
        if labels and frame.label_path is not None:
            lab = self.load_labels(frame)
            if lab.shape != image.shape[:2]:
                raise DataError(
                    f"{self.kind}: image {frame.image_path} is {image.shape[1]}x{image.shape[0]} but its labels "
                    f"{frame.label_path} are {lab.shape[1]}x{lab.shape[0]} (width x height). "
                    "Use the label file that belongs to this image at its original resolution."
                )
        return Sample(frame.id, image, lab, frame.image_path, frame.label_path)

    def load_labels(self, frame: Frame) -> np.ndarray:
        """Decode and map the labels of ``frame`` to the target convention (uint8 H x W)."""
        if frame.label_path is None:
            raise InputError(f"{self.kind}: frame {frame.id} has no label file")
        raw = read_labels(frame.label_path)
        return self.map_labels(raw, frame.label_path, self._table_for(frame.label_path))

    def _table_for(self, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
        """Lookup table for one label file (Cityscapes picks it by file suffix)."""
        return self._lut, self._known

    def map_labels(
        self,
        raw: np.ndarray,
        source: os.PathLike | str = "<array>",
        table: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Map raw uint8 labels through the lookup table; unexpected raw values raise DataError."""
        lut, known = (self._lut, self._known) if table is None else table
        raw = np.asarray(raw)
        if raw.dtype != np.uint8:
            raise InputError(f"{self.kind}: raw labels from {source} must be uint8, got {raw.dtype}")
        # fast path: one table lookup says whether any value is unexpected; the histogram
        # for the message is only computed when one is
        if not known.all() and np.take(~known, raw).any():
            counts = np.bincount(raw.ravel(), minlength=256)
            bad = np.flatnonzero((counts > 0) & ~known)
            listed = ", ".join(f"{v} ({counts[v]} px)" for v in bad[:12])
            more = f" and {bad.size - 12} more values" if bad.size > 12 else ""
            raise DataError(
                f"{self.kind}: label file {source} holds unexpected values {listed}{more}; "
                f"expected {self._expected_values_text(known)}. {self._bad_value_hint()}"
            )
        return np.take(lut, raw)

    @staticmethod
    def _expected_values_text(known: np.ndarray) -> str:
        vals = np.flatnonzero(known)
        if vals.size > 20:
            return f"{vals.size} known raw values ({vals.min()}..{vals.max()})"
        return "{" + ", ".join(str(v) for v in vals) + "}"

    def _bad_value_hint(self) -> str:
        return "Is this the right data set kind, and the *_labelIds (not *_color) file?"

    def validate(self) -> dict:
        """Decode every label once and check values and sizes (image sizes read from headers).

        Returns ``{"frames", "labelled", "values": {target value: pixel count}}``;
        raises DataError listing every broken frame.
        """
        totals = np.zeros(256, dtype=np.int64)
        problems: list[str] = []
        for f in self.frames:
            if f.label_path is None:
                continue
            try:
                lab = self.load_labels(f)
                w, h = image_size(f.image_path)
                if lab.shape != (h, w):
                    problems.append(
                        f"size mismatch: {f.image_path} is {w}x{h}, {f.label_path} is {lab.shape[1]}x{lab.shape[0]}"
                    )
                    continue
            except DataError as exc:
                problems.append(str(exc))
                continue
            totals += np.bincount(lab.ravel(), minlength=256)
        if problems:
            shown = "\n  ".join(problems[:_MAX_LISTED])
            more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
            raise DataError(f"{self.kind}: {len(problems)} frames under {self.root} failed validation:\n  {shown}{more}")
        return {
            "frames": len(self.frames),
            "labelled": self.num_labelled,
            "values": {int(v): int(totals[v]) for v in np.flatnonzero(totals)},
        }


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, naturally sorted by name."""
    return sorted((p for p in folder.iterdir() if is_image(p)), key=lambda p: natural_key(p.name))



def suggest_root(root: Path, looks_right: Callable[[Path], bool], down: int = 2) -> Path | None:
    """A folder near ``root`` that ``looks_right``: an ancestor (user pointed inside the data set)
    or a descendant up to ``down`` levels (user pointed at the folder holding it)."""
    for anc in list(root.parents)[:4]:
        if looks_right(anc):
            return anc
    level = [root]
    for _ in range(down):
        nxt: list[Path] = []
        for d in level:
            try:
                children = sorted((c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")), key=lambda c: c.name)
            except OSError:
                continue
            for c in children[:200]:  # bounded: never crawl a huge tree for a hint
                if looks_right(c):
                    return c
                nxt.append(c)
        level = nxt
    return None
