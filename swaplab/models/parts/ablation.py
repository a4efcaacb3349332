"""Ablation substitutes: parameter-free stand-ins registered beside the real parts.

They reproduce the SimSwap ablation study (see docs/mission.md): ``parts.encoder=none`` resizes
the target to the replaced encoder's output size, converts it to grayscale and repeats it to the
encoder's width; ``parts.bottleneck=none`` passes features through (ignoring the identity);
``parts.decoder=none`` resizes features to the output size and keeps the first 3 channels;
``parts.decoder=pca`` reduces the channels to 3 by PCA fitted on the batch, then resizes. The
``-bilinear`` names (``none-bilinear``, ``pca-bilinear``) resize bilinearly instead of bicubically.

They accept the construction keywords of every family (per-pair: see ``registries.py``; SimSwap:
see ``parts/simswap.py``) and imitate the output geometry of the family's real part: SimSwap
models pass ``n_down`` (and ``max_dims``), per-pair models do not, and the encoder's geometry is
then DeepFaceLab's. Models never test for them: a substitute is just another registered name.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from swaplab.models.parts.dfl import DFLVariant, check_resolution
from swaplab.models.parts.registries import BOTTLENECKS, DECODERS, ENCODERS
from swaplab.models.parts.simswap import simswap_encoder_geometry
from swaplab.system import full_precision

Tensor = torch.Tensor
Interpolation = Literal["bicubic", "bilinear"]
Squash = Literal["sigmoid", "minmax"]

#: ITU-R BT.601 luma weights (R, G, B), the usual "convert to grayscale".
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def resize(x: Tensor, size: int, mode: Interpolation = "bicubic") -> Tensor:
    """Resize (N, C, H, W) to size x size in float32; antialiased when shrinking (as an image resize is).

    Antialiasing matters: without it, shrinking 224 px to 28 px samples 1 pixel in 8.
    """
    if mode not in ("bicubic", "bilinear"):
        raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got {mode!r}")
    with full_precision(x):
        shrinking = size < x.shape[-1] or size < x.shape[-2]
        return F.interpolate(x.float(), size=(size, size), mode=mode, align_corners=False, antialias=shrinking)


def to_grayscale(images: Tensor) -> Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) luma (BT.601); a 1-channel input is returned as is."""
    if images.shape[1] == 1:
        return images
    if images.shape[1] != 3:
        raise ValueError(f"grayscale needs 1 or 3 channels, got {images.shape[1]}")
    weights = images.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def dfl_encoder_geometry(resolution: int, dims: int, variant: str = "") -> tuple[int, int]:
    """(channels, side) of DeepFaceLab's encoder output (``DFLEncoder``): dims * 8 at R / 16 (R / 32 with t)."""
    check_resolution(resolution, variant)
    downscales = 5 if DFLVariant.parse(variant).deeper else 4
    size = resolution
    for _ in range(downscales):
        size = math.ceil(size / 2)
    return dims * 8, size


class GrayscaleResizeEncoder(nn.Module):
    """The "no encoder" ablation: resize, grayscale, repeat to the replaced encoder's width.

    Input (N, 3, R, R) in [0, 1]; output (N, C, S, S) with every channel equal, where (C, S) is
    the output geometry of the family's real encoder (SimSwap's when ``n_down`` is given, else
    DeepFaceLab's). No parameters.
    """

    flat = False

    def __init__(
        self,
        *,
        in_channels: int = 3,
        resolution: int,
        dims: int,
        variant: str = "",
        n_down: int | None = None,
        max_dims: int = 512,
        norm: str | None = None,
        interpolation: Interpolation = "bicubic",
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"the grayscale encoder takes 1 or 3 channels, got {in_channels}")
        if n_down is not None:
            geometry = simswap_encoder_geometry(resolution, dims, n_down, max_dims)
        else:
            geometry = dfl_encoder_geometry(resolution, dims, variant)
        self.out_channels, self.out_size = geometry
        self.out_features = self.out_channels * self.out_size**2
        self.interpolation = interpolation

    def forward(self, images: Tensor) -> Tensor:
        gray = resize(to_grayscale(images.float()), self.out_size, self.interpolation)
        return gray.expand(-1, self.out_channels, -1, -1).contiguous()


ENCODERS.register("none")(GrayscaleResizeEncoder)
ENCODERS.register("none-bilinear")(functools.partial(GrayscaleResizeEncoder, interpolation="bilinear"))


