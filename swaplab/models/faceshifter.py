"""FaceShifter: its typed configs and presets, the AEI-Net (+ optional HEAR-Net) model, its swapper.

``FaceShifter`` (``MODELS["faceshifter"]``) swaps in one pass: the target's multi-level attributes
(``config.parts.encoder``) and the source identity meet in the AAD generator
(``config.parts.generator``); with ``with_hear`` a HEAR refiner, trained afterwards with AEI-Net
frozen, restores what the swap lost (occlusions). The swapper kind ``faceshifter`` drives an
exported model and embeds each target itself for HEAR's heuristic error (``configure(hear=off)``
switches the refiner off). No training loop and no losses here (``swaplab.losses.faceshifter``,
``swaplab.train.recipes.faceshifter``).

Images are (N, 3, R, R) float RGB in [0, 1]; identities are embeddings by
``config.identity_network`` (dlib's 128-d descriptor by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from swaplab.config import ConfigError, choice_field, config_group, register_preset
from swaplab.identity.registry import IDENTITY_ENCODERS
from swaplab.models.factory import MODELS
from swaplab.models.parts import DECODERS, ENCODERS
from swaplab.models.parts.faceshifter import HearRefiner, unet_widths
from swaplab.models.simswap import DiscriminatorConfig
from swaplab.models.swapper import SWAPPERS, IdentitySwapper, SwapOutput

Tensor = torch.Tensor


@dataclass
class FaceShifterPartsConfig:
    """Registered part names; ablations replace them (``generator=adain``, ``discriminator=projected``)."""

    encoder: str = "multilevel-attributes"
    generator: str = "aad"
    discriminator: str = "multiscale"


@dataclass
class HearNetConfig:
    """HEAR-Net's U-Net sizes (``model=hearnet-tiny`` trains it on a finished AEI-Net run).

    ``resolution`` must be the AEI-Net's. ``residual``: the refiner predicts a correction of the
    swap (starts as the identity map); False is the paper's plain image output.
    """

    name: str = "hearnet-paper"
    arch: Literal["hearnet"] = "hearnet"
    resolution: int = 256
    dims: int = 32
    max_dims: int = 512
    bottom: int = 4
    norm: Literal["batch", "instance"] = "batch"
    residual: bool = True

    def __post_init__(self) -> None:
        try:
            unet_widths(self.resolution, self.dims, self.max_dims, self.bottom)
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None


@dataclass
class FaceShifterConfig:
    """AEI-Net's sizes, parts and ablation switches, and its discriminator (FaceShifter at 256 px).

    - ``dims``/``max_dims``/``bottom``: the attribute U-Net (32 doubling to 1024, down to 2x2: 8
      attribute levels at 256 px); the generator's widths mirror it.
    - ``attribute_levels``: how many attribute levels (coarsest first) the generator receives;
      0 = all. Fewer leaves the finer blocks without an attribute branch (ablation).
    - ``mask``: ``learned`` (AAD) or ``half`` (the attention mask fixed at 0.5, ablation).
    - ``parts.generator``: ``aad``, or ``adain`` (identity AdaIN only, no attribute branch).
    - ``identity_network``: the network whose embedding of the source conditions the model.
    - ``with_hear``/``hear``: the HEAR refiner (set by the HEAR recipe, not by hand).
    """

    name: str = "faceshifter-paper"
    arch: Literal["faceshifter"] = "faceshifter"
    resolution: int = 256
    dims: int = 32
    max_dims: int = 1024
    bottom: int = 2
    attribute_levels: int = 0
    identity_dim: int = 128
    identity_network: str = choice_field("dlib-resnet", IDENTITY_ENCODERS)
    norm: Literal["batch", "instance"] = "batch"
    mask: Literal["learned", "half"] = "learned"
    parts: FaceShifterPartsConfig = field(default_factory=FaceShifterPartsConfig)
    discriminator: DiscriminatorConfig = field(default_factory=lambda: DiscriminatorConfig(n_layers=3, scales=3))
    with_hear: bool = False
    hear: HearNetConfig = field(default_factory=HearNetConfig)

    def __post_init__(self) -> None:
        for key in ("resolution", "dims", "max_dims", "bottom", "identity_dim"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
        try:
            levels = len(unet_widths(self.resolution, self.dims, self.max_dims, self.bottom)) + 1
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None
        if not 0 <= self.attribute_levels <= levels:
            raise ConfigError(f"model.attribute_levels must be in 0..{levels} (0 = all), got {self.attribute_levels}")

    @property
    def levels(self) -> int:
        """Attribute levels of the full U-Net (n_down + 1)."""
        return len(unet_widths(self.resolution, self.dims, self.max_dims, self.bottom)) + 1


def _preset(name: str, **fields: object) -> None:
    register_preset("model", name, FaceShifterConfig, **fields)


def _hear_preset(name: str, **fields: Any) -> None:
    config_group("model").register(name)(lambda: HearNetConfig(name=name, **fields))


#: The paper's sizes: 256 px, U-Net 32 -> 1024 down to 2x2 (8 attribute levels), a 3-scale
#: PatchGAN. For GPUs; on this CPU it is only built.
_preset("faceshifter-paper")
#: The benchmark's middle size: 128 px (7 levels), the paper's widths capped at 512 channels
#: (uncapped, 1024-channel blocks make 205 M parameters: too heavy to time on this CPU).
_preset("faceshifter-128", resolution=128, max_dims=512, hear=dict(resolution=128))
#: For CPU runs and the ablation sweep: 64 px, U-Net 8 -> 64 (6 levels), a small 2-scale D.
_preset(
    "faceshifter-tiny",
    resolution=64,
    dims=8,
    max_dims=64,
    discriminator=dict(dims=16, n_layers=3, scales=2),
    hear=dict(resolution=64, dims=8, max_dims=64),
)
_hear_preset("hearnet-paper")
_hear_preset("hearnet-128", resolution=128)
_hear_preset("hearnet-tiny", resolution=64, dims=8, max_dims=64)


@MODELS.register("faceshifter")
class FaceShifter(nn.Module):
    """``forward(target, source_identity, target_identity=None) -> swap`` (N, 3, R, R) in [0, 1].

    AEI-Net: ``generator(source_identity, encoder(target))``. With a HEAR refiner and
    ``target_identity`` (the target's own embedding by the same network) the swap is refined from
    the heuristic error ``target - AEI(target, target_identity)``; without ``target_identity`` the
    AEI swap is returned (HEAR off).
    """

    config_type = FaceShifterConfig

    def __init__(self, config: FaceShifterConfig) -> None:
        super().__init__()
        self.config = config
        self.resolution = config.resolution
        self.identity_dim = config.identity_dim
        self.encoder = ENCODERS.create(
            config.parts.encoder,
            in_channels=3,
            resolution=config.resolution,
            dims=config.dims,
            max_dims=config.max_dims,
            bottom=config.bottom,
            levels=config.attribute_levels,
            norm=config.norm,
        )
        self.generator = DECODERS.create(
            config.parts.generator,
            identity_dim=config.identity_dim,
            level_channels=self.encoder.level_channels,
            level_sizes=[config.bottom * 2**k for k in range(config.levels)],
            dims=config.dims,
            max_dims=config.max_dims,
            norm=config.norm,
            mask=config.mask,
        )
        self.hear: HearRefiner | None = None
        if config.with_hear:
            h = config.hear
            if h.resolution != config.resolution:
                raise ConfigError(f"HEAR-Net at {h.resolution} px cannot refine a {config.resolution} px AEI-Net")
            self.hear = HearRefiner(
                resolution=h.resolution,
                dims=h.dims,
                max_dims=h.max_dims,
                bottom=h.bottom,
                norm=h.norm,
                residual=h.residual,
            )
        self.aei_frozen = False

    def named_parts(self) -> dict[str, nn.Module]:
        return dict(self.named_children())

    def attributes(self, images: Tensor) -> list[Tensor]:
        """The multi-level attributes ``z_att^1..k`` of (N, 3, R, R) images, coarsest first."""
        size = self.resolution
        if images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise ValueError(f"FaceShifter expects images of shape (N, 3, {size}, {size}), got {tuple(images.shape)}")
        return self.encoder(images)

    def aei(self, target: Tensor, identity: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(AEI-Net's swap, the target's attributes): the attributes are returned for the attribute loss."""
        z_att = self.attributes(target)
        return self.generator(identity, z_att), z_att

    def forward(self, target: Tensor, source_identity: Tensor, target_identity: Tensor | None = None) -> Tensor:
        z_att = self.attributes(target)
        swap = self.generator(source_identity, z_att)
        if self.hear is None or target_identity is None:
            return swap
        # HEAR's heuristic error: what AEI-Net cannot reconstruct of the target (occlusions, mostly).
        error = target - self.generator(target_identity, z_att)
        return self.hear(swap, error)

    def freeze_aei(self) -> None:
        """Freeze AEI-Net (encoder and generator) for HEAR training: no gradients, batch norm in eval."""
        self.aei_frozen = True
        self.encoder.requires_grad_(False)
        self.generator.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> FaceShifter:
        super().train(mode)
        if self.aei_frozen:
            self.encoder.eval()
            self.generator.eval()
        return self


def create_discriminator(config: FaceShifterConfig) -> nn.Module:
    """The discriminator ``config.parts.discriminator`` names, sized by ``config.discriminator``."""
    return config.discriminator.build(config.parts.discriminator, config.resolution)


_SWITCH = {"on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False, "no": False}


@SWAPPERS.register("faceshifter")
class FaceShifterSwapper(IdentitySwapper):
    """An exported FaceShifter: an identity-conditioned swapper whose HEAR refiner, when the model has
    one, is on by default (``options={hear: off}`` or ``configure(hear="off")`` switches it off).

    HEAR needs each target's own embedding: the swapper computes it from the aligned crop with
    ``config.identity_network`` through the template's fixed chip warp (``TemplateChipIdentity``),
    as HEAR's training did.
    """

    def __init__(self, model: nn.Module, card: dict[str, Any]) -> None:
        super().__init__(model, card)
        self.use_hear = getattr(model, "hear", None) is not None
        self._self_identity: list[nn.Module] = []  # built on first use, kept out of the module tree

    def configure(self, **options: Any) -> None:
        unknown = sorted(set(options) - {"hear"})
        if unknown:
            raise ValueError(f"a FaceShifter model takes the option hear (on/off), got {', '.join(unknown)}")
        if "hear" in options:
            value = _SWITCH.get(str(options["hear"]).strip().lower())
            if value is None:
                raise ValueError(f"hear must be on or off, got {options['hear']!r}")
            if value and getattr(self.model, "hear", None) is None:
                raise ValueError("this FaceShifter model has no HEAR-Net: train one with model=hearnet-tiny aei=RUN")
            self.use_hear = value

    def target_identity(self, targets: Tensor) -> Tensor:
        """Embeddings (N, D) of the aligned target crops by the network the model conditions on."""
        from swaplab.models.simswap import TemplateChipIdentity

        if not self._self_identity:
            network = self.conditions_on or "dlib-resnet"
            self._self_identity.append(TemplateChipIdentity(self.template, self.resolution, network).eval())
        encoder = self._self_identity[0].to(targets.device)
        with torch.no_grad():
            return encoder(targets)

    def swap(
        self, targets: Tensor, source: Tensor | None = None, generator: torch.Generator | None = None
    ) -> SwapOutput:
        source = self._per_target(targets, source)
        own = self.target_identity(targets).to(targets.dtype) if self.use_hear else None
        rgb = self.model(targets, source, own)
        return SwapOutput(rgb, torch.ones_like(rgb[:, :1]))
