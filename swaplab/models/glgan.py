"""GL-GAN, the global-and-local perception GAN, as a one-shot identity-conditioned swapper.

``GLGANGenerator`` (``MODELS["glgan"]``): ``forward(target, source_identity) -> swap``. The global
U-Net renders the whole aligned target face with the source identity; local generators re-render
the eyes and the mouth (where identity lives) from crops at the template's landmark positions;
the fusion network merges them into the global output (``fusion: paste`` pastes them instead).
``GLGANDiscriminator`` holds the global discriminator (multi-scale PatchGAN by default) and one
local PatchGAN per region, judging the same crops. Parts come from
``swaplab.models.parts.glgan`` and the part registries; no losses or training loop here.

Ablation switches (config keys): ``local.enabled`` (off: the global output is the swap),
``parts.local_discriminator`` (``none``: no local discriminators), ``fusion`` (``network`` or
``paste``). Images are (N, 3, R, R) RGB in [0, 1]; identities are 128-d dlib descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from swaplab.config import ConfigError, config_group, register_preset
from swaplab.models.factory import MODELS
from swaplab.models.parts.glgan import (
    REGION_LANDMARKS,
    FusionNetwork,
    LocalGenerator,
    RegionBox,
    UNetGlobalGenerator,
    crop_regions,
    face_hull_mask,
    logit,
    paste_regions,
    region_boxes,
    region_mask,
    seam_band,
    template_landmarks,
)
from swaplab.models.simswap import DiscriminatorConfig

Tensor = torch.Tensor


@dataclass
class GLGANPartsConfig:
    """Discriminators by registered name (``none`` drops the local ones: an ablation)."""

    discriminator: str = "multiscale"
    local_discriminator: str = "patchgan"


@dataclass
class LocalConfig:
    """The local generators: which regions, their crop sides, their sizes.

    Crop sides are in units of the template's mean-face width (its unit square), rounded to a
    multiple of 4 pixels, so presets at any resolution crop the same part of the face.
    """

    enabled: bool = True
    regions: list[str] = field(default_factory=lambda: ["left_eye", "right_eye", "mouth"])
    eye_size: float = 0.36
    mouth_size: float = 0.56
    nose_size: float = 0.40
    dims: int = 32
    n_blocks: int = 3

    def __post_init__(self) -> None:
        unknown = [r for r in self.regions if r not in REGION_LANDMARKS]
        if unknown or not self.regions:
            raise ConfigError(
                f"model.local.regions must name regions among {', '.join(REGION_LANDMARKS)}, got {self.regions}"
            )
        for key in ("eye_size", "mouth_size", "nose_size", "dims", "n_blocks"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.local.{key} must be positive, got {getattr(self, key)}")


@dataclass
class GLGANConfig:
    """A GL-GAN swapper. The article's global U-Net: widths 64/128/256 (``dims`` doubling over
    ``depth`` levels up to ``max_dims``), batch norm. ``template``: the alignment template of the
    faces it swaps (the local crops sit at its landmark positions)."""

    name: str = "glgan-256"
    arch: Literal["glgan"] = "glgan"
    resolution: int = 256
    template: str = "whole_face"
    dims: int = 64
    max_dims: int = 256
    depth: int = 3
    n_blocks: int = 4
    identity_dim: int = 128
    norm: Literal["batch", "instance", "none"] = "batch"
    local: LocalConfig = field(default_factory=LocalConfig)
    fusion: Literal["network", "paste"] = "network"
    fusion_dims: int = 32
    parts: GLGANPartsConfig = field(default_factory=GLGANPartsConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    local_discriminator: DiscriminatorConfig = field(
        default_factory=lambda: DiscriminatorConfig(dims=64, n_layers=3, scales=1)
    )

    def __post_init__(self) -> None:
        for key in ("resolution", "dims", "max_dims", "depth", "n_blocks", "identity_dim", "fusion_dims"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.resolution % 2**self.depth:
            raise ConfigError(f"model.resolution {self.resolution} must be divisible by 2^depth = {2**self.depth}")
        if self.fusion not in ("network", "paste"):
            raise ConfigError(f"model.fusion must be 'network' or 'paste', got {self.fusion!r}")


def _preset(name: str, **fields: object) -> None:
    register_preset("model", name, GLGANConfig, **fields)


#: The article's sizes at 256 px (for GPUs).
_preset("glgan-256")
_preset("glgan-128", resolution=128)
#: For the CPU: 64 px, a 16/32/64 U-Net with 2 injection blocks, 16-wide locals with 2 blocks,
#: 12 px eye and 16 px mouth crops, small discriminators (2-layer local PatchGANs for the crops).
_preset(
    "glgan-tiny",
    resolution=64,
    dims=16,
    max_dims=64,
    n_blocks=2,
    fusion_dims=16,
    local=dict(dims=16, n_blocks=2),
    discriminator=dict(dims=16, n_layers=3),
    local_discriminator=dict(dims=16, n_layers=2, scales=1),
)


def crop_size(units: float, resolution: int, template: str) -> int:
    """A crop side of ``units`` template units in pixels, a multiple of 4 (at least 8)."""
    points = template_landmarks(template, resolution)
    unit_px = float(abs(points[26, 0] - points[17, 0])) / abs(0.98004 - 0.000213256)  # brow ends span the unit
    return max(8, int(round(units * unit_px / 4.0)) * 4)


def template_boxes(cfg: GLGANConfig) -> list[RegionBox]:
    """The local crops' boxes for faces aligned to ``cfg.template`` at ``cfg.resolution``."""
    sizes = {"left_eye": cfg.local.eye_size, "right_eye": cfg.local.eye_size}
    sizes.update(mouth=cfg.local.mouth_size, nose=cfg.local.nose_size)
    pixels = {r: crop_size(sizes[r], cfg.resolution, cfg.template) for r in cfg.local.regions}
    return region_boxes(template_landmarks(cfg.template, cfg.resolution), pixels, cfg.resolution)


