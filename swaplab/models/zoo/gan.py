"""The GAN family's two players in one module: an MLP or DCGAN generator and discriminator, optionally conditional.

Goodfellow et al. 2014, "Generative Adversarial Nets" (GAN): the generator maps noise z ~ N(0, I)
to images in [0, 1], the discriminator maps images to one logit each (a critic's score under the
Wasserstein loss). ``network=mlp``: fully connected layers (ReLU with batch norm in G, a sigmoid
output; LeakyReLU(0.2) in D). ``network=dcgan``: Radford et al. 2016, "Unsupervised Representation
Learning with Deep Convolutional Generative Adversarial Networks" (DCGAN), with its rules: no
pooling, strided convolutions in D and transposed ones in G, batch norm (not on D's input layer
nor G's output), ReLU and a tanh output (rescaled to [0, 1]) in G, LeakyReLU(0.2) in D, weights
from N(0, 0.02). ``num_classes`` > 0 makes both players conditional:
G reads [z, embedding(y)]; D is a projection discriminator (Miyato & Koyama 2018, "cGANs with
Projection Discriminator"), D(x, y) = w . phi(x) + b + embedding(y) . phi(x). ``spectral_norm``
divides each of D's weights by its largest singular value (Miyato et al. 2018, "Spectral
Normalization for Generative Adversarial Networks"). ``space=points``: the MLP players on points
of ``channels`` coordinates, shaped (N, channels, 1, 1), with a linear output (toy 2-D mixtures;
coordinates, not pixels, so not confined to [0, 1]). Nothing here trains: see
``swaplab.train.recipes.zoo_gan``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from swaplab.config import ConfigError, config_group
from swaplab.models.factory import MODELS
from swaplab.models.generative import GenerativeModel
from swaplab.models.parts.discriminators import dcgan_blocks

Tensor = torch.Tensor


@dataclass
class GANConfig:
    name: str = "gan-digits"
    arch: Literal["gan"] = "gan"
    network: Literal["mlp", "dcgan"] = "mlp"
    space: Literal["images", "points"] = "images"  # points: (N, channels, 1, 1) coordinates, linear output
    channels: int = 1
    resolution: int = 8
    num_classes: int = 0  # > 0: class- or identity-conditional (labels below it)
    latent: int = 32  # dimensions of z
    width: int = 256  # mlp: units per hidden layer; dcgan: channels of D's first (and G's last hidden) layer
    depth: int = 2  # mlp: hidden layers per player; dcgan: strided (transposed) convolutions per player
    spectral_norm: bool = False  # spectral normalisation of every layer of D
    g_batchnorm: bool = True  # batch norm in G's hidden layers (DCGAN's rule; it steadies the MLP too)
    d_batchnorm: bool = True  # dcgan: batch norm in D's hidden layers (its rule; off for a gradient penalty)

    def __post_init__(self) -> None:
        if min(self.latent, self.width, self.depth) < 1 or self.num_classes < 0:
            raise ConfigError("model.latent, model.width and model.depth must be >= 1, model.num_classes >= 0")
        if self.space == "points" and (self.network != "mlp" or self.resolution != 1):
            raise ConfigError("model.space=points needs model.network=mlp and model.resolution=1")
        if self.network == "dcgan" and (self.resolution % 2**self.depth or self.resolution < 2**self.depth):
            raise ConfigError(f"model.resolution {self.resolution} must be a multiple of 2^depth = {2**self.depth}")


_presets = config_group("model")
_presets.register("gan-digits")(GANConfig)
_presets.register("gan-mnist")(lambda: GANConfig(name="gan-mnist", resolution=28, latent=64, width=512))
#: The mode-collapse check: 2-D points of the 8-Gaussian ring (``swaplab.train.recipes.zoo_gan.MixtureConfig``).
_presets.register("gan-mixture8")(
    lambda: GANConfig(
        name="gan-mixture8", space="points", channels=2, resolution=1, latent=2, width=128, g_batchnorm=False
    )
)
#: Conditional GANs: train them with ``loss=wgan-gp``. Under the (non-)saturating losses the
#: generator learns to ignore z and gives one image per label (``val/class_diversity`` near 0).
_presets.register("cgan-digits")(lambda: GANConfig(name="cgan-digits", num_classes=10))
#: Identity-conditional on LFW faces: one class per person of ``data.train`` (set ``model.num_classes``).
#: D without batch norm, so that ``loss=wgan-gp``'s per-sample gradient penalty applies as it is.
_presets.register("cgan-faces32")(
    lambda: GANConfig(
        name="cgan-faces32",
        network="dcgan",
        channels=3,
        resolution=32,
        num_classes=2,
        latent=64,
        width=64,
        depth=3,
        d_batchnorm=False,
    )
)
_presets.register("dcgan-digits")(lambda: GANConfig(name="dcgan-digits", network="dcgan", width=32, depth=2))
_presets.register("dcgan-mnist")(
    lambda: GANConfig(name="dcgan-mnist", network="dcgan", resolution=28, latent=64, width=32, depth=2)
)
_presets.register("dcgan-faces32")(
    lambda: GANConfig(name="dcgan-faces32", network="dcgan", channels=3, resolution=32, latent=64, width=64, depth=3)
)


class UnitTanh(nn.Module):
    """(tanh(x) + 1) / 2: DCGAN's tanh output moved to the contract's [0, 1]."""

    def forward(self, x: Tensor) -> Tensor:
        return (torch.tanh(x) + 1.0) / 2.0


def mlp_generator_body(
    inputs: int, outputs: int, width: int, depth: int, batchnorm: bool, output: nn.Module
) -> nn.Sequential:
    """z -> ``depth`` Linear (+ batch norm) + ReLU layers -> Linear -> ``output``."""
    layers: list[nn.Module] = []
    for index in range(depth):
        layers.append(nn.Linear(inputs if index == 0 else width, width, bias=not batchnorm))
        layers += [nn.BatchNorm1d(width), nn.ReLU()] if batchnorm else [nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, outputs), output)


def mlp_features(inputs: int, width: int, depth: int) -> nn.Sequential:
    """D's feature extractor phi: flatten, then ``depth`` Linear + LeakyReLU(0.2) layers."""
    layers: list[nn.Module] = [nn.Flatten()]
    for index in range(depth):
        layers += [nn.Linear(inputs if index == 0 else width, width), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


def dcgan_generator_body(
    inputs: int, channels: int, width: int, depth: int, side: int, batchnorm: bool
) -> nn.Sequential:
    """z -> a (width * 2^(depth-1), side, side) map (a projection), then ``depth`` transposed convolutions."""
    top = width * 2 ** (depth - 1)

    def norm_relu(ch: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(ch), nn.ReLU()] if batchnorm else [nn.ReLU()]

    # Layers followed by batch norm have no bias: the norm's shift replaces it.
    layers: list[nn.Module] = [
        nn.Linear(inputs, top * side * side, bias=not batchnorm),
        nn.Unflatten(1, (top, side, side)),
    ]
    layers += norm_relu(top)
    for level in reversed(range(1, depth)):
        out_ch = width * 2 ** (level - 1)
        layers += [nn.ConvTranspose2d(width * 2**level, out_ch, 4, 2, 1, bias=not batchnorm), *norm_relu(out_ch)]
    return nn.Sequential(*layers, nn.ConvTranspose2d(width, channels, 4, 2, 1), UnitTanh())


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: weights from N(0, 0.02) (batch norm scales from N(1, 0.02)), biases 0.
    Label embeddings keep their own initialisation."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(layer.weight, 1.0, 0.02)
        if isinstance(getattr(layer, "bias", None), Tensor):
            nn.init.zeros_(layer.bias)


class Generator(nn.Module):
    """z (N, latent) and, when conditional, labels (N,) -> images (N, C, R, R)."""

    def __init__(self, body: nn.Module, latent: int, num_classes: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.body = body
        self.embedding = nn.Embedding(num_classes, latent) if num_classes else None
        self.image_shape = image_shape

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embedding is not None:
            if labels is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, self.embedding(labels)], 1)
        return self.body(z).view(len(z), *self.image_shape)


