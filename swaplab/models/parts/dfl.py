"""DeepFaceLab's SAEHD parts (encoder, dense bottleneck "inter", decoder) as registered modules.

Structure follows DeepFaceLab's ``DeepFakeArchi`` (re-written, not ported line by line), with the
architecture options as one ``variant`` string of letters:

- ``u``: pixel-normalise the flattened encoder output (divide by its RMS), which DeepFaceLab
  says increases likeness;
- ``d``: the decoder's body runs at half the resolution and its RGB head predicts 2x2 sub-pixels
  (a 12-channel conv followed by pixel shuffle), so the model still *outputs* at ``resolution``
  for about a quarter of the decoder's cost; the mask branch takes one more upscale instead.
  Requires ``resolution % 32 == 0``. DeepFaceLab uses one 1x1 and three 3x3 convs for the four
  sub-pixels; here one 3x3 conv with 12 output channels does the same job;
- ``t``: a fifth downscale and residual blocks in the encoder (after the first and the last
  downscale), no upscale in the bottleneck, one more upscale + residual block in the decoder.

These modules own no identity logic (which decoder serves whom is the model's business) and read
no config objects: they are built from plain keyword arguments through the part registries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from swaplab.models.parts.blocks import Downscale, ResidualBlock, Upscale, init_glorot, pixel_norm
from swaplab.models.parts.registries import BOTTLENECKS, DECODERS, ENCODERS

VARIANT_LETTERS = "udt"


@dataclass(frozen=True)
class DFLVariant:
    """DeepFaceLab's architecture options, parsed from a string such as ``"ud"`` or ``""``."""

    pixel_norm: bool = False  # "u"
    double: bool = False  # "d"
    deeper: bool = False  # "t"

    @classmethod
    def parse(cls, variant: str) -> DFLVariant:
        unknown = sorted(set(variant) - set(VARIANT_LETTERS))
        if unknown:
            raise ValueError(
                f"unknown variant letter(s) {''.join(unknown)!r} in {variant!r}: "
                f"use any of {', '.join(VARIANT_LETTERS)} (u=pixel-norm, d=double, t=deeper)"
            )
        return cls(pixel_norm="u" in variant, double="d" in variant, deeper="t" in variant)

    @property
    def resolution_multiple(self) -> int:
        return 32 if self.double else 16

    def code_size(self, resolution: int) -> int:
        """Side of the dense bottleneck's spatial code (DeepFaceLab's ``lowest_dense_res``)."""
        return resolution // self.resolution_multiple