@MODELS.register("glgan")
class GLGANGenerator(nn.Module):
    """``forward(target, source_identity) -> swapped``, (N, 3, R, R) in [0, 1], identity (N, 128).

    ``render(target, identity)`` returns every stage (``global``, ``locals``, ``pasted``, ``swap``)
    for the losses and the local discriminators.
    """

    config_type = GLGANConfig

    def __init__(self, config: GLGANConfig) -> None:
        super().__init__()
        self.config = config
        self.resolution = config.resolution
        self.boxes = template_boxes(config)
        self.register_buffer("mask", region_mask(self.boxes, config.resolution), persistent=False)
        self.global_generator = UNetGlobalGenerator(
            resolution=config.resolution,
            dims=config.dims,
            depth=config.depth,
            max_dims=config.max_dims,
            n_blocks=config.n_blocks,
            identity_dim=config.identity_dim,
            norm=config.norm,
        )
        self.local_generators = nn.ModuleDict()
        if config.local.enabled:
            for box in self.boxes:
                self.local_generators[box.name] = LocalGenerator(
                    dims=config.local.dims,
                    n_blocks=config.local.n_blocks,
                    identity_dim=config.identity_dim,
                    norm=config.norm,
                )
        self.fusion = (
            FusionNetwork(dims=config.fusion_dims, norm=config.norm)
            if config.local.enabled and config.fusion == "network"
            else None
        )

    def render(self, target: Tensor, source_identity: Tensor) -> dict[str, object]:
        size = self.resolution
        if target.ndim != 4 or target.shape[1:] != (3, size, size):
            raise ValueError(
                f"GLGANGenerator expects targets of shape (N, 3, {size}, {size}), got {tuple(target.shape)}"
            )
        global_rgb = self.global_generator(target, source_identity)
        if not self.local_generators:
            return {"global": global_rgb, "locals": {}, "pasted": global_rgb, "swap": global_rgb}
        crops = crop_regions(target, self.boxes)
        locals_ = {name: gen(crops[name], source_identity) for name, gen in self.local_generators.items()}
        pasted = paste_regions(global_rgb, locals_, self.boxes)
        swap = pasted if self.fusion is None else self.fusion(global_rgb, pasted, self.mask)
        return {"global": global_rgb, "locals": locals_, "pasted": pasted, "swap": swap}

    def forward(self, target: Tensor, source_identity: Tensor) -> Tensor:
        return self.render(target, source_identity)["swap"]  # type: ignore[return-value]


