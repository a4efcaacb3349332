"""A StyleGAN-style generator, full and light (its residual discriminator is the ``residual`` part).

StyleGAN2 (Karras et al., "A Style-Based Generator Architecture for Generative Adversarial Networks"
and "Analyzing and Improving the Image Quality of StyleGAN"): a mapping MLP z -> w, a learned
constant 4x4 input, modulated and demodulated convolutions driven by one w per layer, per-layer
noise with a learned strength, 2x upsampling blocks and a skip sum of toRGB outputs. Style mixing
switches to a second w at a random layer during training. The light variant (``conv=separable``)
follows MobileStyleGAN (Belousov, "MobileStyleGAN: A Lightweight Convolutional Neural Network for
High-Fidelity Image Synthesis"): depthwise-separable modulated convolutions, demodulated exactly.
No training and no losses here; ``forward_cost`` measures the two variants for a benchmark.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from swaplab.config import ConfigError, config_group
from swaplab.models.factory import MODELS
from swaplab.models.generative import GenerativeModel
from swaplab.models.parts.equalized import EqualLinear, leaky
from swaplab.system import full_precision

Tensor = torch.Tensor

#: Added under the square root of the demodulation (StyleGAN2's epsilon).
DEMODULATION_EPS = 1e-8


@dataclass
class StyleGANConfig:
    name: str = "stylegan-digits"
    arch: Literal["stylegan"] = "stylegan"
    channels: int = 1
    resolution: int = 8  # a power of two >= 8; one upsampling block per doubling from 4x4
    latent: int = 64  # size of z and w
    mapping_layers: int = 4
    mapping_lr_mult: float = 0.01  # StyleGAN's slower mapping network (equalised learning rate)
    width: int = 64  # channels at 4x4, halved per doubling down to min_width
    min_width: int = 16
    conv: Literal["full", "separable"] = "full"  # separable: the light, MobileStyleGAN-like variant
    mixing_prob: float = 0.9  # probability of style mixing per training batch
    d_width: int = 64  # discriminator channels at 4x4, halved per doubling down to d_min_width
    d_min_width: int = 16
    d_stddev_group: int = 4  # minibatch standard deviation group (0 = off)

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ConfigError(f"model.resolution must be a power of two >= 8, got {self.resolution}")
        if min(self.latent, self.mapping_layers, self.width, self.min_width, self.d_width, self.d_min_width) < 1:
            raise ConfigError("model.latent, mapping_layers and the widths must be >= 1")
        if not 0.0 <= self.mixing_prob <= 1.0:
            raise ConfigError(f"model.mixing_prob must be in [0, 1], got {self.mixing_prob}")

    @property
    def levels(self) -> int:
        """Resolutions from 4x4 to ``resolution`` (4 -> 1, 8 -> 2, 32 -> 4)."""
        return int(math.log2(self.resolution)) - 1


def _width(top: int, floor: int, level: int) -> int:
    return max(floor, top >> level)


_PRESETS = {
    "stylegan-digits": {},
    "stylegan-light-digits": {"conv": "separable"},
    "stylegan-faces": {"channels": 3, "resolution": 32, "latent": 128, "width": 128, "min_width": 32,
                       "d_width": 128, "d_min_width": 32},
    "stylegan-light-faces": {"channels": 3, "resolution": 32, "latent": 128, "width": 128, "min_width": 32,
                             "d_width": 128, "d_min_width": 32, "conv": "separable"},
}  # fmt: skip
for _name, _fields in _PRESETS.items():
    config_group("model").register(_name)(lambda n=_name, f=_fields: StyleGANConfig(name=n, **f))


# ---------------------------------------------------------------- the generator's layers


class ModulatedConv2d(nn.Module):
    """A convolution whose input channels are scaled per sample by a style s = A(w), then demodulated.

    Full: y_j = d_j sum_{i,k} W_jik s_i x_i, with d_j = (sum_{i,k} (s_i W_jik)^2 + eps)^(-1/2), so a unit-variance,
    independent input gives a unit-variance output per channel whatever the style (StyleGAN2's demodulation,
    applied to the activations rather than to a per-sample weight: the same numbers, one shared weight).
    Separable (MobileStyleGAN): W_jik = P_ji D_ik, a depthwise k x k kernel D then a pointwise 1x1 P, and d_j
    uses that composed kernel, so the demodulation stays exact. ``demodulate=False`` is the toRGB layer.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, latent: int, *, separable: bool, demodulate: bool
    ) -> None:
        super().__init__()
        self.affine = EqualLinear(latent, in_channels, bias_init=1.0)  # styles start near 1 (StyleGAN2)
        self.separable, self.demodulate, self.padding = separable and kernel > 1, demodulate, kernel // 2
        if self.separable:
            self.depthwise = nn.Parameter(torch.randn(in_channels, 1, kernel, kernel))
            self.pointwise = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
            self.depthwise_gain, self.pointwise_gain = 1.0 / kernel, 1.0 / math.sqrt(in_channels)
        else:
            self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
            self.gain = 1.0 / math.sqrt(in_channels * kernel * kernel)

    def kernel_energy(self) -> Tensor:
        """(out, in): sum over the kernel's taps of the squared effective weight, sum_k W_jik^2."""
        if self.separable:
            depth = (self.depthwise.float() * self.depthwise_gain).square().sum((1, 2, 3))  # (in,)
            point = (self.pointwise.float() * self.pointwise_gain).square()[:, :, 0, 0]  # (out, in)
            return point * depth[None]
        return (self.weight.float() * self.gain).square().sum((2, 3))

    def styles(self, w: Tensor) -> Tensor:
        return self.affine(w)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.styles(w)
        x = x * styles[:, :, None, None].to(x.dtype)
        if self.separable:
            x = F.conv2d(x, self.depthwise * self.depthwise_gain, padding=self.padding, groups=x.shape[1])
            x = F.conv2d(x, self.pointwise * self.pointwise_gain)
        else:
            x = F.conv2d(x, self.weight * self.gain, padding=self.padding)
        if self.demodulate:
            with full_precision(x):  # a sum of squares under a square root: fp32 even inside bf16 autocast
                scale = torch.rsqrt(styles.float().square() @ self.kernel_energy().t() + DEMODULATION_EPS)
            x = x * scale[:, :, None, None].to(x.dtype)
        return x


