"""SimSwap's generator parts (encoder, identity-injection bottleneck, decoder) as registered modules.

Re-written after "SimSwap: An Efficient Framework For High Fidelity Face Swapping" (Chen et al.,
ACM MM 2020) and its released generator: a 7x7 stem and stride-2 3x3 convs with norm + ReLU
(widths dims * 2^i up to ``max_dims``), residual blocks whose AdaIN scale and shift come from the
source's identity embedding (the paper's ID Injection Module, "IIM"), and bilinear 2x upsampling
+ 3x3 convs back to a 7x7 RGB head. Two deliberate differences: the identity is dlib's 128-d
descriptor (our PyTorch port) instead of ArcFace's 512-d one, and the output is squashed to
[0, 1] by a sigmoid (SimSwap emits ImageNet-normalised values without an activation;
sigmoid(x) = (tanh(x / 2) + 1) / 2, so this only fixes the output range and the scale of the last
conv). Parts read no config objects and know nothing of ablations.

Construction keywords of the SimSwap family (what ``SimSwapGenerator`` passes; the ablation
substitutes in ``ablation.py`` accept them too):

- ``ENCODERS``: ``in_channels, resolution, dims, n_down, max_dims, norm``; exposes
  ``out_channels``, ``out_size``, ``out_features``, ``flat`` (False: spatial features).
- ``BOTTLENECKS``: ``in_channels, in_size, identity_dim, n_blocks, resolution``; its forward is
  ``(features, identity)``; exposes ``out_channels``, ``out_size``.
- ``DECODERS``: ``in_channels, in_size, dims, max_dims, resolution, norm``; returns
  ``(rgb, mask)`` like every decoder, rgb (N, 3, R, R) in [0, 1]; SimSwap learns no mask, so
  mask is ones (the whole crop).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from swaplab.models.parts.registries import BOTTLENECKS, DECODERS, ENCODERS
from swaplab.system import full_precision

Tensor = torch.Tensor
Norm = Literal["batch", "instance", "none"]


def make_norm(kind: str, channels: int) -> nn.Module:
    """A feature-map normalisation by name: ``batch`` (SimSwap's), ``instance`` (affine) or ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'instance' or 'none', got {kind!r}")


def simswap_encoder_geometry(resolution: int, dims: int, n_down: int, max_dims: int) -> tuple[int, int]:
    """(channels, side) of the SimSwap encoder's output: min(dims * 2^n_down, max_dims), R / 2^n_down."""
    if n_down < 1 or dims < 1 or max_dims < 1:
        raise ValueError(f"n_down, dims and max_dims must be positive, got {n_down}, {dims}, {max_dims}")
    if resolution % 2**n_down:
        raise ValueError(f"resolution {resolution} is not divisible by 2^{n_down} (n_down={n_down})")
    return min(dims * 2**n_down, max_dims), resolution // 2**n_down


def _conv_norm_relu(in_channels: int, out_channels: int, norm: str, **conv: object) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, **conv), make_norm(norm, out_channels), nn.ReLU())


@ENCODERS.register("simswap")
class SimSwapEncoder(nn.Module):
    """Target image (N, in_channels, R, R) in [0, 1] -> features (N, C, R / 2^n_down, R / 2^n_down).

    A 7x7 reflect-padded stem at ``dims`` channels, then ``n_down`` stride-2 3x3 convs doubling the
    width up to ``max_dims``, each followed by ``norm`` and ReLU. SimSwap: dims 64, n_down 3
    (4 for its "deep" 512 px model), max_dims 512, batch norm.
    """

    flat = False

    def __init__(
        self,
        *,
        in_channels: int = 3,
        resolution: int,
        dims: int,
        n_down: int = 3,
        max_dims: int = 512,
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        self.out_channels, self.out_size = simswap_encoder_geometry(resolution, dims, n_down, max_dims)
        self.out_features = self.out_channels * self.out_size**2
        layers = [_conv_norm_relu(in_channels, dims, norm, kernel_size=7, padding=3, padding_mode="reflect")]
        channels = dims
        for i in range(n_down):
            width = min(dims * 2 ** (i + 1), max_dims)
            layers.append(_conv_norm_relu(channels, width, norm, kernel_size=3, stride=2, padding=1))
            channels = width
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def adaptive_instance_norm(x: Tensor, scale: Tensor, shift: Tensor, eps: float = 1e-8) -> Tensor:
    """AdaIN: normalise each image's channels over (H, W), then ``* (1 + scale) + shift``.

    ``scale``/``shift`` are (N, C, 1, 1). The statistics are taken in float32 (a bf16 variance
    loses most of its digits) and folded with the style into one per-channel gain and bias, so
    the full-size map is touched by a single fused multiply-add in its own dtype (it runs
    2 x n_blocks times per step, and on a CPU every extra elementwise pass over the map shows).
    The "1 +" makes a zero style the identity, as in SimSwap's ``ApplyStyle``.
    """
    with full_precision(x):
        var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, unbiased=False)
        gain = (1.0 + scale.float()) * torch.rsqrt(var + eps)
        bias = shift.float() - mean * gain
        return torch.addcmul(bias.to(x.dtype), x, gain.to(x.dtype))


