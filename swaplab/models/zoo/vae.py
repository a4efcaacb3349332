"""The variational autoencoder: a convolutional encoder to q(z|x) = N(mu, diag(sigma^2)), a decoder back to pixels.

Kingma & Welling 2014, "Auto-Encoding Variational Bayes" (VAE). ``encode_distribution`` gives
(mu, log sigma^2), ``forward`` draws z = mu + sigma * eps (the reparameterisation, so gradients
reach mu and sigma) and decodes it through a sigmoid (the per-pixel Bernoulli mean or Gaussian
mean of images in [0, 1]); ``sample`` decodes z ~ N(0, I). The loss and its training live in
``swaplab.train.recipes.zoo_vae``; nothing here trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from swaplab.config import ConfigError, config_group
from swaplab.models.factory import MODELS
from swaplab.models.generative import GenerativeModel
from swaplab.models.zoo.autoencoder import conv_decoder, conv_encoder

Tensor = torch.Tensor


@dataclass
class VAEConfig:
    name: str = "vae-digits"
    arch: Literal["vae"] = "vae"
    channels: int = 1
    resolution: int = 8
    latent: int = 8  # dimensions of z
    width: int = 32  # channels of the first convolution (doubling per downsampling)
    downsamplings: int = 2  # stride-2 convolutions (the map is resolution / 2^downsamplings)

    def __post_init__(self) -> None:
        if self.latent < 1 or self.width < 1 or self.downsamplings < 0:
            raise ConfigError("model.latent and model.width must be >= 1, model.downsamplings >= 0")
        if self.resolution % 2**self.downsamplings:
            raise ConfigError(f"model.resolution {self.resolution} must be divisible by 2^{self.downsamplings}")


config_group("model").register("vae-digits")(VAEConfig)
config_group("model").register("vae-mnist")(
    lambda: VAEConfig(name="vae-mnist", resolution=28, latent=16, width=32, downsamplings=2)
)
config_group("model").register("vae-faces")(
    lambda: VAEConfig(name="vae-faces", channels=3, resolution=32, latent=64, width=32, downsamplings=3)
)


@MODELS.register("vae")
class VAE(GenerativeModel):
    """``encode``: images -> the posterior means (N, latent); ``decode``: codes -> images in [0, 1]."""

    config_type = VAEConfig
    capabilities = ("sample", "reconstruct", "interpolate")

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.image_shape = (config.channels, config.resolution, config.resolution)
        body, out_ch = conv_encoder(config.channels, config.width, config.downsamplings)
        side = config.resolution // 2**config.downsamplings
        # One linear layer gives both posterior parameters: the first half mu, the second log sigma^2.
        self.encoder = nn.Sequential(body, nn.Flatten(), nn.Linear(out_ch * side * side, 2 * config.latent))
        self.decoder_in = nn.Sequential(nn.Linear(config.latent, out_ch * side * side), nn.ReLU())
        self.decoder = conv_decoder(config.channels, config.width, config.downsamplings, "sigmoid")
        self._map = (out_ch, side)

    def encode_distribution(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log sigma^2) of q(z|x), each (N, latent)."""
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        return mean, log_var

    def encode(self, x: Tensor) -> Tensor:
        return self.encode_distribution(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        out_ch, side = self._map
        return self.decoder(self.decoder_in(z).view(len(z), out_ch, side, side))

    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoding of the posterior mean: the deterministic reconstruction."""
        return self.decode(self.encode(x))

    def sample(self, n: int, generator: torch.Generator | None = None, labels: Tensor | None = None) -> Tensor:
        return self.decode(self.noise((n, self.config.latent), generator))

    def forward(self, x: Tensor, eps: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(decoding of z = mu + sigma * eps, mu, log sigma^2); ``eps`` ~ N(0, I) is drawn when not given."""
        mean, log_var = self.encode_distribution(x)
        if eps is None:
            eps = torch.randn_like(mean)
        z = mean + torch.exp(0.5 * log_var) * eps
        return self.decode(z), mean, log_var