def check_resolution(resolution: int, variant: str) -> None:
    """Raise ``ValueError`` unless ``resolution`` fits the variant (multiple of 16, or 32 with d)."""
    multiple = DFLVariant.parse(variant).resolution_multiple
    if resolution <= 0 or resolution % multiple:
        lower = max(multiple, resolution // multiple * multiple)
        raise ValueError(
            f"resolution {resolution} does not fit variant {variant!r}: it must be a positive multiple "
            f"of {multiple} (e.g. {lower} or {lower + multiple})"
        )


@ENCODERS.register("dfl")
class DFLEncoder(nn.Module):
    """DeepFaceLab's encoder: 5x5 stride-2 convs with widths dims*(1, 2, 4, 8[, 8]), flattened.

    Input (N, in_channels, R, R); output a flat code (N, out_features) in NCHW flattening order.
    Attributes for wiring: ``out_channels``/``out_size`` (the last feature map before
    flattening), ``out_features`` = out_channels * out_size**2, ``flat`` = True.
    """

    flat = True

    def __init__(self, *, in_channels: int = 3, resolution: int, dims: int, variant: str = "") -> None:
        super().__init__()
        check_resolution(resolution, variant)
        self.variant = DFLVariant.parse(variant)
        widths = [dims, dims * 2, dims * 4, dims * 8] + ([dims * 8] if self.variant.deeper else [])
        layers: list[nn.Module] = []
        channels, size = in_channels, resolution
        for i, width in enumerate(widths):
            layers.append(Downscale(channels, width, kernel_size=5))
            channels, size = width, math.ceil(size / 2)
            # 't' adds residual blocks after the first and the last downscale, as DeepFaceLab does.
            if self.variant.deeper and i in (0, len(widths) - 1):
                layers.append(ResidualBlock(width))
        self.body = nn.Sequential(*layers)
        self.out_channels, self.out_size = channels, size
        self.out_features = channels * size * size
        init_glorot(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.body(x).flatten(1)
        return pixel_norm(code, dim=-1) if self.variant.pixel_norm else code


class DenseBottleneck(nn.Module):
    """Dense -> ae_dims -> dense -> reshape to (out_channels, code_size, code_size) [-> upscale].

    DeepFaceLab's "inter" block. Input a flat code (N, in_features) (a spatial input is flattened);
    output a spatial code (N, out_channels, out_size, out_size).
    """

    def __init__(self, *, in_features: int, ae_dims: int, out_channels: int, code_size: int, upscale: bool):
        super().__init__()
        self.dense1 = nn.Linear(in_features, ae_dims)
        self.dense2 = nn.Linear(ae_dims, code_size * code_size * out_channels)
        self.upscale = Upscale(out_channels, out_channels) if upscale else nn.Identity()
        self.code_size = code_size
        self.out_channels = out_channels
        self.out_size = code_size * 2 if upscale else code_size
        init_glorot(self)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = self.dense2(self.dense1(code.flatten(1)))
        x = x.view(-1, self.out_channels, self.code_size, self.code_size)
        return self.upscale(x)


def _dfl_bottleneck(out_channels_per_ae_dim: int):
    """A bottleneck factory taking the standard part arguments; widths differ between DF and LIAE."""

    def build(
        *,
        in_features: int,
        ae_dims: int,
        resolution: int,
        variant: str = "",
        in_channels: int | None = None,
        in_size: int | None = None,
    ) -> DenseBottleneck:
        parsed = DFLVariant.parse(variant)
        return DenseBottleneck(
            in_features=in_features,
            ae_dims=ae_dims,
            out_channels=ae_dims * out_channels_per_ae_dim,
            code_size=parsed.code_size(resolution),
            upscale=not parsed.deeper,
        )

    return build


#: DeepFakes' shared "inter": the code has ae_dims channels.
BOTTLENECKS.register("dense")(_dfl_bottleneck(1))
#: LIAE's inter_AB / inter_B: each emits 2*ae_dims channels; the decoder sees their concatenation.
BOTTLENECKS.register("liae-inter")(_dfl_bottleneck(2))


def _upscale_widths(n_upscales: int, dims: int) -> list[int]:
    """DeepFaceLab's decoder widths dims*(8, 4, 2), with extra leading dims*8 stages for 't'.

    Fewer than three upscales (a replacement bottleneck with a larger code) keep the last ones.
    """
    return [dims * m for m in ([8] * max(0, n_upscales - 3) + [8, 4, 2])[-n_upscales:]]


@DECODERS.register("dfl")
class DFLDecoder(nn.Module):
    """Upscale + residual stages to an RGB head and a thinner mask branch, both sigmoid.

    Input a spatial code (N, in_channels, in_size, in_size); output ``(rgb, mask)`` of shapes
    (N, 3, R, R) and (N, 1, R, R) in [0, 1], R = ``resolution`` for every variant (with ``d`` the
    last doubling is the pixel-shuffled RGB head and an extra mask upscale).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        in_size: int,
        dims: int,
        mask_dims: int,
        resolution: int,
        variant: str = "",
    ) -> None:
        super().__init__()
        check_resolution(resolution, variant)
        self.variant = DFLVariant.parse(variant)
        body_size = resolution // 2 if self.variant.double else resolution
        ratio = body_size / in_size
        n_upscales = round(math.log2(ratio)) if ratio >= 1 else -1
        if n_upscales < 1 or 2**n_upscales * in_size != body_size:
            raise ValueError(
                f"decoder cannot go from a {in_size}x{in_size} code to {body_size}x{body_size} by 2x upscales"
            )
        layers: list[nn.Module] = []
        channels = in_channels
        for width in _upscale_widths(n_upscales, dims):
            layers += [Upscale(channels, width), ResidualBlock(width)]
            channels = width
        self.body = nn.Sequential(*layers)
        subpixels = 4 if self.variant.double else 1
        self.rgb_head = nn.Conv2d(channels, 3 * subpixels, 3 if self.variant.double else 1, padding="same")

        mask_widths = _upscale_widths(n_upscales, mask_dims) + ([mask_dims] if self.variant.double else [])
        mask_layers: list[nn.Module] = []
        channels = in_channels
        for width in mask_widths:
            mask_layers.append(Upscale(channels, width))
            channels = width
        self.mask_body = nn.Sequential(*mask_layers)
        self.mask_head = nn.Conv2d(channels, 1, 1)
        self.out_channels, self.out_size = 3, resolution
        init_glorot(self)

    def forward(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgb = self.rgb_head(self.body(code))
        if self.variant.double:
            rgb = nn.functional.pixel_shuffle(rgb, 2)
        mask = self.mask_head(self.mask_body(code))
        return torch.sigmoid(rgb), torch.sigmoid(mask)
