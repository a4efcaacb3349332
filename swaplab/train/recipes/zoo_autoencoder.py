"""The zoo's plain autoencoder recipe (``model=ae-digits``, ``ae-linear-digits``, ``ae-faces``).

Loss: the reconstruction likelihood of the images, ``mse`` (mean squared error) or ``bce``
(binary cross-entropy, which needs the sigmoid output), summed over pixels and averaged over the
batch: ``L = E_x [ sum_i l(x_i, x_hat_i) ]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from swaplab.config import ConfigError, group_field
from swaplab.models.zoo.autoencoder import Autoencoder, AutoencoderConfig
from swaplab.train.config import TrainerConfig
from swaplab.train.image_data import ImageDataConfig
from swaplab.train.recipe import RECIPES, StepResult
from swaplab.train.recipes.generative import GenerativeRecipe

Tensor = torch.Tensor


def likelihood_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """Per-image summed reconstruction loss, averaged over the batch (fp32)."""
    pred, target = pred.float(), target.float()
    if kind == "bce":
        per_pixel = F.binary_cross_entropy(pred.clamp(1e-6, 1 - 1e-6), target, reduction="none")
    else:
        per_pixel = (pred - target) ** 2
    return per_pixel.flatten(1).sum(1).mean()


@dataclass
class AutoencoderTrainConfig:
    model: AutoencoderConfig = group_field(AutoencoderConfig, "model")
    data: ImageDataConfig = group_field(ImageDataConfig, "data")
    loss: Literal["mse", "bce"] = "mse"
    trainer: TrainerConfig = group_field("zoo", "trainer")
    run_dir: str = "runs/autoencoder"

    def __post_init__(self) -> None:
        if self.loss == "bce" and self.model.output != "sigmoid":
            raise ConfigError("loss=bce needs model.output=sigmoid (a probability per pixel)")


@RECIPES.register("autoencoder")
class AutoencoderRecipe(GenerativeRecipe):
    """Trains an ``Autoencoder`` to reconstruct its images."""

    name = "autoencoder"
    config_type = AutoencoderTrainConfig

    def build(self) -> nn.Module:
        model = Autoencoder(self.cfg.model)
        if self.cfg.model.kind == "linear" and self.cfg.model.linear_bias:
            # The decoder's bias starts at the data mean, PCA's offset: otherwise early steps spend a
            # code direction on the mean, and the last principal direction is found far later.
            mean = self.data.images.float().div(255.0).mean(0).flatten()
            with torch.no_grad():
                model.decoder[0].bias.copy_(mean)
        return model

    def train_step(self, step: int) -> StepResult:
        images, _ = self.batch(step)
        with self.session.autocast():
            recon = self.model.reconstruct(images)
        loss = likelihood_loss(recon, images, self.cfg.loss)
        loss.backward()
        applied, norm = self.apply_gradients("model", loss)
        return StepResult(applied, {"loss": float(loss.detach()), "grad_norm": norm})
