"""Batched training augmentation, one ``Augmenter`` for every recipe: random warp, affine jitter,
flip, colour, greyscale and JPEG re-encoding.

Everything runs on whole batches of tensors (N, C, H, W), RGB in [0, 1], square faces, with a
constant number of Python steps per batch, and draws every random number from the caller's
``torch.Generator`` (so a seed reproduces a run). An autoencoder sees the *warped* face and learns
to produce the unwarped *target*; geometry (affine jitter, flip) and colour changes are applied to
both alike, so they vary the data without asking the model to undo them. Classifiers (identity
networks, swap detectors) use the target alone. No file I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import kornia
import torch
from torch.nn import functional as F

Tensor = torch.Tensor

#: DeepFaceLab's displacement of a warp grid point: a normal with std 0.24 cell sizes.
WARP_CELL_STD = 0.24
#: DeepFaceLab picks, per sample, a warp grid of 2, 4 or 8 cells across the face.
WARP_CELLS = (2, 4, 8)

# RGB <-> YIQ: luma Y and two chroma axes; a rotation of (I, Q) shifts hue, a scale of (I, Q)
# changes saturation, both without touching luma.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])


def _draw_uniform(n: int, amount: float, generator: torch.Generator | None) -> Tensor:
    """n values uniform in [-amount, amount] (drawn even when amount is 0, to keep RNG streams fixed)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return (torch.rand(n, generator=generator, device=device) * 2.0 - 1.0) * amount