@BOTTLENECKS.register("none")
class PassThroughBottleneck(nn.Module):
    """The "no bottleneck" ablation: features pass through unchanged; the identity is ignored.

    A flat per-pair code (N, C * S * S) is only reshaped to (N, C, S, S); a spatial input is
    returned as the very same tensor. No parameters.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        in_size: int,
        in_features: int | None = None,
        ae_dims: int | None = None,
        resolution: int | None = None,
        variant: str = "",
        identity_dim: int | None = None,
        n_blocks: int | None = None,
    ) -> None:
        super().__init__()
        self.out_channels, self.out_size = in_channels, in_size

    def forward(self, features: Tensor, identity: Tensor | None = None) -> Tensor:
        if features.ndim == 4:
            return features
        return features.reshape(-1, self.out_channels, self.out_size, self.out_size)


class PCABasis(NamedTuple):
    """Principal axes of a batch's feature vectors: ``mean`` (C,), ``components`` (C, k) as
    columns, ``variances`` (k,) in decreasing order (the variance each component explains)."""

    mean: Tensor
    components: Tensor
    variances: Tensor


@torch.no_grad()
def pca_basis(features: Tensor, k: int = 3) -> PCABasis:
    """PCA of the C-dim feature vectors of every pixel of every image of a (N, C, H, W) batch.

    Eigen-decomposition of the (C, C) covariance in float32, largest ``k`` eigenvalues first.
    Each component's sign is fixed so that its largest-magnitude loading is positive (an
    eigenvector's sign is arbitrary; this keeps the projection's colours from flipping between
    batches). Without gradients: the basis is a constant of the step.
    """
    channels = features.shape[1]
    if not 1 <= k <= channels:
        raise ValueError(f"PCA needs 1 <= k <= channels ({channels}), got k={k}")
    with full_precision(features):
        vectors = features.float().permute(0, 2, 3, 1).reshape(-1, channels)
        mean = vectors.mean(dim=0)
        centred = vectors - mean
        covariance = centred.T @ centred / max(1, len(vectors) - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        order = torch.argsort(eigenvalues, descending=True)[:k]
        components = eigenvectors[:, order]
        pivot = components.abs().argmax(dim=0)
        signs = torch.sign(components[pivot, torch.arange(k, device=components.device)])
        components = components * torch.where(signs == 0, torch.ones_like(signs), signs)
        return PCABasis(mean, components, eigenvalues[order].clamp_min(0.0))


def pca_project(features: Tensor, basis: PCABasis) -> Tensor:
    """(N, C, H, W) -> (N, k, H, W): each pixel's centred feature vector on the basis' components.

    Differentiable with respect to ``features`` (the basis is a constant).
    """
    with full_precision(features):
        centred = features.float() - basis.mean.view(1, -1, 1, 1)
        return torch.einsum("nchw,ck->nkhw", centred, basis.components)


def first_channels(features: Tensor, k: int = 3) -> Tensor:
    """The first ``k`` channels, in float32."""
    if features.shape[1] < k:
        raise ValueError(f"need at least {k} feature channels, got {features.shape[1]}")
    return features[:, :k].float()


def pca_channels(features: Tensor, k: int = 3) -> Tensor:
    """The projection on the batch's first ``k`` principal components (see ``pca_basis``)."""
    return pca_project(features, pca_basis(features, k))


def minmax_per_image(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Map each image (over all its channels and pixels) linearly onto [0, 1]."""
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - low) / (high - low + eps)


REDUCTIONS = {"first3": first_channels, "pca": pca_channels}
SQUASHES = {"sigmoid": torch.sigmoid, "minmax": minmax_per_image}


class ChannelReductionDecoder(nn.Module):
    """The "no decoder" ablations: reduce the channels to 3, resize to the output size, map to [0, 1].

    ``reduction``: ``first3`` keeps the first 3 channels (the study's "no decoder"); ``pca``
    projects on the batch's first 3 principal components (the variant it proposed; fitted per
    batch, so a sample's colours depend on its batch-mates; under DDP, on its process's batch).
    ``squash`` maps to [0, 1]: ``sigmoid`` (default for ``first3``: monotone, so the network can
    learn to emit the right logits) or ``minmax`` per image over its 3 channels (default for
    ``pca``, whose scale is arbitrary). Returns ``(rgb, mask)`` like every decoder, the mask all ones. No parameters.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        in_size: int,
        resolution: int,
        dims: int | None = None,
        mask_dims: int | None = None,
        variant: str = "",
        max_dims: int | None = None,
        norm: str | None = None,
        reduction: Literal["first3", "pca"] = "first3",
        interpolation: Interpolation = "bicubic",
        squash: Squash = "sigmoid",
    ) -> None:
        super().__init__()
        if in_channels < 3:
            raise ValueError(f"the {reduction} decoder needs at least 3 feature channels, got {in_channels}")
        self.reduce = REDUCTIONS[reduction]
        self.squash = SQUASHES[squash]
        self.reduction, self.interpolation = reduction, interpolation
        self.out_channels, self.out_size = 3, resolution

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        rgb = self.squash(resize(self.reduce(features), self.out_size, self.interpolation))
        return rgb, torch.ones_like(rgb[:, :1])


def _register_decoders() -> None:
    for name, reduction, squash in (("none", "first3", "sigmoid"), ("pca", "pca", "minmax")):
        for suffix, interpolation in (("", "bicubic"), ("-bilinear", "bilinear")):
            DECODERS.register(name + suffix)(
                functools.partial(
                    ChannelReductionDecoder, reduction=reduction, interpolation=interpolation, squash=squash
                )
            )


_register_decoders()
