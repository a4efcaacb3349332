"""Discriminators of the GAN families: a multi-scale PatchGAN, a projected discriminator, StyleGAN2's
residual discriminator and DCGAN's.

All return a ``DiscriminatorOutput``: per head (one per scale, or one per frozen feature level)
the list of intermediate feature maps, for feature matching, and the patch logits. Construction
keywords (``DISCRIMINATORS.create(name, in_channels=, resolution=, dims=, n_layers=, scales=,
norm=)``): ``scales`` is the number of heads and ``n_layers`` the depth of each; a part ignores the
keywords it has no use for (the residual and DCGAN discriminators have one head). Discriminators
know no losses; images are (N, C, R, R) in [0, 1].
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from swaplab.models.parts.ablation import resize
from swaplab.models.parts.equalized import EqualConv2d, EqualLinear, leaky
from swaplab.models.parts.registries import DISCRIMINATORS

Tensor = torch.Tensor
DiscriminatorNorm = Literal["instance", "batch", "none"]

#: LeakyReLU slope of pix2pixHD's and SimSwap's discriminators.
SLOPE = 0.2


class DiscriminatorOutput(NamedTuple):
    """``features[h]``: head h's intermediate maps, first to last (logits excluded);
    ``logits[h]``: head h's patch logits (N, 1, h, w), one real/fake score per patch."""

    features: list[list[Tensor]]
    logits: list[Tensor]


def discriminator_norm(kind: str, channels: int) -> nn.Module:
    """``instance`` (pix2pixHD's default, no affine), ``batch`` or ``none``.

    Instance norm keeps samples independent, which a per-sample gradient penalty needs.
    """
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"discriminator norm must be 'instance', 'batch' or 'none', got {kind!r}")


class BlocksThenLogits(nn.Module):
    """A stack of blocks then a conv to patch logits; ``forward`` returns (every block's output, logits).

    The one forward of every discriminator head: subclasses build ``blocks`` and ``head``.
    """

    blocks: nn.ModuleList
    head: nn.Module

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features, self.head(x)


class PatchDiscriminator(BlocksThenLogits):
    """pix2pixHD's N-layer PatchGAN: ``n_layers`` 4x4 stride-2 convs (widths dims * 2^i up to
    dims * 8), one 4x4 stride-1 conv, and a 4x4 conv to one logit per patch.

    ``forward`` returns (features, logits): the n_layers + 1 block outputs, then the logits.
    """

    def __init__(self, in_channels: int, dims: int, n_layers: int, norm: DiscriminatorNorm) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        blocks = [nn.Sequential(nn.Conv2d(in_channels, dims, 4, stride=2, padding=2), nn.LeakyReLU(SLOPE))]
        channels = dims
        for i in range(1, n_layers + 1):
            width = min(dims * 2**i, dims * 8)
            stride = 2 if i < n_layers else 1
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, width, 4, stride=stride, padding=2),
                    discriminator_norm(norm, width),
                    nn.LeakyReLU(SLOPE),
                )
            )
            channels = width
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(channels, 1, 4, stride=1, padding=2)


