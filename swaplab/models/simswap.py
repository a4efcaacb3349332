"""The one-shot SimSwap-style swapper: its typed config and presets, the generator, the discriminator.

``SimSwapGenerator`` (``MODELS["simswap"]``) maps a target face and the source's identity
embedding to the swapped face: ``decoder(bottleneck(encoder(target), identity))``, each part
built by name from ``config.parts`` (so ``model.parts.bottleneck=none`` is an ablation without
model code knowing it). ``create_discriminator`` builds ``config.parts.discriminator``.
``TemplateChipIdentity`` embeds aligned crops with an identity network through a fixed,
differentiable warp to its face chip (for the identity loss). The swap stage drives an exported
generator through ``swaplab.models.swapper.IdentitySwapper``. No training loop and no losses here.

Images are (N, 3, R, R) float RGB in [0, 1]; identities are dlib's 128-d descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from swaplab.config import ConfigError, register_preset
from swaplab.faces.align import TEMPLATES, AlignmentTemplate
from swaplab.models.factory import MODELS
from swaplab.models.parts import BOTTLENECKS, DECODERS, DISCRIMINATORS, ENCODERS
from swaplab.system import full_precision

Tensor = torch.Tensor


@dataclass
class SimSwapPartsConfig:
    """Registered part names; ablations replace them (``none``, ``pca``, ``projected`` ...)."""

    encoder: str = "simswap"
    bottleneck: str = "id-injection"
    decoder: str = "simswap"
    discriminator: str = "multiscale"


@dataclass
class DiscriminatorConfig:
    """Sizes of the discriminator: ``scales`` heads of ``n_layers`` layers, first width ``dims``."""

    dims: int = 64
    n_layers: int = 4
    scales: int = 2
    norm: Literal["instance", "batch", "none"] = "instance"

    def build(self, part: str, resolution: int) -> nn.Module:
        """The discriminator registered as ``part``, of these sizes, judging RGB images of ``resolution``."""
        return DISCRIMINATORS.create(
            part,
            in_channels=3,
            resolution=resolution,
            dims=self.dims,
            n_layers=self.n_layers,
            scales=self.scales,
            norm=self.norm,
        )


@dataclass
class SimSwapConfig:
    """A SimSwap-style one-shot swapper (generator sizes, parts, discriminator).

    SimSwap's generator: ``dims`` 64 doubling over ``n_down`` 3 downsamplings to ``max_dims``
    512, ``n_blocks`` 9 identity-injection blocks, batch norm; 224 px. ``identity_dim`` is the
    embedding size (128: dlib's descriptor).
    """

    name: str = "simswap-paper"
    arch: Literal["simswap"] = "simswap"
    resolution: int = 224
    dims: int = 64
    max_dims: int = 512
    n_down: int = 3
    n_blocks: int = 9
    identity_dim: int = 128
    norm: Literal["batch", "instance", "none"] = "batch"
    parts: SimSwapPartsConfig = field(default_factory=SimSwapPartsConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def __post_init__(self) -> None:
        for key in ("resolution", "dims", "max_dims", "n_down", "n_blocks", "identity_dim"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.resolution % 2**self.n_down:
            raise ConfigError(f"model.resolution {self.resolution} must be divisible by 2^n_down = {2**self.n_down}")


def _preset(name: str, **fields: object) -> None:
    register_preset("model", name, SimSwapConfig, **fields)


_preset("simswap-paper")
_preset("simswap-128", resolution=128)
#: For the CPU ablation study: 64 px, narrow widths, 4 blocks, a small 2-scale discriminator.
#: A full G + D training step at batch 8 (identity loss and gradient penalty included) takes
#: about 0.45 s in bf16 + channels_last, 0.63 s in fp32, on one thread of the 2-core reference
#: machine under load (benchmarks/bench_simswap.py); a third of it is the dlib port.
_preset(
    "simswap-tiny",
    resolution=64,
    dims=16,
    max_dims=128,
    n_blocks=4,
    discriminator=dict(dims=16, n_layers=3),
)


@MODELS.register("simswap")
class SimSwapGenerator(nn.Module):
    """``forward(target, source_identity) -> swapped``.

    ``target``: (N, 3, R, R) aligned faces in [0, 1], R = ``config.resolution``;
    ``source_identity``: (N, identity_dim) identity embeddings of the sources (dlib descriptors;
    normalised by the bottleneck if it uses them); returns (N, 3, R, R) in [0, 1]: the target's
    pose, expression and lighting with the source's identity.
    """

    config_type = SimSwapConfig

    def __init__(self, config: SimSwapConfig) -> None:
        super().__init__()
        self.config = config
        self.resolution = config.resolution
        self.encoder = ENCODERS.create(
            config.parts.encoder,
            in_channels=3,
            resolution=config.resolution,
            dims=config.dims,
            n_down=config.n_down,
            max_dims=config.max_dims,
            norm=config.norm,
        )
        self.bottleneck = BOTTLENECKS.create(
            config.parts.bottleneck,
            in_channels=self.encoder.out_channels,
            in_size=self.encoder.out_size,
            identity_dim=config.identity_dim,
            n_blocks=config.n_blocks,
            resolution=config.resolution,
        )
        self.decoder = DECODERS.create(
            config.parts.decoder,
            in_channels=self.bottleneck.out_channels,
            in_size=self.bottleneck.out_size,
            dims=config.dims,
            max_dims=config.max_dims,
            resolution=config.resolution,
            norm=config.norm,
        )
        if self.decoder.out_size != config.resolution:
            raise ValueError(f"decoder outputs {self.decoder.out_size} px, the model needs {config.resolution}")

    def named_parts(self) -> dict[str, nn.Module]:
        return dict(self.named_children())

    def forward(self, target: Tensor, source_identity: Tensor) -> Tensor:
        size = self.resolution
        if target.ndim != 4 or target.shape[1:] != (3, size, size):
            raise ValueError(
                f"SimSwapGenerator expects targets of shape (N, 3, {size}, {size}), got {tuple(target.shape)}"
            )
        features = self.bottleneck(self.encoder(target), source_identity)
        rgb, _ = self.decoder(features)
        return rgb


def create_discriminator(config: SimSwapConfig) -> nn.Module:
    """The discriminator ``config.parts.discriminator`` names, sized by ``config.discriminator``."""
    return config.discriminator.build(config.parts.discriminator, config.resolution)


# ---------------------------------------------------------------- identity of aligned crops


def template_chip_matrix(
    template: str | AlignmentTemplate, resolution: int, chip_size: int = 150, chip_padding: float = 0.25
) -> np.ndarray:
    """The fixed 2x3 affine (cv2 convention, float64) from an aligned crop to a dlib-geometry face chip.

    Every crop of a faceset aligned to ``template`` at ``resolution`` has its face's 5 landmarks
    (up to the alignment's residual) where the template puts them, so the chip transform is the
    one ``dlib.get_face_chip`` would compute from those template points
    (``swaplab.identity.chips.face_chip_matrix``): one matrix for all crops, no landmarks needed,
    and the warp is differentiable. The residual is the per-face misfit of the Umeyama alignment
    (a few pixels); it costs a little identity accuracy against per-face landmarks.
    """
    from swaplab.identity.chips import face_chip_matrix

    resolved = TEMPLATES.get(template) if isinstance(template, str) else template
    _, points = resolved.crop_positions(5, resolution)
    return face_chip_matrix(np.asarray(points, dtype=np.float64), chip_size, chip_padding).numpy()[0]


class TemplateChipIdentity(nn.Module):
    """Identity embeddings (N, D) of aligned crops (N, 3, R, R) in [0, 1], differentiably.

    Warps each crop to the network's face chip (its ``chip_size`` and ``chip_padding``, dlib's
    geometry) with ``template_chip_matrix`` (bilinear, kornia, zero padding) and runs the frozen
    network; gradients reach the crops. ``network`` is a module or a name in
    ``IDENTITY_ENCODERS`` (default ``dlib-resnet``). Use it as an identity loss' encoder.
    """

    def __init__(
        self, template: str | AlignmentTemplate, resolution: int, network: nn.Module | str = "dlib-resnet"
    ) -> None:
        super().__init__()
        from swaplab.identity.registry import IDENTITY_ENCODERS

        self.network = IDENTITY_ENCODERS.create(network) if isinstance(network, str) else network
        self.resolution = resolution
        self.chip_size = int(getattr(self.network, "chip_size", 150))
        padding = float(getattr(self.network, "chip_padding", 0.25))
        matrix = torch.from_numpy(template_chip_matrix(template, resolution, self.chip_size, padding)).float()
        self.register_buffer("matrix", matrix.unsqueeze(0), persistent=False)

    def chips(self, faces: Tensor) -> Tensor:
        """(N, 3, S, S) float32 chips of (N, 3, R, R) crops."""
        from kornia.geometry.transform import warp_affine

        if faces.ndim != 4 or faces.shape[1:] != (3, self.resolution, self.resolution):
            raise ValueError(f"expected crops (N, 3, {self.resolution}, {self.resolution}), got {tuple(faces.shape)}")
        with full_precision(faces):
            return warp_affine(
                faces.float().contiguous(),
                self.matrix.expand(len(faces), 2, 3),
                dsize=(self.chip_size, self.chip_size),
                mode="bilinear",
                padding_mode="zeros",
                align_corners=True,
            )

    def forward(self, faces: Tensor) -> Tensor:
        return self.network(self.chips(faces)).float()