class GLGANDiscriminator(nn.Module):
    """``global_(faces)`` judges whole faces; ``local[region](crops)`` judges that region's crops."""

    def __init__(self, config: GLGANConfig) -> None:
        super().__init__()
        d = config.discriminator
        self.global_ = d.build(config.parts.discriminator, config.resolution)
        self.boxes = template_boxes(config)
        self.local = nn.ModuleDict()
        if config.parts.local_discriminator != "none":
            ld = config.local_discriminator
            for box in self.boxes:
                self.local[box.name] = ld.build(config.parts.local_discriminator, box.size)

    def forward(self, images: Tensor):
        return self.global_(images)


def create_discriminator(config: GLGANConfig) -> GLGANDiscriminator:
    return GLGANDiscriminator(config)


# ---------------------------------------------------------------- blending through the same parts


@dataclass
class GLGANUNetConfig:
    """The global U-Net's sizes for GL-GAN's identity-free uses (blending, smoothing), and the
    discriminator that judges its faces."""

    name: str = ""
    resolution: int = 256
    template: str = "whole_face"
    dims: int = 64
    max_dims: int = 256
    depth: int = 3
    n_blocks: int = 2
    norm: Literal["batch", "instance", "none"] = "batch"
    discriminator: DiscriminatorConfig = field(default_factory=lambda: DiscriminatorConfig(n_layers=3, scales=1))

    def __post_init__(self) -> None:
        if self.resolution % 2**self.depth:
            raise ConfigError(f"model.resolution {self.resolution} must be divisible by 2^depth = {2**self.depth}")

    def unet(self, in_channels: int) -> UNetGlobalGenerator:
        """The global U-Net of these sizes with its head at zero: its sigmoid output starts at 0.5,
        which the blender and the smoother read as "no change"."""
        net = UNetGlobalGenerator(
            resolution=self.resolution,
            in_channels=in_channels,
            dims=self.dims,
            depth=self.depth,
            max_dims=self.max_dims,
            n_blocks=self.n_blocks,
            norm=self.norm,
        )
        nn.init.zeros_(net.head.weight)
        nn.init.zeros_(net.head.bias)
        return net


@dataclass
class GLGANBlendConfig(GLGANUNetConfig):
    """The article's blending use: the global U-Net makes the seam of a face pasted into a frame.

    ``seam_width``: the band either side of the pasted face's edge, as a fraction of the side
    (the template's brows-to-mouth hull is the pasted region).
    """

    name: str = "glgan-blend-256"
    arch: Literal["glgan-blend"] = "glgan-blend"
    seam_width: float = 0.06

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.seam_width < 0.5:
            raise ConfigError(f"model.seam_width must be in (0, 0.5), got {self.seam_width}")


def _tiny(config_type: type[GLGANUNetConfig], name: str):
    """The CPU size of an identity-free GL-GAN U-Net: 64 px, 16 to 64 channels, a width-16 PatchGAN."""
    return lambda: config_type(
        name=name, resolution=64, dims=16, max_dims=64, discriminator=DiscriminatorConfig(dims=16, n_layers=3, scales=1)
    )


config_group("model").register("glgan-blend-256")(GLGANBlendConfig)
config_group("model").register("glgan-blend-tiny")(_tiny(GLGANBlendConfig, "glgan-blend-tiny"))


@MODELS.register("glgan-blend")
class GLGANBlender(nn.Module):
    """``forward(composite, mask=None) -> blended``: a face pasted into a frame, its seam re-made.

    ``composite`` (N, 3, R, R) in [0, 1] is the aligned frame with the new face pasted over
    ``mask`` (N or 1, 1, R, R; default the template's brows-to-mouth hull). The U-Net sees
    [composite, mask, band] and only the band around the mask's edge is taken from it: the
    pasted face inside and the frame outside keep their pixels exactly.
    """

    config_type = GLGANBlendConfig

    def __init__(self, config: GLGANBlendConfig) -> None:
        super().__init__()
        self.config = config
        self.resolution = config.resolution
        self.width = max(1, round(config.seam_width * config.resolution))
        mask = face_hull_mask(config.template, config.resolution)
        self.register_buffer("mask", torch.from_numpy(mask)[None, None], persistent=False)
        self.register_buffer("band", torch.from_numpy(seam_band(mask, self.width))[None, None], persistent=False)
        # The U-Net's output (sigmoid) is read as a correction of the composite's logits, 0 at 0.5:
        # with its head at zero an untrained blender is the plain paste, and it learns from there.
        self.unet = config.unet(in_channels=5)

    def seam(self, mask: Tensor) -> Tensor:
        """The band of ``mask``'s edge (the template's band for the template's mask)."""
        if mask is self.mask:
            return self.band
        array = mask.detach().float().cpu().numpy()
        bands = [seam_band(m[0], self.width) for m in array]
        return torch.from_numpy(np.stack(bands))[:, None].to(mask.device)

    def forward(self, composite: Tensor, mask: Tensor | None = None) -> Tensor:
        size = self.resolution
        if composite.ndim != 4 or composite.shape[1:] != (3, size, size):
            raise ValueError(f"GLGANBlender expects (N, 3, {size}, {size}) composites, got {tuple(composite.shape)}")
        mask = self.mask if mask is None else mask
        band = self.seam(mask).to(composite.dtype).expand(len(composite), 1, size, size)
        mask = mask.to(composite.dtype).expand(len(composite), 1, size, size)
        correction = self.unet(torch.cat([composite, mask, band], dim=1)).float() - 0.5
        made = torch.sigmoid(logit(composite) + 8.0 * correction).to(composite.dtype)
        return composite + band * (made - composite)


