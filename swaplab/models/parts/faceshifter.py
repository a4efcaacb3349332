"""FaceShifter's generator parts: the multi-level attribute U-Net, AAD layers and blocks, the AAD
generator and the HEAR refiner, as registered modules.

Written after "FaceShifter: Towards High Fidelity And Occlusion Aware Face Swapping" (Li et al.,
2019). AEI-Net = a U-Net whose decoder levels are the target's attributes ``z_att^1..n`` (coarsest
first) + a generator of AAD residual blocks that, level by level, mixes those attributes with the
source identity through a learned attention mask ("Adaptive Attentional Denormalization", AAD).
HEAR-Net = a U-Net that refines the AEI swap from the heuristic error (occlusions the swap lost).
Parts read no config objects and know nothing of training; images are (N, C, R, R) in [0, 1].

Construction keywords (what ``swaplab.models.faceshifter`` passes):

- ``ENCODERS["multilevel-attributes"]``: ``in_channels, resolution, dims, max_dims, bottom, levels,
  norm``; ``forward(x) -> list`` of ``levels`` maps; exposes ``level_channels``, ``level_sizes``.
- ``DECODERS["aad"]`` / ``DECODERS["adain"]``: ``identity_dim, level_channels, level_sizes, dims,
  max_dims, norm, mask``; ``forward(z_id, z_att) -> rgb`` (N, 3, R, R) in [0, 1]. ``adain`` is the
  same generator without attribute branches (plain identity AdaIN): it never sees the target.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from swaplab.models.parts.registries import DECODERS, ENCODERS

Tensor = torch.Tensor
AADNorm = Literal["batch", "instance"]
MaskMode = Literal["learned", "half"]
#: The U-Net's LeakyReLU slope (FaceShifter's released description: 0.1).
SLOPE = 0.1


def unet_widths(resolution: int, dims: int, max_dims: int, bottom: int) -> list[int]:
    """Encoder widths of a U-Net from ``resolution`` down to ``bottom`` px: dims * 2^i capped at max_dims."""
    ratio = resolution / bottom
    n_down = round(math.log2(ratio)) if ratio > 1 else 0
    if n_down < 1 or bottom * 2**n_down != resolution:
        raise ValueError(f"resolution {resolution} must be bottom {bottom} times a power of 2 (at least 2)")
    if dims < 1 or max_dims < 1:
        raise ValueError(f"dims and max_dims must be positive, got {dims}, {max_dims}")
    return [min(dims * 2**i, max_dims) for i in range(n_down)]


def _norm(kind: str, channels: int, affine: bool = True) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=affine)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=affine)
    raise ValueError(f"norm must be 'batch' or 'instance', got {kind!r}")


@ENCODERS.register("multilevel-attributes")
class MultiLevelUNet(nn.Module):
    """Image (N, in_channels, R, R) -> its U-Net decoder levels, coarsest first.

    Down: 4x4 stride-2 convs + norm + LeakyReLU(0.1) from R to ``bottom`` px (widths ``dims``
    doubling up to ``max_dims``). Level 1 is the bottom feature map; level k > 1 is a 4x4 stride-2
    transposed conv of level k-1 (+ norm + LeakyReLU) concatenated with the encoder map of its size;
    the last level (n = n_down + 1) is the level before it bilinearly upsampled to R. FaceShifter
    at 256 px: dims 32, max_dims 1024, bottom 2, 8 levels from 2x2x1024 to 256x256x64. ``levels``
    < n stops the decoder early (the fewer-attribute-levels ablation): only the coarsest are made.
    """

    flat = False

    def __init__(
        self,
        *,
        in_channels: int = 3,
        resolution: int,
        dims: int = 32,
        max_dims: int = 1024,
        bottom: int = 2,
        levels: int = 0,
        norm: AADNorm = "batch",
    ) -> None:
        super().__init__()
        widths = unet_widths(resolution, dims, max_dims, bottom)
        full = len(widths) + 1
        self.levels = levels or full
        if not 1 <= self.levels <= full:
            raise ValueError(f"levels must be in 1..{full} for {resolution} px down to {bottom} px, got {levels}")
        self.resolution = resolution
        self.down = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.down.append(
                nn.Sequential(
                    nn.Conv2d(channels, width, 4, stride=2, padding=1, bias=False),
                    _norm(norm, width),
                    nn.LeakyReLU(SLOPE),
                )
            )
            channels = width
        self.up = nn.ModuleList()
        level_channels, level_sizes = [widths[-1]], [bottom]
        for k in range(1, min(self.levels, len(widths))):
            skip = widths[-1 - k]
            self.up.append(
                nn.Sequential(
                    nn.ConvTranspose2d(level_channels[-1], skip, 4, stride=2, padding=1, bias=False),
                    _norm(norm, skip),
                    nn.LeakyReLU(SLOPE),
                )
            )
            level_channels.append(2 * skip)
            level_sizes.append(level_sizes[-1] * 2)
        if self.levels == full:
            level_channels.append(level_channels[-1])
            level_sizes.append(resolution)
        self.level_channels, self.level_sizes = level_channels, level_sizes
        self.out_channels, self.out_size = level_channels[-1], level_sizes[-1]
        self.out_features = self.out_channels * self.out_size**2

    def forward(self, x: Tensor) -> list[Tensor]:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        levels = [x]
        for k, block in enumerate(self.up, start=1):
            levels.append(torch.cat([block(levels[-1]), skips[-1 - k]], dim=1))
        if len(levels) < self.levels:
            levels.append(F.interpolate(levels[-1], size=self.resolution, mode="bilinear", align_corners=False))
        return levels


class AADLayer(nn.Module):
    """Adaptive attentional denormalisation of an activation ``h`` (N, C, S, S).

    ``h_bar = norm(h)`` (no affine); attribute branch ``A = gamma_att(z_att) * h_bar +
    beta_att(z_att)`` (3x3 convs of the attribute map at h's size, SPADE-like); identity branch
    ``I = gamma_id(z_id) * h_bar + beta_id(z_id)`` (linear maps of the identity, AdaIN-like); mask
    ``M = sigmoid(conv3x3(h_bar))`` (one channel); output ``(1 - M) * A + M * I``.
    ``attribute_channels=None`` leaves the attribute branch out: the output is ``I`` (plain AdaIN).
    ``fixed_mask`` replaces the learned mask by that constant (the mask-at-0.5 ablation; tests).
    """

    def __init__(
        self,
        channels: int,
        attribute_channels: int | None,
        identity_dim: int,
        norm: AADNorm = "batch",
        fixed_mask: float | None = None,
    ) -> None:
        super().__init__()
        if fixed_mask is not None and not 0.0 <= fixed_mask <= 1.0:
            raise ValueError(f"fixed_mask must be in [0, 1], got {fixed_mask}")
        self.norm = _norm(norm, channels, affine=False)
        self.identity_scale = nn.Linear(identity_dim, channels)
        self.identity_shift = nn.Linear(identity_dim, channels)
        self.fixed_mask = fixed_mask
        self.has_attributes = attribute_channels is not None
        if attribute_channels is not None:
            self.attribute_scale = nn.Conv2d(attribute_channels, channels, 3, padding=1)
            self.attribute_shift = nn.Conv2d(attribute_channels, channels, 3, padding=1)
            if fixed_mask is None:
                self.mask = nn.Conv2d(channels, 1, 3, padding=1)

    def branches(self, h: Tensor, z_att: Tensor | None, z_id: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        """(A, I, M): the attribute branch (None without one), the identity branch and the mask."""
        h_bar = self.norm(h)
        identity = self.identity_scale(z_id)[:, :, None, None] * h_bar + self.identity_shift(z_id)[:, :, None, None]
        if not self.has_attributes:
            return None, identity, torch.ones_like(h_bar[:, :1])
        if z_att is None or z_att.shape[-2:] != h.shape[-2:]:
            got = None if z_att is None else tuple(z_att.shape)
            raise ValueError(f"the attribute map must match h's size {tuple(h.shape[-2:])}, got {got}")
        attribute = self.attribute_scale(z_att) * h_bar + self.attribute_shift(z_att)
        if self.fixed_mask is not None:
            mask = torch.full_like(h_bar[:, :1], self.fixed_mask)
        else:
            mask = torch.sigmoid(self.mask(h_bar))
        return attribute, identity, mask

    def forward(self, h: Tensor, z_att: Tensor | None, z_id: Tensor) -> Tensor:
        attribute, identity, mask = self.branches(h, z_att, z_id)
        if attribute is None:
            return identity
        return torch.lerp(attribute, identity, mask.to(attribute.dtype))  # (1 - M) * A + M * I


class AADResBlock(nn.Module):
    """AAD -> ReLU -> 3x3 conv, twice, plus a shortcut (AAD -> ReLU -> 3x3 conv) when widths differ."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        attribute_channels: int | None,
        identity_dim: int,
        norm: AADNorm = "batch",
        fixed_mask: float | None = None,
    ) -> None:
        super().__init__()
        args = (attribute_channels, identity_dim, norm, fixed_mask)
        self.aad1 = AADLayer(in_channels, *args)
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=False)
        self.aad2 = AADLayer(in_channels, *args)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut_aad = self.shortcut_conv = None
        if in_channels != out_channels:
            self.shortcut_aad = AADLayer(in_channels, *args)
            self.shortcut_conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, h: Tensor, z_att: Tensor | None, z_id: Tensor) -> Tensor:
        y = self.conv1(F.relu(self.aad1(h, z_att, z_id)))
        y = self.conv2(F.relu(self.aad2(y, z_att, z_id)))
        if self.shortcut_conv is not None:
            h = self.shortcut_conv(F.relu(self.shortcut_aad(h, z_att, z_id)))
        return h + y


