"""The zoo's GAN recipe: MLP GANs, conditional GANs and DCGANs on images, and the 8-Gaussian mode-collapse check.

Models ``gan-digits``, ``gan-mnist``, ``cgan-digits``, ``cgan-faces32``, ``dcgan-digits``,
``dcgan-mnist``, ``dcgan-faces32`` train on ``data``; ``gan-mixture8`` (``model.space=points``)
trains on the toy mixture of ``mixture`` and is measured by its mode coverage. Each step updates
the discriminator ``loss.d_steps`` times, then the generator once through it (D frozen meanwhile),
every loss in fp32, each player's gradients averaged across processes under ``torchrun``. With
D's logits d = D(x) (conditional: D(x, y), with fakes made for the same labels) and the criterion
``loss.criterion`` (its per-logit terms in ``swaplab.losses.adversarial.CRITERIA``):

- ``minimax``:       L_D = E[-log s(D(x))] + E[-log(1 - s(D(G(z))))],  L_G = E[log(1 - s(D(G(z))))]
- ``nonsaturating``: L_D as minimax,                                     L_G = E[-log s(D(G(z)))]
- ``wasserstein``:   L_D = E[D(G(z))] - E[D(x)] + lambda E[(||grad_x' D(x')||_2 - 1)^2],  L_G = -E[D(G(z))]
  (s the logistic sigmoid; x' on the segments between real and fake images, the penalty
  ``LOSSES["gradient_penalty"]`` weighted by ``loss.gradient_penalty``: WGAN-GP, Gulrajani et al.
  2017, "Improved Training of Wasserstein GANs"; ``hinge`` and ``lsgan`` are there too).
  ``model.spectral_norm`` is the other way to a Lipschitz critic.

Validation: ``val/fd_pixels`` (``GenerativeRecipe``), ``val/class_accuracy`` and ``val/class_diversity``
for conditional models (``conditional_scores``), and for points ``val/modes_covered``,
``val/mode_coverage`` and ``val/high_quality`` (``mode_coverage``), drawn in the previews.

``loss.unroll`` = k > 0 is Metz et al. 2017, "Unrolled Generative Adversarial Networks", simplified
to first order: after D's update, D takes k more steps (its own optimiser, fresh batches), G's
gradient is taken against that looked-ahead D_k as a constant (the term through dD_k/dG, which
the paper backpropagates through the unrolled updates, is dropped), and D's weights, buffers and
optimiser state are then restored to the state after its one real update.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from swaplab.config import ConfigError, config_group, group_field
from swaplab.losses import LOSSES
from swaplab.models.zoo.gan import GAN, GANConfig
from swaplab.train.config import TrainerConfig
from swaplab.train.data import stream_seed
from swaplab.train.image_data import ImageDataConfig
from swaplab.train.recipe import RECIPES, Recipe, StepResult
from swaplab.train.recipes.generative import PREVIEW_SEED, GenerativeRecipe

Tensor = torch.Tensor

Criterion = Literal["minimax", "nonsaturating", "hinge", "lsgan", "wasserstein"]


@dataclass
class GANLossConfig:
    """The game: the adversarial criterion, the critic's penalty and the players' step counts."""

    name: str = "gan-nonsaturating"
    criterion: Criterion = "nonsaturating"
    gradient_penalty: float = 0.0  # lambda of WGAN-GP's penalty (10 in its paper); 0 = off
    d_steps: int = 1  # discriminator (critic) updates per generator update (WGAN-GP: 5)
    unroll: int = 0  # k: D steps the generator looks ahead through, undone afterwards (0 = off)

    def __post_init__(self) -> None:
        if self.d_steps < 1 or self.unroll < 0 or self.gradient_penalty < 0:
            raise ConfigError("loss.d_steps must be >= 1, loss.unroll and loss.gradient_penalty >= 0")


_losses = config_group("loss")
_losses.register("gan-nonsaturating")(GANLossConfig)
_losses.register("gan-minimax")(lambda: GANLossConfig(name="gan-minimax", criterion="minimax"))
_losses.register("wgan-gp")(
    lambda: GANLossConfig(name="wgan-gp", criterion="wasserstein", gradient_penalty=10.0, d_steps=5)
)
_losses.register("gan-unrolled")(lambda: GANLossConfig(name="gan-unrolled", unroll=5))


# ---------------------------------------------------------------- the toy mixture


@dataclass
class MixtureConfig:
    """The data of ``model.space=points``: ``modes`` isotropic Gaussians of std ``std`` evenly on a
    circle of ``radius`` around the origin (the unrolled-GAN paper's ring: 8 modes, radius 2, std 0.02)."""

    modes: int = 8
    radius: float = 2.0
    std: float = 0.02
    heldout: int = 2500  # points drawn once for validation; as many samples are scored
    seed: int = 0

    def __post_init__(self) -> None:
        if self.modes < 1 or self.radius <= 0 or self.std <= 0 or self.heldout < 8:
            raise ConfigError("mixture.modes >= 1, mixture.radius and mixture.std > 0, mixture.heldout >= 8")


class MixtureData:
    """Points (N, 2, 1, 1) of a ``MixtureConfig`` with their mode as label; a step's draw is a pure
    function of (seed, step, rank), like ``ImageData``'s batches."""

    def __init__(self, cfg: MixtureConfig) -> None:
        self.cfg = cfg
        angles = torch.arange(cfg.modes, dtype=torch.float64) * (2 * math.pi / cfg.modes)
        self.centres = (cfg.radius * torch.stack([angles.cos(), angles.sin()], 1)).float()
        self.class_names = [f"mode {k}" for k in range(cfg.modes)]
        self._heldout = self.draw(cfg.heldout, stream_seed("mixture-heldout", cfg.seed))

    @property
    def num_classes(self) -> int:
        return self.cfg.modes

    @property
    def shape(self) -> tuple[int, int, int]:
        return (2, 1, 1)

    def draw(self, count: int, seed: int) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(seed)
        labels = torch.randint(self.cfg.modes, (count,), generator=generator)
        points = self.centres[labels] + self.cfg.std * torch.randn(count, 2, generator=generator)
        return points.view(count, 2, 1, 1), labels

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> tuple[Tensor, Tensor]:
        return self.draw(batch_size, stream_seed("mixture", self.cfg.seed, step, rank))

    def heldout(self, count: int = 0) -> tuple[Tensor, Tensor]:
        points, labels = self._heldout
        return points[: count or None], labels[: count or None]

    def content_hash(self) -> dict[str, object]:
        return {"source": "mixture", **{k: getattr(self.cfg, k) for k in ("modes", "radius", "std", "seed")}}


def mode_coverage(points: Tensor, centres: Tensor, std: float, sigmas: float = 3.0) -> dict[str, float]:
    """How well ``points`` (N, 2, ...) cover the modes at ``centres`` (K, 2) of std ``std``.

    A sample is high quality when it lies within ``sigmas`` * ``std`` of its nearest centre; a mode
    is covered when at least one high-quality sample lies there (PacGAN's criterion). Returns
    ``modes_covered`` (a count), ``mode_coverage`` (its share of K) and ``high_quality`` (the share
    of samples). A generator that collapses onto one mode scores 1/K coverage however good its samples.
    """
    flat = points.reshape(len(points), -1).float().cpu()
    distance, nearest = torch.cdist(flat, centres.float().cpu()).min(1)
    good = distance <= sigmas * std
    covered = int((torch.bincount(nearest[good], minlength=len(centres)) > 0).sum())
    return {
        "modes_covered": float(covered),
        "mode_coverage": covered / len(centres),
        "high_quality": float(good.float().mean()),
    }


def scatter_picture(real: Tensor, fake: Tensor, data: MixtureData, title: str, size: int = 320) -> np.ndarray:
    """An RGB uint8 picture: held-out points (grey), the 3-sigma discs of the modes (green), samples (orange)."""
    import cv2

    canvas = np.full((size, size, 3), 24, np.uint8)
    reach = 1.4 * data.cfg.radius

    def pixel(points: Tensor) -> np.ndarray:
        xy = points.reshape(len(points), -1)[:, :2].float().cpu().numpy()
        return np.round((xy / reach + 1.0) * 0.5 * (size - 1)).astype(int)

    for x, y in pixel(data.centres):
        cv2.circle(
            canvas, (int(x), size - 1 - int(y)), max(2, round(3 * data.cfg.std / reach * size / 2)), (60, 160, 60)
        )
    for points, colour in ((real, (128, 128, 128)), (fake, (255, 150, 40))):
        for x, y in pixel(points):
            if 0 <= x < size and 0 <= y < size:
                canvas[size - 1 - y, x] = colour
    cv2.putText(canvas, title, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (230, 230, 230), 1, cv2.LINE_AA)
    return canvas


# ---------------------------------------------------------------- the recipe


@dataclass
class GANTrainConfig:
    model: GANConfig = group_field(GANConfig, "model")
    data: ImageDataConfig = group_field(ImageDataConfig, "data")  # model.space=images
    mixture: MixtureConfig = field(default_factory=MixtureConfig)  # model.space=points
    loss: GANLossConfig = group_field(GANLossConfig, "loss")
    trainer: TrainerConfig = group_field("zoo", "trainer")
    run_dir: str = "runs/gan"

    def __post_init__(self) -> None:
        model, loss = self.model, self.loss
        if loss.criterion == "wasserstein" and not (loss.gradient_penalty or model.spectral_norm):
            raise ConfigError(
                "loss.criterion=wasserstein needs a Lipschitz critic: loss.gradient_penalty > 0 (loss=wgan-gp) "
                "or model.spectral_norm=true"
            )
        if loss.gradient_penalty and model.network == "dcgan" and model.d_batchnorm:
            raise ConfigError(
                "a gradient penalty is per sample, and batch norm in D mixes the samples: set model.d_batchnorm=false"
            )
        if model.space == "points" and model.channels != 2:
            raise ConfigError("model.space=points draws the 2-D mixture: model.channels must be 2")
        if model.space == "points" and model.num_classes and model.num_classes < self.mixture.modes:
            raise ConfigError(f"model.num_classes={model.num_classes}: the mixture has {self.mixture.modes} modes")
        if self.trainer.accumulate != 1:
            raise ConfigError("trainer.accumulate must be 1 for GAN training (use a larger batch instead)")


@RECIPES.register("gan")
class GANRecipe(GenerativeRecipe):
    """Trains a ``GAN``'s discriminator and generator in turn (see the module docstring)."""

    name = "gan"
    config_type = GANTrainConfig

    def __init__(self, cfg: GANTrainConfig, session: Any) -> None:
        self.points = cfg.model.space == "points"
        if self.points:
            # No images to load: the mixture stands in for ImageData (same batch and heldout calls).
            Recipe.__init__(self, cfg, session)
            self.data = MixtureData(cfg.mixture)  # type: ignore[assignment]
        else:
            super().__init__(cfg, session)
        self.criterion = LOSSES.create(cfg.loss.criterion)
        self.penalty = LOSSES.create("gradient_penalty", "interpolate") if cfg.loss.gradient_penalty else None
        self._class_statistics_cache: tuple[np.ndarray, np.ndarray] | None = None

    def build(self) -> nn.Module:
        return GAN(self.cfg.model)

    def param_groups(self, module: nn.Module) -> dict[str, list[dict[str, Any]]]:
        return {
            "generator": [{"params": list(module.generator.parameters())}],
            "discriminator": [{"params": list(module.discriminator.parameters())}],
        }

    @property
    def model(self) -> GAN:
        return self.module  # type: ignore[return-value]

    def autocast(self) -> Any:
        """The run's autocast for images; none for points, which bf16 would round to within 2^-7 of their
        size (0.016 on the ring of radius 2, a quarter of a mode's 3-sd disc)."""
        return contextlib.nullcontext() if self.points else self.session.autocast()

    # ------------------------------------------------------------ one step

    def discriminator_step(self, real: Tensor, labels: Tensor) -> tuple[bool, dict[str, float]]:
        """One update of D on ``real`` and as many fresh fakes for the same labels."""
        model, autocast = self.model, self.autocast
        labels = labels if model.num_classes else None
        with torch.no_grad(), autocast():
            fake = model.generate(model.latents(len(real)), labels).float()
        with autocast():
            real_term, fake_term = self.criterion.discriminator_terms(
                model.discriminate(real, labels), model.discriminate(fake, labels)
            )
            parts = {"real": real_term, "fake": fake_term}
            if self.penalty is not None:
                penalty = self.penalty(lambda x: model.discriminate(x, labels), real, fake)
                parts["gradient_penalty"] = self.cfg.loss.gradient_penalty * penalty.float()
        total = torch.stack(list(parts.values())).sum()
        total.backward()
        applied, norm = self.apply_gradients("discriminator", total)
        values = {"d_loss": float(total.detach()), "d_grad_norm": norm}
        values.update({f"d_loss/{k}": float(v.detach()) for k, v in parts.items()})
        return applied, values

    def generator_step(self, count: int, labels: Tensor) -> tuple[bool, dict[str, float]]:
        """One update of G through the current D, whose weights are frozen meanwhile."""
        model = self.model
        labels = labels if model.num_classes else None
        model.discriminator.requires_grad_(False)
        try:
            with self.autocast():
                logits = model.discriminate(model.generate(model.latents(count), labels), labels)
                loss = self.criterion.generator_loss(logits)
            loss.backward()
        finally:
            model.discriminator.requires_grad_(True)
        applied, norm = self.apply_gradients("generator", loss)
        return applied, {"loss": float(loss.detach()), "grad_norm": norm}

    def _snapshot(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        weights = {k: v.detach().clone() for k, v in self.model.discriminator.state_dict().items()}
        return weights, copy.deepcopy(self.optimizers["discriminator"].state_dict())

    def _restore(self, snapshot: tuple[dict[str, Tensor], dict[str, Any]]) -> None:
        weights, optimizer_state = snapshot
        self.model.discriminator.load_state_dict(weights)
        self.optimizers["discriminator"].load_state_dict(optimizer_state)

    def train_step(self, step: int) -> StepResult:
        """``loss.d_steps`` D updates, ``loss.unroll`` look-ahead D updates (undone), one G update.
        Each D update draws its own batch: draw k of step s is the data's batch number s * draws + k."""
        loss_cfg = self.cfg.loss
        draws = loss_cfg.d_steps + loss_cfg.unroll
        applied, values = True, {}
        for k in range(loss_cfg.d_steps):
            real, labels = self.batch(step * draws + k)
            ok, values = self.discriminator_step(real, labels)
            applied = applied and ok
        snapshot = self._snapshot() if loss_cfg.unroll else None
        try:
            for k in range(loss_cfg.d_steps, draws):
                self.discriminator_step(*self.batch(step * draws + k))
            ok, g_values = self.generator_step(len(real), labels)
        finally:
            if snapshot is not None:
                self._restore(snapshot)
        return StepResult(applied and ok, {**values, **g_values})

    # ------------------------------------------------------------ records

    def _points_samples(self) -> tuple[Tensor, Tensor]:
        real, labels = self.data.heldout()
        generator = torch.Generator().manual_seed(PREVIEW_SEED + 1)
        fake = self.model.sample(len(real), generator, labels.to(self.session.device)).float().cpu()
        return real, fake

    def _class_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class of the training images (fixed for a run): the mean pixel-PCA features (classes, 32)
        and the spread, the per-pixel standard deviation averaged over pixels (classes,)."""
        if self._class_statistics_cache is None:
            images = self.data.images.float().div(255.0)
            features, labels = self._pixel_features(images), self.data.labels.numpy()
            means = np.zeros((self.model.num_classes, features.shape[1]))
            spreads = np.zeros(self.model.num_classes)
            for label in np.unique(labels):
                means[label] = features[labels == label].mean(0)
                spreads[label] = float(images[torch.from_numpy(labels == label)].flatten(1).std(0).mean())
            self._class_statistics_cache = (means, spreads)
        return self._class_statistics_cache

    def conditional_scores(self, count: int = 512) -> dict[str, float]:
        """How the label steers G, for ``count`` samples spread evenly over the data's classes:

        - ``class_accuracy``: the share whose nearest class mean (pixel PCA features of the training
          images) is their label's, the crudest classifier;
        - ``class_diversity``: the samples' spread within each label over the training images' spread
          within that class (0: each label gives one image, whatever z; about 1: as varied as the data).
        """
        labels = torch.arange(count) % self.data.num_classes
        generator = torch.Generator().manual_seed(PREVIEW_SEED + 2)
        with self.session.autocast():
            samples = self.model.sample(count, generator, labels.to(self.session.device)).float().cpu().clamp(0, 1)
        means, spreads = self._class_statistics()
        distances = ((self._pixel_features(samples)[:, None, :] - means[None]) ** 2).sum(-1)
        present = np.isin(np.arange(len(means)), self.data.labels.numpy())
        distances[:, ~present] = np.inf  # classes without training images are never the answer
        accuracy = float((distances.argmin(1) == labels.numpy()).mean())
        classes = [k for k in range(self.data.num_classes) if present[k] and spreads[k] > 0]
        sample_spread = [float(samples[labels == k].flatten(1).std(0).mean()) for k in classes]
        diversity = float(np.mean(sample_spread) / np.mean(spreads[classes]))
        return {"class_accuracy": accuracy, "class_diversity": diversity}

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        if not self.points:
            values = super().validate(step)
            if self.model.num_classes:
                values.update({f"val/{k}": v for k, v in self.conditional_scores().items()})
            return values
        _, fake = self._points_samples()
        scores = mode_coverage(fake, self.data.centres, self.cfg.mixture.std)
        return {f"val/{k}": v for k, v in scores.items()}

    @torch.no_grad()
    def preview(self, step: int) -> Path | None:
        if not self.points:
            return super().preview(step)
        from swaplab.train.preview import save_preview

        real, fake = self._points_samples()
        scores = mode_coverage(fake, self.data.centres, self.cfg.mixture.std)
        title = (
            f"step {step}: {scores['modes_covered']:.0f}/{len(self.data.centres)} modes, "
            f"{100 * scores['high_quality']:.0f}% within 3 sd"
        )
        picture = scatter_picture(real, fake, self.data, title)
        return save_preview(picture, self.session.previews, step, model_id=f"swaplab-{self.name}-training")

    @classmethod
    def export(cls, cfg: GANTrainConfig, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]) -> dict:
        fields = super().export(cfg, tensors, out_dir, state)
        if cfg.model.space == "points":
            fields["generative"]["data"] = "mixture"
            fields["conventions"] = "samples (N, 2, 1, 1) float: points of the plane, not pixels"
        return fields