@dataclass
class GLGANSmoothConfig(GLGANUNetConfig):
    """The article's smoothing use: the global U-Net makes a swapped face agree with the previous
    frame's inside the face (the template's brows-to-mouth hull), so a video swap does not flicker."""

    name: str = "glgan-smooth-256"
    arch: Literal["glgan-smooth"] = "glgan-smooth"


config_group("model").register("glgan-smooth-256")(GLGANSmoothConfig)
config_group("model").register("glgan-smooth-tiny")(_tiny(GLGANSmoothConfig, "glgan-smooth-tiny"))


@MODELS.register("glgan-smooth")
class GLGANSmoother(nn.Module):
    """``forward(current, previous) -> smoothed``: this frame's swapped face made to agree with the
    previous frame's output, inside the template's face hull.

    Both are aligned crops (N, 3, R, R) in [0, 1] of one face track (the crop follows the face, so
    they are nearly in register). What flickers between a swap's frames is smooth (colour, shading),
    so the smoother moves ``current`` by a blurred copy of ``previous - current`` (Gaussian, sigma
    R/32) weighted per pixel by ``alpha``; the U-Net sees [current, previous - current, mask] and
    decides ``alpha``: near 1 where the previous frame can be trusted, near 0 where the face moved
    or changed. Its head starts at zero with a bias of -8 on alpha's logit, so an untrained
    smoother returns ``current`` (alpha 3e-4).
    """

    config_type = GLGANSmoothConfig

    def __init__(self, config: GLGANSmoothConfig) -> None:
        super().__init__()
        self.config = config
        self.resolution = config.resolution
        mask = face_hull_mask(config.template, config.resolution)
        self.register_buffer("mask", torch.from_numpy(mask)[None, None], persistent=False)
        sigma = config.resolution / 32
        radius = max(1, round(3 * sigma))
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
        self.register_buffer("taps", (taps / taps.sum())[None, None], persistent=False)
        self.unet = config.unet(in_channels=7)

    def blur(self, image: Tensor) -> Tensor:
        """A separable Gaussian per channel (edges replicated)."""
        n, c, h, w = image.shape
        flat = image.reshape(n * c, 1, h, w)
        radius = self.taps.shape[-1] // 2
        flat = nn.functional.pad(flat, (radius, radius, radius, radius), mode="replicate")
        flat = nn.functional.conv2d(flat, self.taps.to(flat.dtype)[..., None, :])
        flat = nn.functional.conv2d(flat, self.taps.to(flat.dtype)[..., :, None])
        return flat.reshape(n, c, h, w)

    def forward(self, current: Tensor, previous: Tensor) -> Tensor:
        size = self.resolution
        for name, image in (("current", current), ("previous", previous)):
            if image.ndim != 4 or image.shape[1:] != (3, size, size):
                raise ValueError(f"GLGANSmoother expects (N, 3, {size}, {size}) {name} faces, got {tuple(image.shape)}")
        mask = self.mask.to(current.dtype).expand(len(current), 1, size, size)
        change = previous - current
        # The U-Net's sigmoid output read back as a logit: alpha = sigmoid(z - 8), z its head's value.
        alpha = torch.sigmoid(logit(self.unet(torch.cat([current, change, mask], dim=1)).float()) - 8.0)
        smoothed = current + alpha.to(current.dtype) * self.blur(change)
        return current + mask * (smoothed.clamp(0.0, 1.0) - current)
