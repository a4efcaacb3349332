"""The zoo's variational autoencoder recipe (``model=vae-digits``, ``vae-mnist``, ``vae-faces``).

Loss, per image averaged over the batch (the negative evidence lower bound when ``beta`` = 1):
``L = E_x [ sum_i l(x_i, x_hat_i) + beta * KL(q(z|x) || N(0, I)) ]`` with ``x_hat`` the decoding of
one draw z = mu + sigma * eps, ``l`` binary cross-entropy (``likelihood=bce``) or squared error
(``mse``), and the KL term in closed form, ``KL = 1/2 sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1)``.
``beta`` > 1 is the beta-VAE's weighting. Validation adds the held-out loss to the shared numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from swaplab.config import ConfigError, group_field
from swaplab.losses.registry import LOSSES
from swaplab.models.zoo.vae import VAE, VAEConfig
from swaplab.train.config import TrainerConfig
from swaplab.train.data import stream_seed
from swaplab.train.image_data import ImageDataConfig
from swaplab.train.recipe import RECIPES, StepResult
from swaplab.train.recipes.generative import GenerativeRecipe
from swaplab.train.recipes.zoo_autoencoder import likelihood_loss

Tensor = torch.Tensor


@dataclass
class VAETrainConfig:
    model: VAEConfig = group_field(VAEConfig, "model")
    data: ImageDataConfig = group_field(ImageDataConfig, "data")
    likelihood: Literal["bce", "mse"] = "bce"  # the reconstruction term: Bernoulli or (unit) Gaussian
    beta: float = 1.0  # weight of the KL term (1: the ELBO)
    trainer: TrainerConfig = group_field("zoo", "trainer")
    run_dir: str = "runs/vae"

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta}")


@RECIPES.register("vae")
class VAERecipe(GenerativeRecipe):
    """Trains a ``VAE`` on its images by the (beta-weighted) evidence lower bound."""

    name = "vae"
    config_type = VAETrainConfig

    def __init__(self, cfg: VAETrainConfig, session: Any) -> None:
        super().__init__(cfg, session)
        self.kl = LOSSES.create("gaussian_kl")

    def build(self) -> nn.Module:
        return VAE(self.cfg.model)

    def loss_terms(self, images: Tensor, eps: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(total, likelihood, KL), each averaged over the batch; ``eps`` fixes the draws (held-out numbers)."""
        with self.session.autocast():
            recon, mean, log_var = self.model(images, eps)
        likelihood = likelihood_loss(recon, images, self.cfg.likelihood)
        kl = self.kl(mean, log_var)
        return likelihood + self.cfg.beta * kl, likelihood, kl

    def train_step(self, step: int) -> StepResult:
        images, _ = self.batch(step)
        loss, likelihood, kl = self.loss_terms(images)
        loss.backward()
        applied, norm = self.apply_gradients("model", loss)
        values = {"loss": loss, "loss/likelihood": likelihood, "loss/kl": kl}
        return StepResult(applied, {**{k: float(v.detach()) for k, v in values.items()}, "grad_norm": norm})

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        values = super().validate(step)
        held, _ = self.data.heldout()
        # One fixed draw of eps per held-out image, so the number moves only with the model.
        generator = torch.Generator().manual_seed(stream_seed("vae-validation", self.session.trainer.seed))
        eps = torch.randn(len(held), self.cfg.model.latent, generator=generator).to(self.session.device)
        loss, likelihood, kl = self.loss_terms(held.to(self.session.device), eps)
        values.update({"val/loss": float(loss), "val/likelihood": float(likelihood), "val/kl": float(kl)})
        return values
