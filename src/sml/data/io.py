"""Image and label decoding with Pillow: uint8 RGB images, uint8 index labels.

Decoding errors become :class:`~sml.errors.DataError` naming the file, so a
single corrupt frame in a benchmark is reported instead of crashing a worker
with a bare ``OSError``. EXIF orientation is deliberately *not* applied:
benchmark labels are aligned with the stored pixel grid.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sml.errors import DataError

#: File extensions recognised as images by every loader (lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _open(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode ``path``; any failure becomes a DataError naming the file and the fix."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"image file not found: {p}. Check the path (and that the data set is complete).")
    if not p.is_file():
        raise DataError(f"{p} is not a file (a folder?); give the path of an image file.")
    try:
        size = p.stat().st_size
        fh = open(p, "rb")
    except OSError as exc:
        raise DataError(f"cannot read {p}: {exc.strerror or exc}. Check the file's permissions.") from None
    if size == 0:
        fh.close()
        raise DataError(f"{p} is empty (0 bytes). Re-download or re-export the file, or leave it out.")
    try:
        with fh, warnings.catch_warnings():
            # a DecompressionBombWarning is an honest large image, not corruption
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fh)
            img.load()  # decode now so truncation is detected here, not later
    except Image.DecompressionBombError as exc:
        raise DataError(f"{p} is too large to decode safely ({exc}); resize it or check that it is an image.") from None
    except UnidentifiedImageError:
        raise DataError(f"{p} is not an image Pillow can read (PNG, JPEG, WEBP, BMP, TIFF, ...). Leave it out "
                        f"or convert it to PNG.") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file makes Pillow's decoders raise many types
        raise DataError(
            f"cannot decode {p}: {exc}. The file is corrupt or truncated; re-download it or remove it from the "
            f"data set.") from None
    if img.width < 1 or img.height < 1:
        raise DataError(f"{p} has no pixels ({img.width}x{img.height}); re-export it or remove it from the data set.")
    return img


def _high_depth_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale a 16-bit (or 32-bit int holding 16-bit) grey image to 8 bits by dropping the low byte."""
    arr = arr.astype(np.int64, copy=False)
    if arr.size and int(arr.max()) > 0xFFFF:
        # values beyond 16 bits: scale by the actual range instead of guessing
        arr = arr * 255 // max(int(arr.max()), 1)
        return arr.astype(np.uint8)
    return (np.clip(arr, 0, 0xFFFF) >> 8).astype(np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file (PNG/JPEG/WEBP/...) to a contiguous uint8 ``H x W x 3`` RGB array.

    Grey images are replicated to three channels, alpha is dropped, 16-bit
    images are scaled to 8 bits, palette/CMYK images are converted to RGB.
    """
    img = _open(path)
    mode = img.mode
    if mode == "RGB":
        arr = np.asarray(img)
    elif mode in _HIGH_DEPTH_MODES:
        grey = _high_depth_to_uint8(np.asarray(img))
        arr = np.repeat(grey[:, :, None], 3, axis=2)
    elif mode == "F":
        raise DataError(f"{path} holds floating-point pixels (mode 'F'), not a photograph; convert it to 8-bit RGB.")
    else:
        # L, LA, P, PA, RGBA, CMYK, YCbCr, 1, ...: Pillow's conversion is the sensible one
        # (RGBA -> RGB drops alpha, P -> RGB applies the palette).
        arr = np.asarray(img.convert("RGB"))
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:  # pragma: no cover - defensive, Pillow guarantees RGB here
        raise DataError(f"{path} decoded to shape {arr.shape}, expected H x W x 3")
    if not arr.flags.writeable:
        arr = arr.copy()
    return arr


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Decode a label image to a uint8 ``H x W`` array of indices.

    Palette ('P') images are read as their indices, never as colours;
    1-bit masks become 0/1; 16-bit files are accepted when every value fits
    in 8 bits. RGB files are accepted only when all channels are equal
    (a grey mask saved as RGB); a real colour mask is an error.
    """
    img = _open(path)
    mode = img.mode
    if mode in ("L", "P"):
        arr = np.asarray(img)
    elif mode == "1":
        arr = np.asarray(img).astype(np.uint8)
    elif mode in ("LA", "PA"):
        arr = np.asarray(img)[:, :, 0]
    elif mode in _HIGH_DEPTH_MODES:
        wide = np.asarray(img)
        if wide.size and (int(wide.max()) > 255 or int(wide.min()) < 0):
            raise DataError(
                f"label file {path} holds values up to {int(wide.max())}; labels must be 0..255. "
                "Save the mask as an 8-bit ('L' or 'P') PNG."
            )
        arr = wide.astype(np.uint8)
    elif mode in ("RGB", "RGBA"):
        rgb = np.asarray(img)[:, :, :3]
        if not (np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2])):
            raise DataError(
                f"label file {path} is a colour image (mode {mode}); expected a single-channel index mask. "
                "Use the *_labelIds / *_labels_semantic files, not the *_color visualisations."
            )
        arr = rgb[:, :, 0]
    else:
        raise DataError(f"label file {path} has unsupported mode {mode!r}; save it as an 8-bit grey or palette PNG.")
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if not arr.flags.writeable:
        arr = arr.copy()
    return arr


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding the pixels."""
    p = Path(path)
    try:
        with Image.open(p) as img:
            return img.size
    except FileNotFoundError:
        raise DataError(f"image file not found: {p}. Check the path (and that the data set is complete).") from None
    except UnidentifiedImageError:
        raise DataError(f"{p} is not an image Pillow can read; remove it from the data set or convert it to "
                        f"PNG.") from None
    except Exception as exc:  # noqa: BLE001 - see _open
        raise DataError(f"cannot read {p}: {exc}. Re-download the file or remove it from the data set.") from None