def random_warp_field(
    n: int,
    height: int,
    width: int,
    strength: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Smooth random displacements (N, H, W, 2) in ``grid_sample``'s normalised units.

    As DeepFaceLab's random warp: per sample a grid of 2, 4 or 8 cells; its interior points move
    by a normal of std 0.24 cells x ``strength`` while its border stays fixed; the coarse offsets
    are upsampled bicubically (smooth, unlike DeepFaceLab's piecewise-linear resize).
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    levels = torch.randint(len(WARP_CELLS), (n,), generator=generator, device=gen_device).to(device)
    field = torch.zeros(n, 2, height, width, device=device)
    for index, cells in enumerate(WARP_CELLS):
        std = WARP_CELL_STD * (2.0 / cells) * strength  # a cell spans 2 / cells normalised units
        offsets = torch.randn(n, 2, cells - 1, cells - 1, generator=generator, device=gen_device) * std
        offsets = F.pad(offsets.to(device), (1, 1, 1, 1))  # fixed border points
        dense = F.interpolate(offsets, size=(height, width), mode="bicubic", align_corners=True)
        field = torch.where((levels == index).view(n, 1, 1, 1), dense, field)
    return field.permute(0, 2, 3, 1)


def random_warp(images: Tensor, strength: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Warp ``images`` (N, C, H, W) by a random smooth displacement field; strength 0 = identity."""
    n, _, height, width = images.shape
    field = random_warp_field(n, height, width, strength, generator, images.device)
    grid = identity_grid(n, height, width, images.device) + field
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def identity_grid(n: int, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """The sampling grid (N, H, W, 2) that reproduces an image exactly (pixel centres)."""
    theta = torch.eye(2, 3, device=device).expand(n, 2, 3)
    return F.affine_grid(theta, [n, 1, height, width], align_corners=False)


def affine_theta(rotation_deg: Tensor, scale: Tensor, shift_x: Tensor, shift_y: Tensor, flip: Tensor) -> Tensor:
    """Per-sample ``affine_grid`` matrices (N, 2, 3): output -> input coordinates.

    The forward transform rotates by ``rotation_deg`` and scales by ``scale`` about the centre,
    shifts by ``shift_x``/``shift_y`` (fractions of the side), then mirrors x where ``flip``.
    """
    angle = torch.deg2rad(rotation_deg)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # Inverse of s * R(angle): R(-angle) / s.
    inverse = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    mirror = torch.ones_like(rotation_deg)
    mirror = torch.where(flip, -mirror, mirror)
    inverse = inverse * torch.stack([mirror, torch.ones_like(mirror)], -1).unsqueeze(-2)
    shift = torch.stack([shift_x, shift_y], -1) * 2.0  # fractions of the side -> normalised units
    translation = -(inverse @ shift.unsqueeze(-1))
    return torch.cat([inverse, translation], dim=-1)


def color_jitter_matrix(hue_deg: Tensor, saturation: Tensor) -> Tensor:
    """Per-sample RGB->RGB matrices (N, 3, 3) rotating hue by ``hue_deg`` and scaling chroma."""
    to_yiq = _RGB_TO_YIQ.to(hue_deg.device)
    angle = torch.deg2rad(hue_deg)
    cos, sin = torch.cos(angle) * saturation, torch.sin(angle) * saturation
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    chroma = torch.stack(
        [
            torch.stack([one, zero, zero], -1),
            torch.stack([zero, cos, -sin], -1),
            torch.stack([zero, sin, cos], -1),
        ],
        -2,
    )
    return torch.linalg.inv(to_yiq) @ chroma @ to_yiq


def apply_color_jitter(images: Tensor, matrix: Tensor, brightness: Tensor, contrast: Tensor) -> Tensor:
    """Apply per-sample colour ``matrix`` (N, 3, 3), then contrast about the mean and brightness."""
    out = torch.einsum("nij,njhw->nihw", matrix.to(images.dtype), images)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast.view(-1, 1, 1, 1) + mean + brightness.view(-1, 1, 1, 1)
    return out.clamp(0.0, 1.0)


def shift_whole_pixels(images: Tensor, shifts: list[list[int]], pad: int) -> Tensor:
    """Each image (N, C, H, W) moved by its (dy, dx) whole pixels, with reflected borders."""
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    height, width = images.shape[-2:]
    return torch.stack(
        [padded[i, :, pad - dy : pad - dy + height, pad - dx : pad - dx + width] for i, (dy, dx) in enumerate(shifts)]
    )


def jpeg_roundtrip(images: Tensor, which: Tensor, quality: Tensor) -> Tensor:
    """``images`` (N, 3, H, W) in [0, 1] with the rows in ``which`` encoded and decoded as JPEG at
    ``quality`` (per row), through 8 bits as a saved photo would be."""
    import cv2
    import numpy as np

    rows = which.nonzero().flatten().tolist()
    if not rows:
        return images
    out = images.clone()
    for row in rows:
        rgb = (images[row].detach().float().clamp(0, 1).permute(1, 2, 0) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality[row])]
        ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), params)  # libjpeg wants BGR
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG")
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].copy()
        out[row] = torch.from_numpy(decoded).permute(2, 0, 1).to(images) / 255.0
    return out


def _lab_stats(lab: Tensor, mask: Tensor | None, eps: float) -> tuple[Tensor, Tensor]:
    weight = torch.ones_like(lab[:, :1]) if mask is None else mask.to(lab.dtype)
    area = weight.sum(dim=(2, 3), keepdim=True) + eps
    mean = (lab * weight).sum(dim=(2, 3), keepdim=True) / area
    var = ((lab - mean) ** 2 * weight).sum(dim=(2, 3), keepdim=True) / area
    return mean, var.clamp_min(0).sqrt()


def rct_transfer(
    source: Tensor,
    reference: Tensor,
    source_mask: Tensor | None = None,
    reference_mask: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Reinhard colour transfer ("rct"): give ``source`` the Lab mean and std of ``reference``.

    Per image pair (N, 3, H, W each, same N): statistics inside the masks if given, the transfer
    applied to the whole source image, then clipped back to RGB in [0, 1].
    """
    src_lab = kornia.color.rgb_to_lab(source.float())
    ref_lab = kornia.color.rgb_to_lab(reference.float())
    src_mean, src_std = _lab_stats(src_lab, source_mask, eps)
    ref_mean, ref_std = _lab_stats(ref_lab, reference_mask, eps)
    lab = (src_lab - src_mean) * (ref_std / (src_std + eps)) + ref_mean
    lab = torch.cat([lab[:, :1].clamp(0, 100), lab[:, 1:].clamp(-127, 127)], dim=1)
    return kornia.color.lab_to_rgb(lab, clip=True).to(source.dtype)


@dataclass
class AugmentConfig:
    """Augmentation of one identity's batch. Defaults: DeepFaceLab's warp and affine ranges.

    ``flip_prob`` defaults to 0: a mirrored face is a slightly different identity (faces are
    asymmetric: partings, moles, lopsided smiles), so for per-pair models flips teach the wrong
    face; turn it on for identity-agnostic models or tiny facesets. DeepFaceLab uses 0.4 when
    its random flip option is on. Colour jitter is applied identically to input and target.
    """

    warp: bool = True
    warp_strength: float = 1.0
    rotation_deg: float = 10.0
    scale: float = 0.05
    translation: float = 0.05
    flip_prob: float = 0.0
    brightness: float = 0.05
    contrast: float = 0.1
    saturation: float = 0.1
    hue_deg: float = 5.0
    color_transfer: Literal["none", "rct"] = "none"
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    padding: Literal["border", "reflection", "zeros"] = "border"  # what geometry pulls in at the edges
    grayscale_prob: float = 0.0  # share of faces turned grey (after the colour jitter)
    # Share of faces re-encoded as JPEG (first, at a quality drawn from ``jpeg_quality``): a
    # classifier must not learn "has JPEG blocks" in place of what it is asked to see.
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (60, 95)
    # Whole-pixel shifts of up to this many pixels, reflected at the edges: alignment jitter that
    # keeps pixel-level texture intact (a sub-pixel ``translation`` resamples, which blurs it).
    shift_pixels: int = 0


class Augmenter:
    """Apply an ``AugmentConfig`` to a dict batch.

    Input: ``{"image": (N, 3, H, W), "mask": (N, 1, H, W), ...}``; every other 4-D tensor of the
    same N, H, W (e.g. ``"eyes_mouth"``) is moved with the target's geometry (zero padding, no
    colour change); other entries pass through unchanged (landmarks are *not* transformed).
    Output: the same dict without ``"image"``, plus ``"warped"`` (the model input) and
    ``"target"`` (aligned with the masks). ``reference`` (N', 3, H, W) is the other identity's
    batch, used by ``color_transfer="rct"`` (each sample takes a random reference's colours).
    """

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()

    def __call__(
        self,
        batch: dict[str, Tensor],
        generator: torch.Generator | None = None,
        reference: Tensor | None = None,
        reference_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        cfg = self.config
        image = batch["image"]
        n, _, height, width = image.shape
        if height != width:
            raise ValueError(f"augmentation expects square faces, got {height}x{width}")
        gen_device = generator.device if generator is not None else torch.device("cpu")

        def draw(amount: float) -> Tensor:
            return _draw_uniform(n, amount, generator).to(image.device)

        # Draw every parameter up front, in a fixed order, whatever is enabled.
        rotation, scale, shift_x, shift_y = (
            draw(cfg.rotation_deg),
            draw(cfg.scale),
            draw(cfg.translation),
            draw(cfg.translation),
        )
        flip = (torch.rand(n, generator=generator, device=gen_device) < cfg.flip_prob).to(image.device)
        brightness, contrast = draw(cfg.brightness), 1.0 + draw(cfg.contrast)
        saturation, hue = 1.0 + draw(cfg.saturation), draw(cfg.hue_deg)
        field = random_warp_field(n, height, width, cfg.warp_strength, generator, image.device)
        ref_index = torch.randint(
            max(1, len(reference) if reference is not None else 1),
            (n,),
            generator=generator,
            device=gen_device,
        ).to(image.device)
        # Drawn after the rest, so that turning them on leaves every earlier draw as it was.
        grey = (torch.rand(n, generator=generator, device=gen_device) < cfg.grayscale_prob).to(image.device)
        jpeg = torch.rand(n, generator=generator, device=gen_device) < cfg.jpeg_prob
        quality = torch.randint(
            cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, (n,), generator=generator, device=gen_device
        )
        pixel_shift = torch.randint(
            -cfg.shift_pixels, cfg.shift_pixels + 1, (n, 2), generator=generator, device=gen_device
        )

        if cfg.jpeg_prob:
            image = jpeg_roundtrip(image, jpeg.cpu(), quality.cpu())

        if cfg.color_transfer == "rct":
            if reference is None:
                raise ValueError("color_transfer='rct' needs the other identity's batch as reference")
            ref_mask = reference_mask[ref_index] if reference_mask is not None else None
            image = rct_transfer(image, reference[ref_index], batch.get("mask"), ref_mask)
        if cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue_deg:
            image = apply_color_jitter(image, color_jitter_matrix(hue, saturation), brightness, contrast)
        if cfg.grayscale_prob:
            luma = (image * _RGB_TO_YIQ[0].to(image).view(1, 3, 1, 1)).sum(1, keepdim=True)
            image = torch.where(grey.view(-1, 1, 1, 1), luma.expand_as(image), image)

        theta = affine_theta(rotation, 1.0 + scale, shift_x, shift_y, flip).to(image.dtype)
        grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
        out = {key: value for key, value in batch.items() if key != "image"}
        out["target"] = self._sample(image, grid, cfg.padding)
        warped_grid = grid + field.to(grid.dtype) if cfg.warp else grid
        out["warped"] = self._sample(image, warped_grid, cfg.padding) if cfg.warp else out["target"]
        for key, value in batch.items():
            if key != "image" and torch.is_tensor(value) and value.ndim == 4 and value.shape[0] == n:
                if value.shape[-2:] == (height, width):
                    out[key] = F.grid_sample(
                        value.to(grid.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False
                    ).to(value.dtype)
        if cfg.shift_pixels:
            for key in ("target", "warped"):
                out[key] = shift_whole_pixels(out[key], pixel_shift.cpu().tolist(), cfg.shift_pixels)
        return out

    def _sample(self, image: Tensor, grid: Tensor, padding: str) -> Tensor:
        mode = self.config.interpolation
        out = F.grid_sample(image, grid, mode=mode, padding_mode=padding, align_corners=False)
        return out.clamp(0.0, 1.0) if mode == "bicubic" else out