class IdentityAdaIN(nn.Module):
    """AdaIN whose (scale, shift) = Linear(identity): SimSwap's ``ApplyStyle`` after instance norm."""

    def __init__(self, channels: int, identity_dim: int) -> None:
        super().__init__()
        self.style = nn.Linear(identity_dim, 2 * channels)

    def forward(self, x: Tensor, identity: Tensor) -> Tensor:
        scale, shift = self.style(identity)[:, :, None, None].chunk(2, dim=1)
        return adaptive_instance_norm(x, scale, shift)


class IdentityInjectionBlock(nn.Module):
    """SimSwap's identity-injection residual block.

    x + AdaIN2(conv2(ReLU(AdaIN1(conv1(x), id))), id): two reflect-padded 3x3 convs, each
    followed by instance norm whose scale and shift are linear functions of the identity vector.
    """

    def __init__(self, channels: int, identity_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.adain1 = IdentityAdaIN(channels, identity_dim)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.adain2 = IdentityAdaIN(channels, identity_dim)

    def forward(self, x: Tensor, identity: Tensor) -> Tensor:
        y = F.relu(self.adain1(self.conv1(x), identity))
        return x + self.adain2(self.conv2(y), identity)


@BOTTLENECKS.register("id-injection")
class IdentityInjection(nn.Module):
    """``n_blocks`` identity-injection blocks at the encoder's width and size (SimSwap: 9).

    ``forward(features, identity)``: features (N, C, S, S); identity (N, identity_dim), the
    source's dlib descriptor, L2-normalised here (SimSwap normalises its ArcFace latent the same
    way), so a raw stored descriptor can be passed as is. Output has the input's shape.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        in_size: int,
        identity_dim: int = 128,
        n_blocks: int = 9,
        resolution: int | None = None,
    ) -> None:
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        self.identity_dim = identity_dim
        self.blocks = nn.ModuleList(IdentityInjectionBlock(in_channels, identity_dim) for _ in range(n_blocks))
        self.out_channels, self.out_size = in_channels, in_size

    def forward(self, features: Tensor, identity: Tensor) -> Tensor:
        if identity.ndim != 2 or identity.shape != (features.shape[0], self.identity_dim):
            expected = (features.shape[0], self.identity_dim)
            raise ValueError(f"identity must be (N, {self.identity_dim}) = {expected}, got {tuple(identity.shape)}")
        identity = F.normalize(identity.float(), dim=1)
        for block in self.blocks:
            features = block(features, identity)
        return features


def upsampling_widths(n_up: int, dims: int, max_dims: int) -> list[int]:
    """Output widths of the decoder's upsampling stages: dims * 2^(n_up-1-i), capped at ``max_dims``."""
    return [min(dims * 2 ** (n_up - 1 - i), max_dims) for i in range(n_up)]


def upsampling_count(in_size: int, resolution: int) -> int:
    """How many 2x upsamplings take ``in_size`` to ``resolution`` (a ValueError if not a power of 2)."""
    ratio = resolution / in_size
    count = round(math.log2(ratio)) if ratio >= 1 else -1
    if count < 0 or in_size * 2**count != resolution:
        raise ValueError(f"cannot go from {in_size}x{in_size} features to {resolution}x{resolution} by 2x upsamplings")
    return count


@DECODERS.register("simswap")
class SimSwapDecoder(nn.Module):
    """Features (N, C, S, S) -> ``(rgb, mask)``: rgb (N, 3, R, R) in [0, 1] (sigmoid), mask ones.

    log2(R / S) stages of bilinear 2x upsampling, 3x3 conv, ``norm`` and ReLU (widths halving
    down to ``dims``), then a reflect-padded 7x7 conv to RGB.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        in_size: int,
        dims: int,
        resolution: int,
        max_dims: int = 512,
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for width in upsampling_widths(upsampling_count(in_size, resolution), dims, max_dims):
            layers += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                _conv_norm_relu(channels, width, norm, kernel_size=3, padding=1),
            ]
            channels = width
        self.body = nn.Sequential(*layers)
        self.rgb_head = nn.Conv2d(channels, 3, 7, padding=3, padding_mode="reflect")
        self.out_channels, self.out_size = 3, resolution

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        rgb = torch.sigmoid(self.rgb_head(self.body(features)))
        return rgb, torch.ones_like(rgb[:, :1])
