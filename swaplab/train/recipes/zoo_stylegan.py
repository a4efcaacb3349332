"""The zoo's StyleGAN recipe (``model=stylegan-digits``, ``stylegan-light-digits``, ``stylegan-faces``,
``stylegan-light-faces``).

Loss (StyleGAN2's): the non-saturating GAN loss with a lazy R1 penalty on the reals,
``L_D = E_z[softplus(D(G(z)))] + E_x[softplus(-D(x))] + (gamma / 2) E_x[||grad_x D(x)||^2]`` (the R1 term every
``r1_every`` steps, weighted by ``r1_every``) and ``L_G = E_z[softplus(-D(G(z)))]``. Each step updates D on the
detached samples and then G through the updated D, one rendering serving both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from swaplab.config import ConfigError, group_field
from swaplab.losses.registry import LOSSES
from swaplab.models.generative import GenerativeModel
from swaplab.models.parts import DISCRIMINATORS
from swaplab.models.zoo.stylegan import StyleGANConfig, StyleGANGenerator
from swaplab.train.config import TrainerConfig, register_trainer
from swaplab.train.image_data import ImageDataConfig
from swaplab.train.recipe import RECIPES, StepResult
from swaplab.train.recipes.generative import TwoPlayerRecipe

Tensor = torch.Tensor

#: StyleGAN2's optimiser: Adam, lr 2e-3, betas (0, 0.99), on the zoo's few-CPU-minutes budget.
register_trainer("zoo-stylegan", like="zoo", lr=2e-3, betas=(0.0, 0.99))


@dataclass
class StyleGANTrainConfig:
    model: StyleGANConfig = group_field(StyleGANConfig, "model")
    data: ImageDataConfig = group_field(ImageDataConfig, "data")
    r1_gamma: float = 1.0  # R1 weight gamma (the penalty is gamma / 2 * ||grad||^2); 0 = off
    r1_every: int = 4  # lazy regularisation: R1 on every r1_every-th step, weighted by r1_every
    trainer: TrainerConfig = group_field("zoo-stylegan", "trainer")
    run_dir: str = "runs/stylegan"

    def __post_init__(self) -> None:
        if self.r1_gamma < 0 or self.r1_every < 1:
            raise ConfigError("r1_gamma must be >= 0 and r1_every >= 1")


@RECIPES.register("stylegan")
class StyleGANRecipe(TwoPlayerRecipe):
    """Trains a ``StyleGANGenerator`` against the ``residual`` discriminator (see the module docstring)."""

    name = "stylegan"
    config_type = StyleGANTrainConfig

    def __init__(self, cfg: StyleGANTrainConfig, session: Any) -> None:
        super().__init__(cfg, session)
        self.adversarial = LOSSES.create("nonsaturating")
        self.r1 = LOSSES.create("gradient_penalty", "r1")

    def build_players(self) -> tuple[GenerativeModel, nn.Module]:
        model = self.cfg.model
        generator = StyleGANGenerator(model)  # first: the seeded initialisation draws G's weights, then D's
        discriminator = DISCRIMINATORS.create(
            "residual",
            in_channels=model.channels,
            resolution=model.resolution,
            dims=model.d_width,
            min_dims=model.d_min_width,
            stddev_group=model.d_stddev_group,
        )
        return generator, discriminator

    def train_step(self, step: int) -> StepResult:
        cfg, session = self.cfg, self.session
        real, _ = self.batch(step)
        draws = self.step_generator("stylegan-latents", step)
        z = torch.randn(len(real), cfg.model.latent, generator=draws).to(session.device)
        with session.autocast():
            fake = self.model(z, draws, cfg.model.mixing_prob)

        # 1. D on the reals and the detached samples, R1 on the reals every r1_every steps
        with session.autocast():
            real_term, fake_term = self.adversarial.discriminator_terms(
                self.discriminator(real), self.discriminator(fake.detach())
            )
            d_parts = {"real": real_term, "fake": fake_term}
            if cfg.r1_gamma and step % cfg.r1_every == 0:
                d_parts["r1"] = 0.5 * cfg.r1_gamma * cfg.r1_every * self.r1(self.discriminator, real)
        d_loss = torch.stack(list(d_parts.values())).sum()
        d_ok, d_norm = self.update("discriminator", d_loss)

        # 2. G through the D just updated
        with self.frozen_discriminator():
            with session.autocast():
                g_loss = self.adversarial.generator_loss(self.discriminator(fake))
            g_ok, g_norm = self.update("generator", g_loss)

        values = {"loss": float(g_loss.detach()), "d_loss": float(d_loss.detach()), "grad_norm": g_norm}
        values.update({f"d_loss/{k}": float(v.detach()) for k, v in d_parts.items()})
        values["d_grad_norm"] = d_norm
        return StepResult(d_ok and g_ok, values)