@DISCRIMINATORS.register("multiscale")
class MultiScaleDiscriminator(nn.Module):
    """``scales`` PatchGANs on the image and its successive 2x downsamplings (pix2pixHD, SimSwap: 2).

    Downsampling is pix2pixHD's 3x3 stride-2 average pool that ignores the padding.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        resolution: int,
        dims: int = 64,
        n_layers: int = 4,
        scales: int = 2,
        norm: DiscriminatorNorm = "instance",
    ) -> None:
        super().__init__()
        if scales < 1:
            raise ValueError(f"scales must be >= 1, got {scales}")
        if resolution // 2 ** (scales - 1) < 16:
            raise ValueError(f"{scales} scales shrink a {resolution} px image below 16 px")
        self.heads = nn.ModuleList(PatchDiscriminator(in_channels, dims, n_layers, norm) for _ in range(scales))

    def forward(self, images: Tensor) -> DiscriminatorOutput:
        features, logits = [], []
        x = images
        for index, head in enumerate(self.heads):
            if index:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            head_features, head_logits = head(x)
            features.append(head_features)
            logits.append(head_logits)
        return DiscriminatorOutput(features, logits)


def freeze_as_buffers(module: nn.Module) -> nn.Module:
    """Turn every parameter of ``module`` into a non-persistent buffer, in place.

    Stronger than ``requires_grad_(False)``: a later ``discriminator.requires_grad_(True)`` or an
    optimiser built from ``discriminator.parameters()`` cannot reach these weights, and
    checkpoints do not carry them (they are reloaded from their source file). Gradients still
    flow through the module to its input.
    """
    for sub in module.modules():
        for name, parameter in list(sub._parameters.items()):
            if parameter is None:
                continue
            del sub._parameters[name]
            sub.register_buffer(name, parameter.detach().clone(), persistent=False)
    return module


class ProjectionHead(BlocksThenLogits):
    """A small trainable head on one frozen feature level: 1x1 projection to ``dims``, then
    ``n_layers - 1`` 3x3 convs (norm, LeakyReLU), then a 3x3 conv to patch logits."""

    def __init__(self, in_channels: int, dims: int, n_layers: int, norm: DiscriminatorNorm) -> None:
        super().__init__()
        blocks = [nn.Sequential(nn.Conv2d(in_channels, dims, 1), nn.LeakyReLU(SLOPE))]
        for _ in range(n_layers - 1):
            blocks.append(
                nn.Sequential(nn.Conv2d(dims, dims, 3, padding=1), discriminator_norm(norm, dims), nn.LeakyReLU(SLOPE))
            )
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(dims, 1, 3, padding=1)


@DISCRIMINATORS.register("projected")
class ProjectedDiscriminator(nn.Module):
    """A projected discriminator (after Sauer et al., "Projected GANs Converge Faster", 2021).

    The frozen feature network is the stem and first three residual stages of our dlib ResNet
    port (``swaplab.identity.dlib_resnet``): the image is resized to the port's 150 px input, and the
    heads sit on the last ``scales`` (1-3) of those stages' outputs (64 ch at 17 px, 128 ch at
    8 px for 2 heads; 32 ch at 35 px added for 3). Each head's feature list starts with the frozen
    level itself (so "early" feature matching compares the frozen network's features), followed
    by its own layers. The frozen weights are buffers (see ``freeze_as_buffers``): no gradients
    reach them, but gradients flow to the input image. ``model_path``: the dlib network file
    (default: the one in ``face_recognition_models``).
    """

    LEVEL_CHANNELS = (32, 64, 128)
    INPUT_SIZE = 150

    def __init__(
        self,
        *,
        in_channels: int = 3,
        resolution: int,
        dims: int = 64,
        n_layers: int = 2,
        scales: int = 2,
        norm: DiscriminatorNorm = "instance",
        model_path: str | None = None,
    ) -> None:
        super().__init__()
        from swaplab.identity.dlib_resnet import load_dlib_identity  # loads weights: only when built

        if in_channels != 3:
            raise ValueError(f"the projected discriminator's frozen network takes RGB, got {in_channels} channels")
        if not 1 <= scales <= len(self.LEVEL_CHANNELS):
            raise ValueError(f"the projected discriminator has 1 to {len(self.LEVEL_CHANNELS)} heads, got {scales}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        network = load_dlib_identity(model_path, channels_last=False)
        self.register_buffer("channel_means", network.channel_means.detach().clone().view(1, 3, 1, 1), persistent=False)
        self.stem = freeze_as_buffers(network.stem)
        self.stages = freeze_as_buffers(network.stages[: len(self.LEVEL_CHANNELS)])
        self.levels = tuple(range(len(self.LEVEL_CHANNELS) - scales, len(self.LEVEL_CHANNELS)))
        self.heads = nn.ModuleList(ProjectionHead(self.LEVEL_CHANNELS[i], dims, n_layers, norm) for i in self.levels)

    def frozen_features(self, images: Tensor) -> list[Tensor]:
        """The frozen network's stage outputs for (N, 3, R, R) images in [0, 1]."""
        x = images
        if x.shape[-1] != self.INPUT_SIZE or x.shape[-2] != self.INPUT_SIZE:
            x = resize(x, self.INPUT_SIZE, "bilinear").to(images.dtype)
        x = self.stem((x * 255.0 - self.channel_means) * (1.0 / 256.0))  # dlib's input scaling
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward(self, images: Tensor) -> DiscriminatorOutput:
        frozen = self.frozen_features(images)
        features, logits = [], []
        for level, head in zip(self.levels, self.heads):
            head_features, head_logits = head(frozen[level])
            features.append([frozen[level], *head_features])
            logits.append(head_logits)
        return DiscriminatorOutput(features, logits)


# ---------------------------------------------------------------- StyleGAN2's and DCGAN's


class ResidualBlock(nn.Module):
    """StyleGAN2's residual D block: two 3x3 convs and a 2x average-pool, plus a pooled 1x1 skip, over sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = EqualConv2d(in_channels, in_channels, 3)
        self.conv2 = EqualConv2d(in_channels, out_channels, 3)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        main = F.avg_pool2d(leaky(self.conv2(leaky(self.conv1(x)))), 2)
        return (main + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2.0)


@DISCRIMINATORS.register("residual")
class ResidualDiscriminator(nn.Module):
    """StyleGAN2's D (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN"): fromRGB, residual
    blocks halving the side down to 4x4 (``max(min_dims, dims >> k)`` channels k halvings above 4x4), the
    minibatch standard deviation as an extra channel, a 3x3 conv and two dense layers: one logit per image,
    as (N, 1, 1, 1) patch logits. Features for matching: the residual blocks' outputs."""

    def __init__(
        self,
        *,
        in_channels: int = 3,
        resolution: int,
        dims: int = 64,
        min_dims: int = 16,
        stddev_group: int = 4,
        **_: object,
    ) -> None:
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"the residual discriminator needs a power-of-two side >= 8, got {resolution}")
        levels = int(math.log2(resolution)) - 1  # 4 -> 1, 8 -> 2, 32 -> 4
        widths = [max(min_dims, dims >> level) for level in range(levels)]
        self.from_rgb = EqualConv2d(in_channels, widths[-1], 1)
        self.blocks = nn.Sequential(*(ResidualBlock(widths[lv], widths[lv - 1]) for lv in reversed(range(1, levels))))
        self.stddev_group = stddev_group
        extra = 1 if stddev_group else 0
        self.conv = EqualConv2d(widths[0] + extra, widths[0], 3)
        self.dense = EqualLinear(widths[0] * 16, widths[0])
        self.out = EqualLinear(widths[0], 1)

    def minibatch_stddev(self, x: Tensor) -> Tensor:
        """Append, per group of samples, the mean over features of their standard deviation across the group:
        a batch of too-similar fakes shows it (Karras et al., "Progressive Growing of GANs")."""
        n, c, h, w = x.shape
        group = min(self.stddev_group, n)
        while n % group:
            group -= 1
        y = x.float().view(group, n // group, c, h, w)
        y = (y.var(0, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))  # (n // group,)
        y = y.view(1, -1, 1, 1, 1).expand(group, -1, 1, h, w).reshape(n, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], 1)

    def forward(self, images: Tensor) -> DiscriminatorOutput:
        x = leaky(self.from_rgb(images * 2.0 - 1.0))
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        if self.stddev_group:
            x = self.minibatch_stddev(x)
        x = leaky(self.conv(x))
        logits = self.out(leaky(self.dense(x.flatten(1))))
        return DiscriminatorOutput([features], [logits.view(-1, 1, 1, 1)])


