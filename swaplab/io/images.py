"""Reading and writing still images at the library's boundary.

Every image comes out of ``read_image`` as an RGB uint8 HxWx3 array, whatever it was on disk:
EXIF-rotated, grayscale, palette, alpha, CMYK or 16-bit. Files that cannot be decoded, are
truncated, or are too large to hold in memory raise ``MediaError`` naming the file and the reason;
callers skip them and carry on. Nothing here guesses silently: every conversion is reported.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from swaplab.io.atomic import atomic_path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".gif", ".mpg", ".mpeg"})

#: Images above this many pixels are decoded at a reduced size (JPEG) or resized after decoding.
DEFAULT_MAX_PIXELS = 40_000_000
#: Images above this many pixels are refused unless the decoder can shrink them while decoding:
#: a 20000x20000 RGB PNG needs 1.2 GB just for its pixels.
HARD_MAX_PIXELS = 120_000_000

# Pillow's own guard would raise on our refused sizes before we can explain; we check ourselves.
Image.MAX_IMAGE_PIXELS = None


class MediaError(Exception):
    """A media file that cannot be used, with the path and a human-readable reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class ImageInfo:
    """What ``read_image`` did to get an RGB uint8 array, for logs and metadata."""

    path: str
    original_size: tuple[int, int]  # (width, height) on disk, after EXIF rotation
    mode: str  # Pillow mode on disk: RGB, L, RGBA, CMYK, I;16 ...
    scale: float = 1.0  # returned size / original size
    notes: list[str] = field(default_factory=list)


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_video_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def read_image(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, hard_max_pixels: int = HARD_MAX_PIXELS
) -> tuple[np.ndarray, ImageInfo]:
    """Decode ``path`` to RGB uint8 (H, W, 3), honouring EXIF orientation.

    Images larger than ``max_pixels`` are downscaled (for JPEG during decoding, so memory stays
    bounded); images larger than ``hard_max_pixels`` that cannot be shrunk while decoding are
    refused. Raises ``MediaError`` for missing, empty, truncated or undecodable files.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "no such file")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                return _decode(img, path, max_pixels, hard_max_pixels)
    except MediaError:
        raise
    except UnidentifiedImageError:
        raise MediaError(path, "not an image Pillow can identify (unsupported or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as err:
        reason = str(err) or type(err).__name__
        if "truncated" in reason.lower() or "premature" in reason.lower():
            reason = f"truncated or partially written file ({reason})"
        raise MediaError(path, f"cannot decode: {reason}") from None
    except MemoryError:
        raise MediaError(path, "not enough memory to decode this image") from None


def _decode(img: Image.Image, path: Path, max_pixels: int, hard_max_pixels: int) -> tuple[np.ndarray, ImageInfo]:
    width, height = img.size
    pixels = width * height
    info = ImageInfo(path=str(path), original_size=(width, height), mode=img.mode)
    if pixels > max_pixels:
        if img.format == "JPEG":
            # JPEG can decode at 1/2, 1/4 or 1/8 scale through DCT scaling: memory stays bounded.
            scale = (max_pixels / pixels) ** 0.5
            img.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
            info.notes.append(f"decoded at reduced size {img.size[0]}x{img.size[1]} from {width}x{height}")
        elif pixels > hard_max_pixels:
            raise MediaError(
                path,
                f"image too large ({width}x{height} = {pixels / 1e6:.0f} MP, limit "
                f"{hard_max_pixels / 1e6:.0f} MP for {img.format or 'this format'}); downscale it first",
            )
    img.load()  # decoding errors (truncation) surface here
    decoded_width = img.size[0]  # may be smaller than ``width`` after JPEG draft decoding
    rotated = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    img = ImageOps.exif_transpose(img)
    if rotated:
        info.notes.append("rotated upright by EXIF orientation")
        info.original_size = (height, width)
    if getattr(img, "is_animated", False):
        info.notes.append("animated image: first frame used")
    rgb = _to_rgb(img, info)
    out_pixels = rgb.shape[0] * rgb.shape[1]
    if out_pixels > max_pixels:
        import cv2

        shrink = (max_pixels / out_pixels) ** 0.5
        size = (max(1, int(rgb.shape[1] * shrink)), max(1, int(rgb.shape[0] * shrink)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        info.notes.append(f"downscaled to {size[0]}x{size[1]} (over {max_pixels / 1e6:.0f} MP)")
    info.scale = (decoded_width / width) * (rgb.shape[1] / img.size[0])
    return np.ascontiguousarray(rgb), info


def _to_rgb(img: Image.Image, info: ImageInfo) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit integer) grey: scale to 8 bits by the actual bit depth in use.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        info.notes.append(f"converted {mode} grey to 8-bit RGB")
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        grey = np.clip((arr - lo) / max(hi - lo, 1e-12) * 255 + 0.5, 0, 255).astype(np.uint8)
        info.notes.append("converted floating-point grey to 8-bit RGB")
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Composite on white rather than dropping alpha: transparent pixels would otherwise show
        # whatever colour the encoder left under them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        info.notes.append("alpha channel composited on white")
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode == "CMYK":
        info.notes.append("converted CMYK to RGB")
    elif mode in ("L", "1", "P"):
        info.notes.append(f"converted {mode} to RGB")
    elif mode != "RGB":
        info.notes.append(f"converted {mode} to RGB")
    # 16-bit RGB PNGs arrive from Pillow as 8-bit RGB already (it reduces them on load).
    return np.asarray(img.convert("RGB"))


def encode_image(image: np.ndarray, suffix: str = ".png", quality: int = 95, pnginfo: object = None) -> bytes:
    """Encode an RGB uint8 array to bytes in the format named by ``suffix``."""
    _check_rgb(image)
    buffer = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}.get(suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot write images as {suffix!r}; use .jpg, .png, .webp or .bmp")
    kwargs: dict[str, object] = {}
    if fmt == "JPEG":
        kwargs = {"quality": quality, "subsampling": 0 if quality >= 90 else 2}
    elif fmt == "PNG":
        kwargs = {"compress_level": 1}  # 4x faster than the default at a 10-20 % size cost
        if pnginfo is not None:
            kwargs["pnginfo"] = pnginfo
    elif fmt == "WEBP":
        kwargs = {"quality": quality}
    Image.fromarray(image).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def write_image(path: str | Path, image: np.ndarray, quality: int = 95, pnginfo: object = None) -> Path:
    """Write an RGB uint8 array atomically; the format follows the suffix."""
    path = Path(path)
    data = encode_image(image, path.suffix, quality=quality, pnginfo=pnginfo)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _check_rgb(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 HxWx3 array, got {image.dtype} {image.shape}")


# Pillow refuses truncated JPEGs by default; keep that so a half-written file is reported, not
# silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
