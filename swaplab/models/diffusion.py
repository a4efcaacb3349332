"""The DDPM family: a noise-predicting U-Net (diffusers' ``UNet2DModel``, built from a config, no hub),
optionally conditioned on a source identity, and the samplers of ``swaplab.models.samplers``.

``DDPM.forward(x_t, t, identity)`` predicts the noise eps of ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``
(images in [-1, 1] inside, [0, 1] at ``sample``'s boundary, as every ``GenerativeModel``). With
``condition=identity`` the L2-normalised embedding of the source by the named identity network
(``identity_network``, a name in ``IDENTITY_ENCODERS``) goes through a linear layer and is added to
the U-Net's time embedding (diffusers' ``class_embed_type="identity"`` adds what it is given); a
zero vector is the "no condition" that training substitutes a ``condition_dropout`` share of the
time, so classifier-free guidance (Ho & Salimans 2021) mixes the two predictions at sampling.
With ``autoencoder.widths`` the same process runs on the codes of diffusers' ``AutoencoderKL`` (latent
diffusion, ``ldm-tiny``): ``to_diffusion`` / ``from_diffusion`` map images to what is diffused and back.

diffusers 0.42.1 is used as it is: its U-Net and its schedulers built from configs run offline on
this CPU, in fp32 and under bf16 autocast, and the samplers are independent of this network (the
sampler is an option, never a weight). Nothing here trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from swaplab.config import ConfigError, apply_overrides, config_group
from swaplab.models.factory import MODELS
from swaplab.models.generative import GenerativeModel
from swaplab.models.samplers import SAMPLERS, NoiseSchedule, Sampler, SamplerConfig, make_sampler

__all__ = ["DDPM", "DDPMConfig", "LatentAutoencoderConfig", "parse_sampler_options"]

Tensor = torch.Tensor


@dataclass
class LatentAutoencoderConfig:
    """The autoencoder of latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with
    Latent Diffusion Models"): diffusers' ``AutoencoderKL``, downsampling 2^(len(widths) - 1) times.
    No widths: the diffusion runs on pixels."""

    widths: list[int] = field(default_factory=list)
    latent_channels: int = 4


@dataclass
class DDPMConfig:
    name: str = "ddpm-tiny"
    arch: Literal["ddpm"] = "ddpm"
    channels: int = 3
    resolution: int = 32
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])  # U-Net channels per level
    attention: list[bool] = field(default_factory=lambda: [False, True, False])  # self-attention per level
    layers_per_block: int = 1
    norm_groups: int = 8
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)
    condition: Literal["none", "identity"] = "none"
    identity_network: str = "dlib-resnet"  # embeds the source (conditioning) and guides swaps
    identity_dim: int = 128
    condition_dropout: float = 0.1  # share of training steps that see the null condition (for CFG)
    autoencoder: LatentAutoencoderConfig = field(default_factory=LatentAutoencoderConfig)
    unet_keep: float = 1.0  # < 1: each residual block keeps this share of its inner channels (pruned)

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.autoencoder.widths) - 1) if self.autoencoder.widths else 1

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.attention) or not self.widths:
            raise ConfigError(
                f"model.widths {self.widths} and model.attention {self.attention} need one entry per level"
            )
        if self.resolution % (2 ** (len(self.widths) - 1) * self.downsampling):
            raise ConfigError(
                f"model.resolution {self.resolution} must be divisible by 2^{len(self.widths) - 1} "
                f"times the autoencoder's downsampling {self.downsampling}"
            )
        if any(w % self.norm_groups for w in self.autoencoder.widths):
            raise ConfigError("every model.autoencoder.widths entry must be divisible by model.norm_groups")
        if any(w % self.norm_groups for w in self.widths):
            raise ConfigError(f"every model.widths entry must be divisible by model.norm_groups={self.norm_groups}")
        if not 0 < self.unet_keep <= 1:
            raise ConfigError(f"model.unet_keep must be in (0, 1], got {self.unet_keep}")
        if not 0 <= self.condition_dropout < 1:
            raise ConfigError(f"model.condition_dropout must be in [0, 1), got {self.condition_dropout}")

    @property
    def num_classes(self) -> int:  # the zoo's data check: identities are not class labels
        return 0


MODEL_PRESETS = config_group("model")
MODEL_PRESETS.register("ddpm-tiny")(DDPMConfig)  # 32 px, about 2.6 M parameters: the CPU preset
MODEL_PRESETS.register("ddpm-64")(
    lambda: DDPMConfig(name="ddpm-64", resolution=64, widths=[32, 64, 128, 128], attention=[False, False, True, False])
)
# The GPU preset: 128 px, about 77 M parameters, attention at 16 and 8 px (it builds on a CPU; train it on a GPU).
MODEL_PRESETS.register("ddpm-128")(
    lambda: DDPMConfig(
        name="ddpm-128",
        resolution=128,
        widths=[128, 128, 256, 256, 512],
        attention=[False, False, False, True, True],
        layers_per_block=2,
        norm_groups=32,
    )  # fmt: skip
)


# Latent diffusion: a 4x autoencoder (32 px faces -> 4 x 8 x 8 codes) and a two-level U-Net over the codes.
MODEL_PRESETS.register("ldm-tiny")(
    lambda: DDPMConfig(
        name="ldm-tiny",
        widths=[64, 128],
        attention=[False, True],
        schedule=NoiseSchedule(clip=False),
        autoencoder=LatentAutoencoderConfig(widths=[32, 64, 64]),
    )  # fmt: skip
)
MODEL_PRESETS.register("ldm-64")(
    lambda: DDPMConfig(
        name="ldm-64",
        resolution=64,
        widths=[64, 128, 128],
        attention=[False, True, False],
        schedule=NoiseSchedule(clip=False),
        autoencoder=LatentAutoencoderConfig(widths=[32, 64, 64]),
    )  # fmt: skip
)


def build_autoencoder(config: DDPMConfig) -> nn.Module:
    from diffusers import AutoencoderKL

    blocks = len(config.autoencoder.widths)
    return AutoencoderKL(
        in_channels=config.channels,
        out_channels=config.channels,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=tuple(config.autoencoder.widths),
        latent_channels=config.autoencoder.latent_channels,
        norm_num_groups=config.norm_groups,
        sample_size=config.resolution,
    )


def build_unet(config: Any, channels: int, resolution: int) -> nn.Module:
    """diffusers' ``UNet2DModel`` over (channels, resolution, resolution) from ``config``'s U-Net fields."""
    from diffusers import UNet2DModel

    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in config.attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention))
    return UNet2DModel(
        sample_size=resolution,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=config.layers_per_block,
        block_out_channels=tuple(config.widths),
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=config.norm_groups,
        attention_head_dim=8,
        class_embed_type="identity" if config.condition == "identity" else None,
    )


def parse_sampler_options(current: SamplerConfig, options: dict[str, Any]) -> SamplerConfig:
    """``{"sampler": "ddim", "sampler.steps": "25"}`` applied to ``current`` (typed, checked, one-line errors)."""
    words = []
    for key, value in options.items():
        if key in ("sampler", "sampler.name"):
            if value not in SAMPLERS:
                raise ConfigError(f"unknown sampler {value!r}: one of {', '.join(SAMPLERS.names())}")
            words.append(f"name={value}")
        elif key.startswith("sampler."):
            words.append(f"{key.removeprefix('sampler.')}={value}")
        else:
            raise ConfigError(f"unknown option {key!r}: this model takes sampler=NAME and sampler.KEY=VALUE")
    return apply_overrides(current, words)


@MODELS.register("ddpm")
class DDPM(GenerativeModel):
    """eps-prediction U-Net with its noise schedule; ``sample`` runs the configured sampler."""

    config_type = DDPMConfig
    capabilities = ("sample",)

    def __init__(self, config: DDPMConfig) -> None:
        super().__init__()
        self.config = config
        self.image_shape = (config.channels, config.resolution, config.resolution)
        self.schedule = config.schedule
        self.autoencoder = build_autoencoder(config) if config.autoencoder.widths else None
        if self.autoencoder is not None:
            # 1 / std of the training codes, set once when the diffusion phase starts (0: not yet).
            self.register_buffer("latent_scale", torch.zeros(()))
        self.unet = build_unet(config, *self.diffusion_shape[:2])
        if config.unet_keep < 1:  # the pruned shapes (the weights come from a checkpoint or init_from)
            from swaplab.models.diffusion_pruning import prune_unet

            prune_unet(self.unet, config.unet_keep)
        embed_dim = config.widths[0] * 4  # UNet2DModel's time embedding width
        self.identity_projection = nn.Linear(config.identity_dim, embed_dim) if self.conditioned else None
        self.sampler_config = SamplerConfig()

    @property
    def conditioned(self) -> bool:
        return self.config.condition == "identity"

    # ------------------------------------------------------------ the space the diffusion runs in

    @property
    def diffusion_shape(self) -> tuple[int, int, int]:
        """(C, R, R) of the diffused tensors: the image's, or the autoencoder's code in latent models."""
        cfg = self.config
        if self.autoencoder is None:
            return (cfg.channels, cfg.resolution, cfg.resolution)
        side = cfg.resolution // cfg.downsampling
        return (cfg.autoencoder.latent_channels, side, side)

    def _scale(self) -> Tensor | float:
        return self.latent_scale if float(self.latent_scale) > 0 else 1.0

    def encode_latents(self, images: Tensor) -> Tensor:
        """Images in [0, 1] -> the autoencoder's posterior means, unscaled."""
        return self.autoencoder.encode(images.mul(2).sub(1)).latent_dist.mean

    def to_diffusion(self, images: Tensor) -> Tensor:
        """Images in [0, 1] -> the diffused space: pixels in [-1, 1], or codes scaled to about unit variance."""
        if self.autoencoder is None:
            return images.mul(2).sub(1)
        return self.encode_latents(images) * self._scale()

    def from_diffusion(self, x: Tensor) -> Tensor:
        """The diffused space -> images in [0, 1] (unclamped)."""
        if self.autoencoder is not None:
            x = self.autoencoder.decode(x / self._scale()).sample
        return x.add(1).div(2)

    # ------------------------------------------------------------ the network

    def condition_embedding(self, identity: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
        """What is added to the time embedding: the projected unit embedding, or zeros (the null condition)."""
        if self.identity_projection is None:
            if identity is not None:
                raise ValueError("this DDPM is unconditional (model.condition=none): it takes no identity")
            return None
        if identity is None:
            return torch.zeros(batch, self.identity_projection.out_features, device=device)
        identity = identity.reshape(-1, identity.shape[-1]).float()
        if identity.shape[-1] != self.config.identity_dim:
            raise ValueError(f"identity must be (N, {self.config.identity_dim}), got {tuple(identity.shape)}")
        if len(identity) == 1:
            identity = identity.expand(batch, -1)
        if len(identity) != batch:
            raise ValueError(f"need one identity or one per image ({batch}), got {len(identity)}")
        return self.identity_projection(nn.functional.normalize(identity.to(device), dim=-1))

    def forward(
        self, x_t: Tensor, t: Tensor | int, identity: Tensor | None = None, null: Tensor | None = None
    ) -> Tensor:
        """eps predicted for ``x_t`` (N, C, R, R) in [-1, 1] at timesteps ``t`` ((N,) or an int);
        ``null`` (N,) bool marks samples that get the null condition (training's dropout)."""
        t = torch.as_tensor(t, device=x_t.device).long().expand(len(x_t))
        condition = self.condition_embedding(identity, len(x_t), x_t.device)
        if condition is not None and null is not None:
            condition = condition * (~null).to(condition.dtype)[:, None]
        return self.unet(x_t, t, class_labels=condition).sample

    def guided_eps(self, identity: Tensor | None, scale: float = 1.0):
        """eps_fn(x, t) for the samplers: conditional, unconditional, or the classifier-free mix
        eps_u + scale (eps_c - eps_u) (scale 1: plain conditional; 0: unconditional)."""

        def eps_fn(x: Tensor, t: int) -> Tensor:
            if identity is None or scale == 1.0:
                return self(x, t, identity)
            both = self(torch.cat([x, x]), t, torch.cat([identity.expand(len(x), -1)] * 2),
                        null=torch.arange(2 * len(x), device=x.device) >= len(x))  # fmt: skip
            conditional, unconditional = both.float().chunk(2)
            return unconditional + scale * (conditional - unconditional)

        return eps_fn

    # ------------------------------------------------------------ sampling

    def configure(self, **options: Any) -> None:
        self.sampler_config = parse_sampler_options(self.sampler_config, options)

    def sampler(self) -> Sampler:
        return make_sampler(self.schedule, self.sampler_config)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        identity: Tensor | None = None,
        cfg_scale: float = 1.0,
    ) -> Tensor:
        """(n, C, R, R) images in [0, 1] by the configured sampler; conditioned models take ``identity``
        (one or n embeddings, else they draw unconditionally)."""
        if labels is not None:
            raise ValueError("a DDPM is conditioned on identities, not class labels")
        with torch.no_grad():
            x = self.noise((n, *self.diffusion_shape), generator)
            x0 = self.sampler().run(self.guided_eps(identity, cfg_scale), x, generator)
            return self.from_diffusion(x0).clamp(0, 1)