def aad_widths(levels: int, dims: int, max_dims: int) -> list[int]:
    """Output widths of the generator's blocks, coarsest first: 2 * dims * 2^(n-1-k) capped, then 3 (RGB)."""
    return [min(2 * dims * 2 ** (levels - 2 - k), max_dims) for k in range(levels - 1)] + [3]


class AADGenerator(nn.Module):
    """``forward(z_id (N, D), z_att: list of level maps) -> rgb (N, 3, R, R)`` in [0, 1].

    The identity (L2-normalised) is spread to a ``level_sizes[0]`` map by a transposed conv, then
    one AAD residual block per level (bilinear 2x upsampling between levels) takes it to RGB,
    squashed by a sigmoid (FaceShifter's tanh, rescaled to [0, 1]). Blocks of levels beyond the
    attribute maps given at construction (``len(level_channels)`` < ``len(level_sizes)``), and
    every block when ``attributes`` is False, have no attribute branch.
    """

    def __init__(
        self,
        *,
        identity_dim: int,
        level_channels: list[int],
        level_sizes: list[int],
        dims: int = 32,
        max_dims: int = 1024,
        norm: AADNorm = "batch",
        mask: MaskMode = "learned",
        attributes: bool = True,
    ) -> None:
        super().__init__()
        if mask not in ("learned", "half"):
            raise ValueError(f"mask must be 'learned' or 'half', got {mask!r}")
        if any(b != 2 * a for a, b in zip(level_sizes, level_sizes[1:])):
            raise ValueError(f"level sizes must double from level to level, got {level_sizes}")
        self.identity_dim = identity_dim
        self.level_sizes = list(level_sizes)
        self.attribute_levels = len(level_channels) if attributes else 0
        widths = aad_widths(len(level_sizes), dims, max_dims)
        self.stem = nn.ConvTranspose2d(identity_dim, widths[0], level_sizes[0])
        fixed = 0.5 if mask == "half" else None
        self.blocks = nn.ModuleList()
        channels = widths[0]
        for k, width in enumerate(widths):
            attribute_channels = level_channels[k] if k < self.attribute_levels else None
            self.blocks.append(AADResBlock(channels, width, attribute_channels, identity_dim, norm, fixed))
            channels = width
        self.out_channels, self.out_size = 3, level_sizes[-1]

    def forward(self, z_id: Tensor, z_att: list[Tensor]) -> Tensor:
        if z_id.ndim != 2 or z_id.shape[1] != self.identity_dim:
            raise ValueError(f"identity must be (N, {self.identity_dim}), got {tuple(z_id.shape)}")
        if len(z_att) < self.attribute_levels:
            raise ValueError(f"the generator needs {self.attribute_levels} attribute levels, got {len(z_att)}")
        z_id = F.normalize(z_id.float(), dim=1).to(self.stem.weight.dtype)
        h = self.stem(z_id[:, :, None, None])
        for k, block in enumerate(self.blocks):
            if k:
                h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = block(h, z_att[k] if k < self.attribute_levels else None, z_id)
        return torch.sigmoid(h)


