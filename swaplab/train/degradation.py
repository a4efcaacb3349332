"""Synthetic degradations of aligned faces: blur, downscale, noise and JPEG, then back to size.

What a swapped face upscaled onto a large frame looks like: the face restorer learns to undo them,
and the face segmenter's training degrades whole crops with them so that a pasted occluder's
foreign sharpness does not give it away. Pure numpy/cv2.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from swaplab.config import ConfigError

__all__ = ["DegradationConfig", "degrade_face", "degraded_set"]


@dataclass
class DegradationConfig:
    """The synthetic degradations: each drawn uniformly from its range per face."""

    downscale: tuple[float, float] = (2.0, 4.0)
    blur_sigma: tuple[float, float] = (0.0, 1.5)  # pixels, before downscaling
    noise_sigma: tuple[float, float] = (0.0, 6.0)  # grey levels, at the low resolution
    jpeg_quality: tuple[int, int] = (40, 95)

    def __post_init__(self) -> None:
        if self.downscale[0] < 1 or self.downscale[1] < self.downscale[0]:
            raise ConfigError(f"degrade.downscale must be an increasing range from >= 1, got {self.downscale}")


def degrade_face(image: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig | None = None) -> np.ndarray:
    """A degraded copy of an RGB uint8 (S, S, 3) face of the same size: blurred, downscaled, noisy,
    JPEG-compressed, and upscaled back with bicubic interpolation."""
    cfg = cfg or DegradationConfig()
    size = image.shape[0]
    out = image.astype(np.float32)
    sigma = rng.uniform(*cfg.blur_sigma)
    if sigma > 0.2:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma)
    small = max(8, round(size / rng.uniform(*cfg.downscale)))
    out = cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA)
    out = out + rng.normal(0.0, rng.uniform(*cfg.noise_sigma), out.shape)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    ok, encoded = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if ok:
        out = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(cv2.resize(out, (size, size), interpolation=cv2.INTER_CUBIC))


def degraded_set(faces: np.ndarray, seed: int, cfg: DegradationConfig | None = None) -> np.ndarray:
    """Each face degraded once with a seeded draw (evaluation sets)."""
    rng = np.random.default_rng(seed)
    return np.stack([degrade_face(face, rng, cfg) for face in faces])
