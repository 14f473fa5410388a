"""``folder``: any image folder, optionally with a mask folder paired by file stem and a value mapping.

Accepted roots (``--data folder:...``):

* ``folder:ROOT`` where ``ROOT/images/`` holds the images and ``ROOT/labels/``
  (or ``ROOT/masks/``) the masks, if any;
* ``folder:IMAGES_DIR,MASKS_DIR`` for two separate folders;
* ``folder:IMAGES_DIR`` for images alone (nothing is evaluated, only scored).

A mask pairs with the image of the same stem (``a.jpg`` <-> ``a.png``), or
with ``mask_suffix`` appended (``a.jpg`` <-> ``a_mask.png``). Mask values are
mapped with ``mapping`` (``{raw: target}``, target 1 anomaly / 0 inlier / 255
void; key ``"*"`` maps every unlisted raw value); without a mapping the masks
must already hold 0/1/255.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from sml.errors import DataError, InputError
from sml.data.base import Dataset, Frame, build_lut, image_files, natural_key
from sml.data.io import IMAGE_EXTENSIONS
from sml.utils.run_layout import safe_name

_MASK_DIRS = ("labels", "masks")


def parse_mapping(mapping: Mapping | str | None) -> tuple[dict[int, int], int | None] | None:
    """Normalise a value mapping: ``{0: 0, "1": 1, "*": 255}`` or ``"0:0,1:1,*:255"`` -> (dict, default)."""
    if mapping is None:
        return None
    if isinstance(mapping, str):
        items = []
        for part in filter(None, (p.strip() for p in mapping.split(","))):
            if ":" not in part:
                raise InputError(f"label mapping entry {part!r} must look like RAW:TARGET (e.g. '0:0,1:1,*:255')")
            items.append(tuple(s.strip() for s in part.split(":", 1)))
        mapping = dict(items)
    if not isinstance(mapping, Mapping) or not mapping:
        raise InputError(f"label mapping must be a non-empty {{raw: target}} dict or 'RAW:TARGET,...' string, got {mapping!r}")
    out: dict[int, int] = {}
    default: int | None = None
    for k, v in mapping.items():
        try:
            target = int(v)
            if str(k).strip() in ("*", "default"):
                default = target
            else:
                out[int(k)] = target
        except (TypeError, ValueError):
            raise InputError(f"label mapping entry {k!r}: {v!r} is not RAW: TARGET with integer values") from None
    for raw, target in out.items():
        if not 0 <= raw <= 255:
            raise InputError(f"label mapping raw value {raw} is outside 0..255")
        if target not in (0, 1, 255):
            raise InputError(f"label mapping target {raw} -> {target}: targets must be 0 (inlier), 1 (anomaly) or 255 (void)")
    if default is not None and default not in (0, 1, 255):
        raise InputError(f"label mapping default '*' -> {default}: targets must be 0, 1 or 255")
    return out, default


class Folder(Dataset):
    """Images (and optional masks paired by stem) from plain folders, with a user-given value mapping."""

    kind = "folder"
    description = "plain folders: folder:ROOT (images/ + labels/|masks/) or folder:IMAGES_DIR[,MASKS_DIR]; --label-mapping RAW:TARGET,..."
    labels_required_default = False

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        allow_subset: bool = False,
        labels_required: bool | None = None,
        mapping: Mapping | str | None = None,
        masks: str | os.PathLike | None = None,
        mask_suffix: str = "",
    ) -> None:
        self._mapping = parse_mapping(mapping)
        self._masks_arg = None if masks is None else Path(masks).expanduser()
        self.mask_suffix = mask_suffix
        super().__init__(root, split=split, allow_subset=allow_subset, labels_required=labels_required)

    def _label_table(self) -> tuple[np.ndarray, np.ndarray]:
        if self._mapping is None:
            return build_lut({0: 0, 1: 1, 255: 255})
        table, default = self._mapping
        return build_lut(table, default=default)

    def _bad_value_hint(self) -> str:
        return "Give a value mapping for these masks, e.g. mapping={0: 0, 1: 1, 255: 255} (CLI: --mapping 0:0,1:1,*:255)."

    def _layout_hint(self) -> str:
        return (
            f"Give folder:ROOT with ROOT/images/ (and ROOT/labels/ for masks), or folder:IMAGES_DIR,MASKS_DIR; "
            f"images may be {', '.join(IMAGE_EXTENSIONS)}."
        )

    def _scan(self) -> list[Frame]:
        img_dir, mask_dir = self._folders()
        images = self._images(img_dir)
        if mask_dir is None:
            if self.labels_required:
                raise DataError(f"folder: labels are required but no mask folder was given for {img_dir}. {self._layout_hint()}")
            return [Frame(safe_name(p.stem), p, None) for p in images]
        masks = self._masks(mask_dir)
        stems = {p.stem for p in images}
        if masks and not (masks.keys() & stems):
            raise DataError(
                f"folder: no mask in {mask_dir} matches an image stem in {img_dir} (e.g. image {images[0].name}, "
                f"mask {next(iter(masks.values())).name}). Masks pair by file stem; set mask_suffix if masks are named "
                "<stem><suffix>.png."
            )
        orphans = sorted((masks[k] for k in masks.keys() - stems), key=lambda p: natural_key(p.name))
        self._orphan_labels(orphans)
        return [Frame(safe_name(p.stem), p, masks.get(p.stem)) for p in images]

    def _folders(self) -> tuple[Path, Path | None]:
        """The image folder and the mask folder (None: no masks); both kept on the data set."""
        if (self.root / "images").is_dir():
            img_dir = self.root / "images"
            mask_dir = next((self.root / d for d in _MASK_DIRS if (self.root / d).is_dir()), None)
        else:
            img_dir, mask_dir = self.root, None
        if self._masks_arg is not None:
            if not self._masks_arg.is_dir():
                raise DataError(f"folder: mask folder {self._masks_arg} does not exist. {self._layout_hint()}")
            mask_dir = self._masks_arg.resolve()
        self.image_dir, self.mask_dir = img_dir, mask_dir
        return img_dir, mask_dir

    def _images(self, img_dir: Path) -> list[Path]:
        images = image_files(img_dir)
        if not images:
            sub = sorted(d.name for d in img_dir.iterdir() if d.is_dir())
            more = f" It has sub-folders ({', '.join(sub[:6])}): point at the one holding the images." if sub else ""
            raise DataError(f"folder: no images in {img_dir}.{more} {self._layout_hint()}")
        return images

    def _masks(self, mask_dir: Path) -> dict[str, Path]:
        """Image stem -> its mask file (``mask_suffix`` removed; files without it are not masks)."""
        masks: dict[str, Path] = {}
        for p in image_files(mask_dir):
            stem = p.stem
            if self.mask_suffix:
                if not stem.endswith(self.mask_suffix):
                    continue
                stem = stem[: -len(self.mask_suffix)]
            if stem in masks:
                raise DataError(f"folder: two masks for {stem!r}: {masks[stem]} and {p}; keep one.")
            masks[stem] = p
        return masks

    def describe(self) -> str:
        """One line for logs, naming the image and mask folders."""
        masks = f", masks {self.mask_dir}" if self.mask_dir is not None else ", no masks"
        return super().describe() + masks