class StyledLayer(nn.Module):
    """Modulated 3x3 conv (after a 2x bilinear upsampling when ``upsample``), noise, bias, LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, latent: int, separable: bool, upsample: bool) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, latent, separable=separable, demodulate=True)
        self.noise_strength = nn.Parameter(torch.zeros(()))  # learned, from 0 (StyleGAN2)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.upsample = upsample

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.conv(x, w)
        if noise is not None:
            x = x + self.noise_strength.to(x.dtype) * noise.to(x.dtype)
        return leaky(x + self.bias.view(1, -1, 1, 1).to(x.dtype))


class ToRGB(nn.Module):
    """Modulated 1x1 conv to image channels, not demodulated (its output is the image, not a feature)."""

    def __init__(self, in_channels: int, channels: int, latent: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, channels, 1, latent, separable=False, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.conv(x, w) + self.bias.view(1, -1, 1, 1).to(x.dtype)


# ---------------------------------------------------------------- the generator


@MODELS.register("stylegan")
class StyleGANGenerator(GenerativeModel):
    """z (N, latent) -> images (N, C, R, R) in [0, 1] through w and one style per modulated layer.

    Layer order (the index a style-mixing cutoff counts): at 4x4 one styled conv and a toRGB; then per doubling
    an upsampling styled conv, a styled conv and a toRGB (``num_styles`` in all). ``styles_for`` maps z to the
    per-layer styles (N, num_styles, latent), mixing in a second w in training; ``synthesis`` renders them.
    """

    config_type = StyleGANConfig
    capabilities = ("sample",)

    def __init__(self, config: StyleGANConfig) -> None:
        super().__init__()
        self.config = config
        self.image_shape = (config.channels, config.resolution, config.resolution)
        d, separable = config.latent, config.conv == "separable"
        mapping: list[nn.Module] = []
        for _ in range(config.mapping_layers):
            mapping.append(EqualLinear(d, d, lr_mult=config.mapping_lr_mult))
        self.mapping_network = nn.ModuleList(mapping)
        widths = [_width(config.width, config.min_width, level) for level in range(config.levels)]
        self.constant = nn.Parameter(torch.randn(1, widths[0], 4, 4))
        layers: list[nn.Module] = [StyledLayer(widths[0], widths[0], d, separable, upsample=False)]
        to_rgb: list[nn.Module] = [ToRGB(widths[0], config.channels, d)]
        for level in range(1, config.levels):
            layers.append(StyledLayer(widths[level - 1], widths[level], d, separable, upsample=True))
            layers.append(StyledLayer(widths[level], widths[level], d, separable, upsample=False))
            to_rgb.append(ToRGB(widths[level], config.channels, d))
        self.layers, self.to_rgb = nn.ModuleList(layers), nn.ModuleList(to_rgb)
        self.num_styles = len(layers) + len(to_rgb)
        # The running mean of w, for the truncation trick (w_avg + psi (w - w_avg)) when sampling.
        self.register_buffer("w_avg", torch.zeros(d))
        self.truncation = 1.0

    # -------------------------------------------------------- z -> w -> per-layer styles

    def mapping(self, z: Tensor) -> Tensor:
        """w = MLP(z / rms(z)) (N, latent)."""
        x = z * torch.rsqrt(z.float().square().mean(1, keepdim=True) + 1e-8).to(z.dtype)
        for layer in self.mapping_network:
            x = leaky(layer(x))
        return x

    def broadcast(self, w: Tensor) -> Tensor:
        """(N, latent) -> (N, num_styles, latent): the same w for every layer."""
        return w[:, None].expand(-1, self.num_styles, -1)

    def mix_styles(self, w: Tensor, w_mix: Tensor, cutoff: int) -> Tensor:
        """Per-layer styles: ``w`` for the layers before ``cutoff``, ``w_mix`` from it on."""
        if not 0 <= cutoff <= self.num_styles:
            raise ValueError(f"cutoff must be in [0, {self.num_styles}], got {cutoff}")
        layer = torch.arange(self.num_styles, device=w.device).view(1, -1, 1)
        return torch.where(layer < cutoff, w[:, None], w_mix[:, None])

    def styles_for(self, z: Tensor, generator: torch.Generator | None = None, mixing_prob: float = 0.0) -> Tensor:
        """Styles of latents ``z``: with probability ``mixing_prob`` (per batch) a second w from fresh latents
        takes over at a cutoff drawn uniformly from 1..num_styles-1. In training, w's running mean is updated."""
        w = self.mapping(z)
        if self.training:
            with torch.no_grad():
                self.w_avg.lerp_(w.detach().float().mean(0), 0.005)
        draws = torch.rand(2, generator=generator, device=generator.device if generator else None)
        if float(draws[0]) >= mixing_prob or self.num_styles < 2:
            return self.broadcast(w)
        cutoff = 1 + int(float(draws[1]) * (self.num_styles - 1))
        return self.mix_styles(w, self.mapping(self.noise(tuple(z.shape), generator)), cutoff)

    # -------------------------------------------------------- styles -> images

    def noise_inputs(self, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """One (n, 1, r, r) standard normal map per styled layer."""
        sides = [4] + [4 * 2**level for level in range(1, self.config.levels) for _ in range(2)]
        return [self.noise((n, 1, side, side), generator) for side in sides]

    def synthesis(
        self, styles: Tensor, noise: list[Tensor] | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Styles (N, num_styles, latent) -> images (N, C, R, R), nominally in [0, 1] (not clamped: a GAN's
        discriminator sees the raw output). ``noise``: from ``noise_inputs``, else drawn with ``generator``."""
        n = len(styles)
        noise = noise if noise is not None else self.noise_inputs(n, generator)
        x = self.constant.expand(n, -1, -1, -1)
        index, image = 0, None
        layers = iter(zip(self.layers, noise))
        for level, to_rgb in enumerate(self.to_rgb):
            for _ in range(1 if level == 0 else 2):
                layer, layer_noise = next(layers)
                x = layer(x, styles[:, index], layer_noise)
                index += 1
            rgb = to_rgb(x, styles[:, index])
            index += 1
            # StyleGAN2's skip generator: the image is the upsampled sum of every resolution's toRGB.
            image = rgb if image is None else F.interpolate(image, scale_factor=2, mode="bilinear") + rgb
        return 0.5 + 0.5 * image  # toRGB speaks StyleGAN's [-1, 1]

    def forward(self, z: Tensor, generator: torch.Generator | None = None, mixing_prob: float = 0.0) -> Tensor:
        return self.synthesis(self.styles_for(z, generator, mixing_prob), generator=generator)

    # -------------------------------------------------------- the GenerativeModel contract

    def configure(self, **options: Any) -> None:
        """``truncation``: psi of the truncation trick in ``sample`` (1 = off; smaller trades variety for quality)."""
        unknown = set(options) - {"truncation"}
        if unknown:
            raise ValueError(f"StyleGANGenerator takes the option truncation, got {', '.join(sorted(unknown))}")
        self.truncation = float(options.get("truncation", self.truncation))

    def sample(self, n: int, generator: torch.Generator | None = None, labels: Tensor | None = None) -> Tensor:
        w = self.mapping(self.noise((n, self.config.latent), generator))
        if self.truncation != 1.0:
            w = self.w_avg.to(w.dtype) + self.truncation * (w - self.w_avg.to(w.dtype))
        return self.synthesis(self.broadcast(w), generator=generator).clamp(0, 1)


# ---------------------------------------------------------------- cost


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def forward_cost(
    config: StyleGANConfig, batch: int = 32, repeats: int = 5, device: str = "cpu"
) -> dict[str, float | int]:
    """Parameters and the median forward time (ms) of a generator built from ``config``, in fp32 and under bf16
    autocast, for a benchmark (tests do not call this: it times). One warm-up call per precision."""
    from swaplab.system import autocast

    torch.manual_seed(0)
    model = StyleGANGenerator(config).to(device).eval()
    z = torch.randn(batch, config.latent, device=device)
    out: dict[str, float | int] = {"parameters": parameter_count(model)}
    for label, dtype in (("fp32_ms", None), ("bf16_ms", torch.bfloat16)):
        times = []
        for attempt in range(repeats + 1):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            with autocast(device, dtype):
                model(z)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if attempt:
                times.append((time.perf_counter() - start) * 1000.0)
        out[label] = sorted(times)[len(times) // 2]
    return out
