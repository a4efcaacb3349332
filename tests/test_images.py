"""Reading every awkward image users throw at an extractor: each gives RGB uint8 or a clear error."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swaplab.io.atomic import atomic_write_text
from swaplab.io.images import MediaError, read_image, write_image


def _gradient(w: int = 64, h: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], axis=2).astype(np.uint8)


def test_rgb_round_trip_png(tmp_path: Path) -> None:
    image = _gradient()
    path = write_image(tmp_path / "a b ünï.png", image)  # spaces and non-ASCII in the path
    out, info = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (48, 64, 3)
    np.testing.assert_array_equal(out, image)
    assert info.notes == [] and info.scale == 1.0


def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    grey = _gradient()[..., 0]
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    out, info = read_image(tmp_path / "g.png")
    assert out.shape == (48, 64, 3)
    np.testing.assert_array_equal(out[..., 0], grey)
    np.testing.assert_array_equal(out[..., 1], grey)
    assert any("converted L" in n for n in info.notes)


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255  # top half opaque red-ish, bottom half fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out, info = read_image(tmp_path / "a.png")
    assert tuple(out[0, 0]) == (200, 0, 0)
    assert tuple(out[9, 9]) == (255, 255, 255)
    assert any("alpha" in n for n in info.notes)


def test_16_bit_grey_png_scales_to_8_bit(tmp_path: Path) -> None:
    values = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 655).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode.startswith("I")
    out, _ = read_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[9, 9, 0] == round(99 * 655 / 65535 * 255)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.fromarray(_gradient()).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    out, info = read_image(tmp_path / "c.jpg")
    assert out.shape == (48, 64, 3)
    assert np.abs(out.astype(int) - _gradient().astype(int)).mean() < 12
    assert any("CMYK" in n for n in info.notes)


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    image = _gradient(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    Image.fromarray(image).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out, info = read_image(tmp_path / "r.jpg")
    assert out.shape == (64, 48, 3)  # upright: width and height swapped
    assert info.original_size == (48, 64)
    assert any("EXIF" in n for n in info.notes)
    # Orientation 6 means the stored top row becomes the right-hand column.
    stored_top_left = image[0, 0].astype(int)
    assert np.abs(out[0, -1].astype(int) - stored_top_left).max() < 20


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"this is not an image at all", "not an image"),
    ],
)
def test_unreadable_files_name_the_problem(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(MediaError) as err:
        read_image(path)
    assert reason in err.value.reason and str(path) in str(err.value)


def test_truncated_jpeg_is_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(tmp_path / "t.jpg", quality=90)
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError) as err:
        read_image(tmp_path / "t.jpg")
    assert "truncated" in err.value.reason


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no such file"):
        read_image(tmp_path / "nope.png")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but carries almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100))


def test_huge_png_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(20000, 20000))
    with pytest.raises(MediaError) as err:
        read_image(path)
    assert "too large" in err.value.reason and "20000x20000" in err.value.reason


def test_big_jpeg_is_decoded_at_reduced_size(tmp_path: Path) -> None:
    Image.fromarray(np.tile(_gradient(200, 150), (8, 8, 1))).save(tmp_path / "big.jpg", quality=90)
    out, info = read_image(tmp_path / "big.jpg", max_pixels=200_000)
    assert out.shape[0] * out.shape[1] <= 200_000
    assert out.shape[1] / out.shape[0] == pytest.approx(1600 / 1200, rel=0.02)
    assert info.scale == pytest.approx(out.shape[1] / 1600)
    assert any("reduced size" in n or "downscaled" in n for n in info.notes)


def test_big_png_is_downscaled_not_refused_below_hard_limit(tmp_path: Path) -> None:
    Image.fromarray(np.tile(_gradient(200, 150), (4, 4, 1))).save(tmp_path / "big.png")
    out, info = read_image(tmp_path / "big.png", max_pixels=100_000, hard_max_pixels=1_000_000)
    assert out.shape[0] * out.shape[1] <= 100_000
    assert info.scale == pytest.approx(out.shape[1] / 800)


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "cfg.txt"
    atomic_write_text(target, "old")

    class Boom(Exception):
        pass

    from swaplab.io.atomic import atomic_open

    with pytest.raises(Boom), atomic_open(target) as handle:
        handle.write("new but unfinished")
        raise Boom
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["cfg.txt"]  # no temporary left behind


def test_real_photos_all_decode(shared_data: Path) -> None:
    photos = sorted(p for p in (shared_data / "photos").rglob("*") if p.suffix.lower() in {".jpg", ".png", ".jpeg"})
    assert len(photos) > 20
    for path in photos:
        image, _ = read_image(path)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