DECODERS.register("aad")(AADGenerator)


@DECODERS.register("adain")
def identity_only_generator(**kwargs: object) -> AADGenerator:
    """The AAD generator without attribute branches: plain identity AdaIN in every block (ablation)."""
    return AADGenerator(**kwargs, attributes=False)  # type: ignore[arg-type]


class HearRefiner(nn.Module):
    """HEAR-Net: ``forward(swap, error) -> refined swap``, all (N, 3, R, R) in [0, 1].

    Its input is exactly ``torch.cat([swap, error], dim=1)`` (``refiner_input``): the AEI swap and
    the heuristic error ``X_t - AEI(X_t, X_t)`` (what AEI-Net fails to reconstruct of the target,
    mostly occlusions). A ``MultiLevelUNet`` over those 6 channels and a 3x3 conv head on its last
    level. ``residual`` (default): the head predicts a correction added to the swap (zero-initialised,
    so an untrained refiner returns the swap unchanged); False: the head's sigmoid is the image (the
    paper's form).
    """

    def __init__(
        self,
        *,
        resolution: int,
        dims: int = 32,
        max_dims: int = 512,
        bottom: int = 4,
        norm: AADNorm = "batch",
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.unet = MultiLevelUNet(
            in_channels=6, resolution=resolution, dims=dims, max_dims=max_dims, bottom=bottom, norm=norm
        )
        self.head = nn.Conv2d(self.unet.out_channels, 3, 3, padding=1)
        self.residual = residual
        if residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @staticmethod
    def refiner_input(swap: Tensor, error: Tensor) -> Tensor:
        return torch.cat([swap, error], dim=1)

    def forward(self, swap: Tensor, error: Tensor) -> Tensor:
        out = self.head(self.unet(self.refiner_input(swap, error))[-1])
        if self.residual:
            return (swap + out).clamp(0.0, 1.0)
        return torch.sigmoid(out)
