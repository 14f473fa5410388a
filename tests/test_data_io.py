"""read_image / read_labels: modes, formats, corrupt files (references built with NumPy, not the code under test)."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from sml.data import image_size, read_image, read_labels
from sml.errors import DataError

RNG = np.random.default_rng(0)


def _rgb(h: int = 5, w: int = 7) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".png", ".webp", ".bmp", ".tif"])
def test_read_image_lossless_formats_roundtrip(tmp_path, ext):
    arr = _rgb()
    p = tmp_path / f"a{ext}"
    Image.fromarray(arr).save(p, **({"lossless": True} if ext == ".webp" else {}))
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, arr)


def test_read_image_jpeg_matches_full_decode(tmp_path):
    # a JPEG must be decoded at full resolution (no draft mode): same pixels as Pillow's plain decode
    arr = RNG.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    p = tmp_path / "a.jpg"
    Image.fromarray(arr).save(p, quality=90)
    ref = np.array(Image.open(p).convert("RGB"))
    np.testing.assert_array_equal(read_image(p), ref)


def test_read_image_grey_is_replicated(tmp_path):
    g = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.stack([g, g, g], axis=2))


def test_read_image_rgba_drops_alpha(tmp_path):
    rgba = RNG.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[:, :, :3])


def test_read_image_palette_applies_colours(tmp_path):
    idx = RNG.integers(0, 4, (4, 6), dtype=np.uint8)
    pal = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [10, 20, 30]], dtype=np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette(pal.ravel().tolist())
    img.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), pal[idx])


def test_read_image_16bit_grey_scaled_to_8bit(tmp_path):
    g16 = RNG.integers(0, 65536, (4, 6), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    expected = (g16 // 256).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png"), np.stack([expected] * 3, axis=2))


def test_read_image_truncated_names_file_and_fix(tmp_path):
    p = tmp_path / "broken.png"
    Image.fromarray(_rgb(64, 64)).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"broken\.png.*(re-download|remove)"):
        read_image(p)


@pytest.mark.parametrize("payload", [b"", b"not an image at all"])
def test_read_image_garbage(tmp_path, payload):
    p = tmp_path / "x.jpg"
    p.write_bytes(payload)
    with pytest.raises(DataError, match="x.jpg"):
        read_image(p)


def test_read_image_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "nope.png")


def test_read_image_says_what_is_wrong(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png is empty \(0 bytes\).*(Re-download|leave it out)"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "notes.png").write_text("a text file with an image name\n")
    with pytest.raises(DataError, match=r"notes\.png is not an image.*convert it to PNG"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(DataError, match=r"notes\.png is not an image"):
        image_size(tmp_path / "notes.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(DataError, match=r"dir\.png is not a file"):
        read_labels(tmp_path / "dir.png")
    with pytest.raises(DataError, match="not found"):
        image_size(tmp_path / "nope.png")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_read_image_unreadable_file_is_not_called_corrupt(tmp_path):
    p = tmp_path / "locked.png"
    Image.fromarray(_rgb()).save(p)
    p.chmod(0)
    with pytest.raises(DataError, match=r"cannot read .*locked\.png.*permission") as info:
        read_image(p)
    assert "corrupt" not in str(info.value)


def test_read_labels_palette_gives_indices_not_colours(tmp_path):
    idx = RNG.integers(0, 3, (5, 5), dtype=np.uint8)
    idx[0, 0] = 255
    img = Image.fromarray(idx, mode="P")
    img.putpalette([200, 10, 10] * 256)  # every index the same colour: colours would lose the labels
    img.save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_labels(tmp_path / "m.png"), idx)


def test_read_labels_grey_1bit_16bit_and_grey_rgb(tmp_path):
    lab = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    Image.fromarray(lab, mode="L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_labels(tmp_path / "l.png"), lab)

    bits = RNG.integers(0, 2, (4, 6)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_labels(tmp_path / "b.png"), bits.astype(np.uint8))

    Image.fromarray(lab.astype(np.uint16)).save(tmp_path / "w.png")
    np.testing.assert_array_equal(read_labels(tmp_path / "w.png"), lab)

    Image.fromarray(np.stack([lab] * 3, axis=2)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_labels(tmp_path / "rgb.png"), lab)


def test_read_labels_rejects_colour_masks_and_wide_values(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "color.png")
    with pytest.raises(DataError, match=r"color\.png.*colour"):
        read_labels(tmp_path / "color.png")
    Image.fromarray(np.full((3, 3), 1000, dtype=np.uint16)).save(tmp_path / "wide.png")
    with pytest.raises(DataError, match=r"wide\.png.*1000"):
        read_labels(tmp_path / "wide.png")


def test_image_size_from_header(tmp_path):
    Image.fromarray(_rgb(3, 11)).save(tmp_path / "s.png")
    assert image_size(tmp_path / "s.png") == (11, 3)
