"""CycleGAN's two translators between unpaired image domains and its PatchGAN critics.

CycleGAN (Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks"):
G: A -> B and F: B -> A, each a small ResNet encoder-decoder (7x7 conv, stride-2 downsamplings, residual
blocks, transposed-conv upsamplings, 7x7 conv; instance norm, reflection padding), judged by one PatchGAN
per domain (``PatchDiscriminator`` of ``swaplab.models.parts.discriminators``); the cycle term is
``swaplab.losses.cycle``. Images are (N, C, R, R) in [0, 1]; nothing here trains or chooses data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from swaplab.config import ConfigError, config_group
from swaplab.models.factory import MODELS
from swaplab.models.generative import GenerativeModel
from swaplab.models.parts.discriminators import DiscriminatorNorm, PatchDiscriminator

Tensor = torch.Tensor
Direction = Literal["a2b", "b2a"]


@dataclass
class CycleGANConfig:
    name: str = "cyclegan-digits"
    arch: Literal["cyclegan"] = "cyclegan"
    channels: int = 1
    resolution: int = 8
    width: int = 32  # channels of the first 7x7 conv, doubled per downsampling
    downsamplings: int = 1  # stride-2 convs before the residual blocks (the paper: 2)
    blocks: int = 3  # residual blocks at the bottleneck (the paper: 6 at 128 px, 9 at 256 px)
    d_width: int = 32  # PatchGAN: channels of its first conv
    d_layers: int = 2  # PatchGAN: stride-2 convs (the paper's 70x70 PatchGAN: 3)
    d_norm: DiscriminatorNorm = "instance"

    def __post_init__(self) -> None:
        if min(self.width, self.d_width, self.d_layers) < 1 or self.downsamplings < 0 or self.blocks < 0:
            raise ConfigError("model.width, d_width and d_layers must be >= 1, downsamplings and blocks >= 0")
        bottleneck = self.resolution // 2**self.downsamplings
        if self.resolution % 2**self.downsamplings or bottleneck < 2:
            raise ConfigError(f"model.resolution {self.resolution} must be divisible by 2^{self.downsamplings} >= 2")


config_group("model").register("cyclegan-digits")(CycleGANConfig)
config_group("model").register("cyclegan-faces")(
    lambda: CycleGANConfig(
        name="cyclegan-faces", channels=3, resolution=32, width=32, downsamplings=2, blocks=6, d_width=64, d_layers=3
    )
)


class ResidualBlock(nn.Module):
    """x + (reflect-pad, 3x3 conv, instance norm, ReLU, reflect-pad, 3x3 conv, instance norm)(x)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def resnet_translator(config: CycleGANConfig) -> nn.Sequential:
    """CycleGAN's generator: c7s1-k, d2k ..., R2^d k x blocks, ... u k, c7s1-C with a sigmoid (the paper's tanh
    rescaled to [0, 1]); it reads images in [0, 1] centred to [-1, 1] by the caller."""
    width = config.width
    layers: list[nn.Module] = [
        nn.ReflectionPad2d(3),
        nn.Conv2d(config.channels, width, 7),
        nn.InstanceNorm2d(width),
        nn.ReLU(),
    ]
    for level in range(config.downsamplings):
        channels = width * 2**level
        layers += [nn.Conv2d(channels, 2 * channels, 3, 2, 1), nn.InstanceNorm2d(2 * channels), nn.ReLU()]
    layers += [ResidualBlock(width * 2**config.downsamplings) for _ in range(config.blocks)]
    for level in reversed(range(config.downsamplings)):
        channels = width * 2**level
        layers += [
            nn.ConvTranspose2d(2 * channels, channels, 3, 2, 1, output_padding=1),
            nn.InstanceNorm2d(channels),
            nn.ReLU(),
        ]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, config.channels, 7), nn.Sigmoid()]
    return nn.Sequential(*layers)


@MODELS.register("cyclegan")
class CycleGAN(GenerativeModel):
    """The two translators: ``translate(x, "a2b")`` is G, ``translate(x, "b2a")`` is F; ``reconstruct`` is the
    cycle a -> G -> F (what ``swaplab sample --kind reconstructions`` shows beside the originals)."""

    config_type = CycleGANConfig
    capabilities = ("reconstruct",)

    def __init__(self, config: CycleGANConfig) -> None:
        super().__init__()
        self.config = config
        self.image_shape = (config.channels, config.resolution, config.resolution)
        self.a_to_b = resnet_translator(config)
        self.b_to_a = resnet_translator(config)

    def translate(self, x: Tensor, direction: Direction = "a2b") -> Tensor:
        """Images of one domain (N, C, R, R) in [0, 1] -> the other's: ``a2b`` (G) or ``b2a`` (F)."""
        if direction not in ("a2b", "b2a"):
            raise ValueError(f"direction must be 'a2b' or 'b2a', got {direction!r}")
        translator = self.a_to_b if direction == "a2b" else self.b_to_a
        return translator(x * 2.0 - 1.0)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.translate(self.translate(x, "a2b"), "b2a")

    def forward(self, x: Tensor) -> Tensor:
        return self.translate(x, "a2b")


class PatchGAN(nn.Module):
    """One domain's critic: pix2pixHD's ``PatchDiscriminator`` on images centred to [-1, 1]; patch logits
    (N, 1, h, w) (the features it also computes are not needed here)."""

    def __init__(self, config: CycleGANConfig) -> None:
        super().__init__()
        self.net = PatchDiscriminator(config.channels, config.d_width, config.d_layers, config.d_norm)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images * 2.0 - 1.0)[1]


def patch_discriminators(config: CycleGANConfig) -> nn.ModuleDict:
    """``{"a": D_A, "b": D_B}``: D_A tells real A images from F's, D_B real B images from G's."""
    return nn.ModuleDict({"a": PatchGAN(config), "b": PatchGAN(config)})