class Discriminator(nn.Module):
    """Images (N, C, R, R) and, when conditional, labels (N,) -> logits (N,); a projection term for labels."""

    def __init__(self, features: nn.Module, feature_size: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Linear(feature_size, 1)
        self.embedding = nn.Embedding(num_classes, feature_size) if num_classes else None
        if self.embedding is not None:  # small: the projection starts near the unconditional D
            nn.init.normal_(self.embedding.weight, 0.0, 0.02)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        phi = self.features(x)
        logits = self.head(phi).squeeze(1)
        if self.embedding is not None:
            if labels is None:
                raise ValueError("a conditional discriminator needs labels")
            logits = logits + (self.embedding(labels) * phi).sum(1)
        return logits


@MODELS.register("gan")
class GAN(GenerativeModel):
    """``generator`` and ``discriminator`` (one state dict for both); ``sample`` uses the generator alone."""

    config_type = GANConfig

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        self.image_shape = (config.channels, config.resolution, config.resolution)
        self.num_classes = config.num_classes
        # The config decides, so these are the instance's (the recipe's card reads them from it). Points
        # are no pictures: nothing for ``swaplab sample`` or the zoo study to draw (the recipe scores them).
        if config.space == "points":
            self.capabilities = ()
        else:
            self.capabilities = ("sample", "conditional") if config.num_classes else ("sample",)
        inputs = config.latent * (2 if config.num_classes else 1)
        pixels = config.channels * config.resolution**2
        if config.network == "mlp":
            output = nn.Identity() if config.space == "points" else nn.Sigmoid()
            body = mlp_generator_body(inputs, pixels, config.width, config.depth, config.g_batchnorm, output)
            features, feature_size = mlp_features(pixels, config.width, config.depth), config.width
        else:
            side = config.resolution // 2**config.depth
            body = dcgan_generator_body(inputs, config.channels, config.width, config.depth, side, config.g_batchnorm)
            features = nn.Sequential(
                *dcgan_blocks(config.channels, config.width, config.depth, config.d_batchnorm), nn.Flatten()
            )
            feature_size = config.width * 2 ** (config.depth - 1) * side * side
        self.generator = Generator(body, config.latent, config.num_classes, self.image_shape)
        self.discriminator = Discriminator(features, feature_size, config.num_classes)
        if config.network == "dcgan":
            dcgan_init(self)
        if config.spectral_norm:
            for layer in list(self.discriminator.modules()):
                if isinstance(layer, (nn.Linear, nn.Conv2d, nn.Embedding)):
                    spectral_norm(layer)

    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.generator(z, labels)

    def discriminate(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.discriminator(x, labels)

    def latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.noise((n, self.config.latent), generator)

    def random_labels(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Uniform labels (n,) on the model's device (None for an unconditional model)."""
        device = next(self.parameters()).device
        where = generator.device if generator is not None else device
        return torch.randint(self.num_classes, (n,), generator=generator, device=where).to(device)

    def sample(self, n: int, generator: torch.Generator | None = None, labels: Tensor | None = None) -> Tensor:
        z = self.latents(n, generator)
        if self.num_classes:
            labels = self.random_labels(n, generator) if labels is None else labels.to(z.device)
        return self.generator(z, labels if self.num_classes else None)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.generator(z, labels)
