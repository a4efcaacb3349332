"""The plain autoencoder, linear or convolutional: x -> code -> x_hat, the ancestor of every face swapper.

``AutoencoderConfig.kind``: ``linear`` (one fully connected layer each way, the code a linear
projection: trained with MSE it spans the top principal subspace, see ``swaplab.models.zoo.pca``)
or ``conv`` (strided convolutions down to a small map, a dense code, transposed convolutions up).
The decoder's output is a sigmoid (for a BCE or MSE likelihood of images in [0, 1]) or the identity
(``output=linear``: the linear autoencoder of PCA). No training here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from swaplab.config import ConfigError, config_group
from swaplab.models.factory import MODELS
from swaplab.models.generative import GenerativeModel

Tensor = torch.Tensor


@dataclass
class AutoencoderConfig:
    name: str = "ae-digits"
    arch: Literal["autoencoder"] = "autoencoder"
    kind: Literal["linear", "conv"] = "conv"
    channels: int = 1
    resolution: int = 8
    code: int = 16  # size of the code
    width: int = 32  # conv: channels of the first layer (doubling per downsampling)
    downsamplings: int = 2  # conv: stride-2 convolutions (the map is resolution / 2^downsamplings)
    linear_bias: bool = True  # linear: with biases (PCA's mean); the PCA check turns them off on centred data
    output: Literal["sigmoid", "linear"] = "sigmoid"  # the decoder's last activation

    def __post_init__(self) -> None:
        if self.code < 1 or self.width < 1 or self.downsamplings < 0:
            raise ConfigError("model.code and model.width must be >= 1, model.downsamplings >= 0")
        if self.kind == "conv" and self.resolution % 2**self.downsamplings:
            raise ConfigError(f"model.resolution {self.resolution} must be divisible by 2^{self.downsamplings}")


config_group("model").register("ae-digits")(AutoencoderConfig)
config_group("model").register("ae-linear-digits")(
    lambda: AutoencoderConfig(name="ae-linear-digits", kind="linear", code=16, output="linear")
)
config_group("model").register("ae-faces")(
    lambda: AutoencoderConfig(name="ae-faces", channels=3, resolution=32, code=128, width=32, downsamplings=3)
)


def conv_encoder(channels: int, width: int, downsamplings: int) -> tuple[nn.Sequential, int]:
    """Stride-2 conv + LeakyReLU blocks, width doubling: (module, output channels)."""
    layers: list[nn.Module] = []
    in_ch = channels
    for level in range(downsamplings):
        out_ch = width * 2**level
        layers += [nn.Conv2d(in_ch, out_ch, 4, 2, 1), nn.LeakyReLU(0.2)]
        in_ch = out_ch
    return nn.Sequential(*layers), in_ch


def conv_decoder(channels: int, width: int, downsamplings: int, output: str = "sigmoid") -> nn.Sequential:
    """The mirror of ``conv_encoder``: transposed convolutions up to ``channels``, then ``output``."""
    layers: list[nn.Module] = []
    for level in reversed(range(downsamplings)):
        in_ch = width * 2**level
        out_ch = channels if level == 0 else width * 2 ** (level - 1)
        layers.append(nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1))
        if level:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers, nn.Sigmoid() if output == "sigmoid" else nn.Identity())


@MODELS.register("autoencoder")
class Autoencoder(GenerativeModel):
    """``encode``: images -> codes (N, code); ``decode``: codes -> images in [0, 1]."""

    config_type = AutoencoderConfig
    capabilities = ("reconstruct", "interpolate")

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        self.image_shape = (config.channels, config.resolution, config.resolution)
        pixels = config.channels * config.resolution**2
        if config.kind == "linear":
            self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(pixels, config.code, bias=config.linear_bias))
            self.decoder = nn.Sequential(
                nn.Linear(config.code, pixels, bias=config.linear_bias),
                nn.Sigmoid() if config.output == "sigmoid" else nn.Identity(),
            )
        else:
            body, out_ch = conv_encoder(config.channels, config.width, config.downsamplings)
            side = config.resolution // 2**config.downsamplings
            self.encoder = nn.Sequential(body, nn.Flatten(), nn.Linear(out_ch * side * side, config.code))
            self.decoder_in = nn.Sequential(nn.Linear(config.code, out_ch * side * side), nn.ReLU())
            self.decoder = conv_decoder(config.channels, config.width, config.downsamplings, config.output)
            self._map = (out_ch, side)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        if self.config.kind == "linear":
            return self.decoder(z).view(len(z), *self.image_shape)
        out_ch, side = self._map
        return self.decoder(self.decoder_in(z).view(len(z), out_ch, side, side))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.reconstruct(x)
