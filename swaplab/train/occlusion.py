"""Synthetic occluders pasted onto aligned faces, so an occlusion-aware refiner (HEAR-Net) has
something to restore.

Three kinds, each a random shape over the middle of the crop: ``cutout`` (a region cut from another
image of the batch, at another place: an object that does not belong), ``hand`` (a palm and four
or five fingers in a skin tone with shading) and ``texture`` (a blob of random stripes and noise).
Pure batched tensor functions on (N, 3, R, R) images in [0, 1]; the draw is a pure function of the
seed. Nothing here trains or reads files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from swaplab.config import ConfigError

Tensor = torch.Tensor
OccluderKind = Literal["cutout", "hand", "texture"]
KINDS: tuple[str, ...] = ("cutout", "hand", "texture")


@dataclass
class OcclusionConfig:
    """How often and what to paste: ``probability`` per target, ``kinds`` drawn uniformly, sizes as
    a share of the crop's side."""

    probability: float = 0.5
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    min_size: float = 0.2
    max_size: float = 0.4

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigError(f"occlusion.probability must be in [0, 1], got {self.probability}")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ConfigError(f"occlusion.kinds must be some of {', '.join(KINDS)}, got {self.kinds}")
        if not 0.0 < self.min_size <= self.max_size <= 1.0:
            raise ConfigError(f"need 0 < occlusion.min_size <= max_size <= 1, got {self.min_size}, {self.max_size}")


def _grid(size: int) -> tuple[Tensor, Tensor]:
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    return ys, xs


def ellipse_mask(size: int, cy: float, cx: float, ry: float, rx: float, angle: float) -> Tensor:
    """(size, size) bool: inside the ellipse of centre (cy, cx), radii (ry, rx), rotated by ``angle`` rad."""
    ys, xs = _grid(size)
    c, s = math.cos(angle), math.sin(angle)
    u = (xs - cx) * c + (ys - cy) * s
    v = -(xs - cx) * s + (ys - cy) * c
    return (u / max(rx, 1e-3)) ** 2 + (v / max(ry, 1e-3)) ** 2 <= 1.0


def capsule_mask(size: int, start: tuple[float, float], end: tuple[float, float], radius: float) -> Tensor:
    """(size, size) bool: within ``radius`` of the segment from ``start`` to ``end`` ((y, x) points)."""
    ys, xs = _grid(size)
    (y0, x0), (y1, x1) = start, end
    dy, dx = y1 - y0, x1 - x0
    t = (((ys - y0) * dy + (xs - x0) * dx) / max(dy * dy + dx * dx, 1e-6)).clamp(0.0, 1.0)
    return (ys - (y0 + t * dy)) ** 2 + (xs - (x0 + t * dx)) ** 2 <= radius * radius


def hand_mask(size: int, cy: float, cx: float, scale: float, angle: float, fingers: int) -> Tensor:
    """A hand-like silhouette: an elliptic palm and ``fingers`` capsules fanning out from its top."""
    mask = ellipse_mask(size, cy, cx, 0.5 * scale, 0.42 * scale, angle)
    for k in range(fingers):
        spread = (k - (fingers - 1) / 2) * 0.28
        direction = angle - math.pi / 2 + spread
        base = (cy + 0.35 * scale * math.sin(direction), cx + 0.35 * scale * math.cos(direction))
        length = scale * (0.55 + 0.15 * math.cos(spread * 3))
        tip = (base[0] + length * math.sin(direction), base[1] + length * math.cos(direction))
        mask |= capsule_mask(size, base, tip, 0.09 * scale)
    return mask


def _texture(size: int, rng: torch.Generator) -> Tensor:
    """(3, size, size) random stripes in two random colours plus noise."""
    ys, xs = _grid(size)
    angle = float(torch.rand(1, generator=rng)) * math.pi
    period = 3.0 + float(torch.rand(1, generator=rng)) * size / 6
    wave = 0.5 + 0.5 * torch.sin((xs * math.cos(angle) + ys * math.sin(angle)) * 2 * math.pi / period)
    a, b = torch.rand(3, 1, 1, generator=rng), torch.rand(3, 1, 1, generator=rng)
    noise = torch.rand(3, size, size, generator=rng) * 0.2 - 0.1
    return (a * wave + b * (1 - wave) + noise).clamp(0.0, 1.0)


def _skin(size: int, cy: float, scale: float, rng: torch.Generator) -> Tensor:
    """(3, size, size) a skin tone with a vertical shading gradient."""
    tones = torch.tensor([[0.96, 0.80, 0.69], [0.88, 0.67, 0.53], [0.72, 0.51, 0.38], [0.45, 0.31, 0.22]])
    i = int(torch.randint(len(tones), (1,), generator=rng))
    j = min(i + 1, len(tones) - 1)
    t = float(torch.rand(1, generator=rng))
    colour = (tones[i] * (1 - t) + tones[j] * t).view(3, 1, 1)
    ys, _ = _grid(size)
    shade = 1.0 - 0.25 * ((ys - cy) / max(scale, 1.0)).clamp(-1, 1)
    return (colour * shade).clamp(0.0, 1.0)


def paste_occluders(images: Tensor, seed: int, cfg: OcclusionConfig | None = None) -> tuple[Tensor, Tensor]:
    """(occluded images, masks): ``images`` (N, 3, R, R) in [0, 1] with occluders pasted on some of
    them; masks (N, 1, R, R) float, 1 where an occluder covers the face. The inputs are not changed."""
    cfg = cfg or OcclusionConfig()
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"expected square RGB images (N, 3, R, R), got {tuple(images.shape)}")
    n, size = len(images), images.shape[-1]
    rng = torch.Generator().manual_seed(seed)
    source = images.detach().float().cpu()
    out = source.clone()
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        if float(torch.rand(1, generator=rng)) >= cfg.probability:
            continue
        kind = cfg.kinds[int(torch.randint(len(cfg.kinds), (1,), generator=rng))]
        scale = size * (cfg.min_size + (cfg.max_size - cfg.min_size) * float(torch.rand(1, generator=rng)))
        cy, cx = (size * (0.25 + 0.5 * float(v)) for v in torch.rand(2, generator=rng))
        angle = float(torch.rand(1, generator=rng)) * 2 * math.pi
        if kind == "hand":
            fingers = 4 + int(torch.randint(2, (1,), generator=rng))
            mask = hand_mask(size, cy, cx, scale, angle, fingers)
            fill = _skin(size, cy, scale, rng)
        else:
            aspect = 0.5 + float(torch.rand(1, generator=rng))
            mask = ellipse_mask(size, cy, cx, scale / 2, scale / 2 * aspect, angle)
            if kind == "texture":
                fill = _texture(size, rng)
            else:  # cutout: another image of the batch, shifted, so the object is out of place
                donor = (i + 1 + int(torch.randint(max(n - 1, 1), (1,), generator=rng))) % n if n > 1 else i
                shift = [int(v) for v in torch.randint(size // 4, size // 2 + 1, (2,), generator=rng)]
                fill = torch.roll(source[donor], shifts=shift, dims=(1, 2))
        out[i] = torch.where(mask, fill, out[i])
        masks[i, 0] = mask.float()
    return out.to(images.device, images.dtype), masks.to(images.device)