def dcgan_blocks(in_channels: int, dims: int, n_layers: int, batchnorm: bool) -> nn.ModuleList:
    """DCGAN's D body (Radford et al., "Unsupervised Representation Learning with Deep Convolutional GANs"):
    ``n_layers`` 4x4 stride-2 convolutions, ``dims`` channels doubling per layer, LeakyReLU(0.2), batch norm
    after all but the first; no pooling."""
    blocks = [nn.Sequential(nn.Conv2d(in_channels, dims, 4, 2, 1), nn.LeakyReLU(SLOPE))]
    for level in range(1, n_layers):
        width = dims * 2**level
        norm = [nn.BatchNorm2d(width)] if batchnorm else []
        blocks.append(
            nn.Sequential(nn.Conv2d(width // 2, width, 4, 2, 1, bias=not batchnorm), *norm, nn.LeakyReLU(SLOPE))
        )
    return nn.ModuleList(blocks)


@DISCRIMINATORS.register("dcgan")
class DCGANDiscriminator(BlocksThenLogits):
    """``dcgan_blocks`` then a dense layer on the flattened last map: one logit per image, as (N, 1, 1, 1)."""

    def __init__(
        self, *, in_channels: int = 3, resolution: int, dims: int = 64, n_layers: int = 3,
        norm: DiscriminatorNorm = "batch", **_: object,
    ) -> None:  # fmt: skip
        super().__init__()
        side = resolution // 2**n_layers
        if side < 1 or resolution % 2**n_layers:
            raise ValueError(f"{n_layers} stride-2 layers do not divide a {resolution} px image")
        self.blocks = dcgan_blocks(in_channels, dims, n_layers, norm == "batch")
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(dims * 2 ** (n_layers - 1) * side * side, 1))

    def forward(self, images: Tensor) -> DiscriminatorOutput:  # type: ignore[override]
        features, logits = super().forward(images)
        return DiscriminatorOutput([features], [logits.view(-1, 1, 1, 1)])
