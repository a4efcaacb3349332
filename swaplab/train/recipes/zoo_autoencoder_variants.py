"""The recipes of the autoencoder family beyond the plain one: ``sparse-coding``, ``sparse-autoencoder``,
``denoising-autoencoder``, ``contractive-autoencoder`` and ``stacked-autoencoder``.

Each step sums the terms of its recipe's ``objective`` (logged as ``loss/<term>``) and takes one
optimiser step; the regularisers' weights and schedules come from the model config, so a preset
(``model=sparse-ae-digits``) names the whole method. Random draws (corruption, noise) come from
per-step seeds, so a resumed run draws what an uninterrupted one would. Reconstruction terms are
per-image sums of the likelihood (``mse`` or ``bce``) averaged over the batch, as in
``zoo_autoencoder``; every loss is computed in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from swaplab.config import ConfigError, group_field
from swaplab.losses import LOSSES
from swaplab.models.factory import create_model
from swaplab.models.zoo.autoencoder_variants import (
    ContractiveAutoencoderConfig,
    DenoisingAutoencoderConfig,
    DenseAutoencoder,
    SparseAutoencoderConfig,
    SparseCoding,
    SparseCodingConfig,
    StackedAutoencoderConfig,
    corrupt,
)
from swaplab.train.config import TrainerConfig
from swaplab.train.data import stream_seed
from swaplab.train.image_data import ImageDataConfig
from swaplab.train.recipe import RECIPES, StepResult
from swaplab.train.recipes.generative import PREVIEW_ROWS, PREVIEW_SEED, GenerativeRecipe
from swaplab.train.recipes.zoo_autoencoder import likelihood_loss

Tensor = torch.Tensor

#: A code value this small (against unit-norm atoms and pixels in [0, 1]) changes no pixel by more than 1 %.
SMALL_CODE = 0.01


# ---------------------------------------------------------------- run configs


@dataclass
class VariantTrainConfig:
    """What every run of the family holds; each recipe's config narrows ``model`` to its own type
    (``swaplab train model=NAME`` finds the recipe by that type)."""

    model: Any = None
    data: ImageDataConfig = group_field(ImageDataConfig, "data")
    trainer: TrainerConfig = group_field("zoo", "trainer")
    run_dir: str = "runs/autoencoder-variants"


@dataclass
class SparseCodingTrainConfig(VariantTrainConfig):
    model: SparseCodingConfig = group_field(SparseCodingConfig, "model")
    run_dir: str = "runs/sparse-coding"


@dataclass
class DenseTrainConfig(VariantTrainConfig):
    """A fully connected autoencoder's run: its reconstruction likelihood too."""

    loss: Literal["mse", "bce"] = "mse"

    def __post_init__(self) -> None:
        if self.loss == "bce" and getattr(self.model, "output", "sigmoid") != "sigmoid":
            raise ConfigError("loss=bce needs model.output=sigmoid (a probability per pixel)")


@dataclass
class SparseAutoencoderTrainConfig(DenseTrainConfig):
    model: SparseAutoencoderConfig = group_field(SparseAutoencoderConfig, "model")
    run_dir: str = "runs/sparse-autoencoder"


@dataclass
class DenoisingAutoencoderTrainConfig(DenseTrainConfig):
    model: DenoisingAutoencoderConfig = group_field(DenoisingAutoencoderConfig, "model")
    run_dir: str = "runs/denoising-autoencoder"


@dataclass
class ContractiveAutoencoderTrainConfig(DenseTrainConfig):
    model: ContractiveAutoencoderConfig = group_field(ContractiveAutoencoderConfig, "model")
    run_dir: str = "runs/contractive-autoencoder"


@dataclass
class StackedAutoencoderTrainConfig(DenseTrainConfig):
    model: StackedAutoencoderConfig = group_field(StackedAutoencoderConfig, "model")
    run_dir: str = "runs/stacked-autoencoder"


# ---------------------------------------------------------------- the shared step


class VariantRecipe(GenerativeRecipe):
    """One step: the sum of ``objective``'s terms, one optimiser step, then ``after_step``."""

    def build(self) -> nn.Module:
        return create_model(self.cfg.model)

    def objective(self, images: Tensor, step: int) -> dict[str, Tensor]:
        """The loss terms of ``step`` on this rank's ``images`` (fp32 scalars, summed to the loss)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after each applied update (a projection of the parameters, say)."""

    def noise_generator(self, step: int, purpose: str) -> torch.Generator:
        """A CPU generator for ``purpose``'s draws at ``step`` on this rank, from the trainer's seed."""
        session = self.session
        return torch.Generator().manual_seed(stream_seed(purpose, session.trainer.seed, step, session.dist.rank))

    def reconstruction(self, recon: Tensor, target: Tensor) -> Tensor:
        return likelihood_loss(recon, target, getattr(self.cfg, "loss", "mse"))

    def train_step(self, step: int) -> StepResult:
        images, _ = self.batch(step)
        terms = self.objective(images, step)
        loss = torch.stack(list(terms.values())).sum()
        loss.backward()
        applied, norm = self.apply_gradients("model", loss)
        if applied:
            self.after_step()
        values = {"loss": float(loss.detach()), "grad_norm": norm}
        values.update({f"loss/{name}": float(term.detach()) for name, term in terms.items()})
        return StepResult(applied, values)


# ---------------------------------------------------------------- sparse coding


@RECIPES.register("sparse-coding")
class SparseCodingRecipe(VariantRecipe):
    """Learns a dictionary by alternating minimisation of ``E = mean_n [||x_n - D h_n||^2 + lambda sum_j p(h_nj)]``.

    Each step: the batch's codes by ISTA with D fixed (``SparseCoding.encode``, no gradient), one
    optimiser step on D with the codes fixed (only the squared error depends on D; the penalty is
    logged as ``loss/sparsity``), then every atom back to unit norm.
    """

    name = "sparse-coding"
    config_type = SparseCodingTrainConfig

    @property
    def coder(self) -> SparseCoding:
        return self.module  # type: ignore[return-value]

    def objective(self, images: Tensor, step: int) -> dict[str, Tensor]:
        codes = self.coder.encode(images)
        error = (images.float() - self.coder.synthesize(codes)).flatten(1).square().sum(1).mean()
        sparsity = self.cfg.model.sparsity * self.coder.penalty(codes).mean()
        return {"reconstruction": error, "sparsity": sparsity}

    def after_step(self) -> None:
        self.coder.normalize_atoms()

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        """Adds ``val/code_small_fraction``: the share of held-out code values below ``SMALL_CODE`` in size
        (L1's soft threshold makes them exactly 0; the log penalty only makes them small)."""
        values = super().validate(step)
        held, _ = self.data.heldout()
        codes = self.coder.encode(held.to(self.session.device))
        values["val/code_small_fraction"] = float((codes.abs() < SMALL_CODE).float().mean())
        return values


# ---------------------------------------------------------------- sparse autoencoder


@RECIPES.register("sparse-autoencoder")
class SparseAutoencoderRecipe(VariantRecipe):
    """``L = E_x[sum_i l(x_i, x_hat_i)] + beta * S(h) + lambda * 1/2 sum ||W||^2``, the sparse autoencoder.

    ``S`` is ``kl_sparsity`` (``sum_j KL(rho || rho_hat_j)``, the batch's mean activations) or
    ``l1_activity`` (``E sum_j |h_j|``); the weight decay term covers weight matrices, not biases.
    """

    name = "sparse-autoencoder"
    config_type = SparseAutoencoderTrainConfig

    def __init__(self, cfg: SparseAutoencoderTrainConfig, session: Any) -> None:
        super().__init__(cfg, session)
        model = cfg.model
        self.sparsity = (
            LOSSES.create("kl_sparsity", model.rho) if model.sparsity == "kl" else LOSSES.create("l1_activity")
        )
        self.weight_decay = LOSSES.create("weight_decay")

    def objective(self, images: Tensor, step: int) -> dict[str, Tensor]:
        model, cfg = self.model, self.cfg.model
        with self.session.autocast():
            codes = model.encode(images)
            recon = model.decode(codes)
        return {
            "reconstruction": self.reconstruction(recon, images),
            "sparsity": cfg.sparsity_weight * self.sparsity(codes),
            "weight_decay": cfg.weight_decay * self.weight_decay(model),
        }

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        """Adds ``val/mean_activation``: the held-out codes' mean value (the KL variant aims it at rho)."""
        values = super().validate(step)
        held, _ = self.data.heldout()
        values["val/mean_activation"] = float(self.model.encode(held.to(self.session.device)).float().mean())
        return values


# ---------------------------------------------------------------- denoising autoencoder


@RECIPES.register("denoising-autoencoder")
class DenoisingAutoencoderRecipe(VariantRecipe):
    """``L = E_x E_{x~ ~ q(x~|x)} [sum_i l(x_i, g(f(x~))_i)]``: the clean image from its corruption q
    (Vincent et al. 2008, "Extracting and Composing Robust Features with Denoising Autoencoders", DAE).

    Validation adds ``val/denoising_mse`` (held-out images corrupted with a fixed seed, restored,
    against the clean ones) and ``val/corrupted_mse`` (the corrupted images themselves: the identity's
    score to beat); the preview adds their rows.
    """

    name = "denoising-autoencoder"
    config_type = DenoisingAutoencoderTrainConfig

    def corrupt(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return corrupt(images, self.cfg.model.noise, self.cfg.model.noise_level, generator)

    def objective(self, images: Tensor, step: int) -> dict[str, Tensor]:
        noisy = self.corrupt(images, self.noise_generator(step, "denoising-corruption"))
        with self.session.autocast():
            recon = self.model.reconstruct(noisy)
        return {"reconstruction": self.reconstruction(recon, images)}

    def heldout_corrupted(self, count: int = 0) -> tuple[Tensor, Tensor]:
        """The first ``count`` held-out images (all with 0) and their corruption by a fixed seed (CPU)."""
        held, _ = self.data.heldout(count)
        return held, self.corrupt(held, torch.Generator().manual_seed(PREVIEW_SEED))

    @torch.no_grad()
    def pictures(self) -> dict[str, Tensor]:
        pictures = super().pictures()
        held, noisy = self.heldout_corrupted(PREVIEW_ROWS)
        with self.session.autocast():
            restored = self.model.reconstruct(noisy.to(self.session.device)).float().cpu()
        pictures.update(corrupted=noisy.clamp(0, 1), restored=restored.clamp(0, 1))
        return pictures

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        values = super().validate(step)
        held, noisy = self.heldout_corrupted()
        restored = self.model.reconstruct(noisy.to(self.session.device)).float().cpu().clamp(0, 1)
        values["val/denoising_mse"] = float((restored - held).square().mean())
        values["val/corrupted_mse"] = float((noisy.clamp(0, 1) - held).square().mean())
        return values


# ---------------------------------------------------------------- contractive autoencoder


@RECIPES.register("contractive-autoencoder")
class ContractiveAutoencoderRecipe(VariantRecipe):
    """``L = E_x[sum_i l(x_i, x_hat_i)] + lambda ||J_f(x)||_F^2 + gamma E_eps ||J_f(x) - J_f(x + eps)||_F^2``.

    ``J_f`` is the encoder's Jacobian d h / d x (closed form for one sigmoid layer, else autograd;
    see ``swaplab.losses.regularizers``); the gamma term is the higher-order variant, on when
    ``model.curvature`` > 0. Both penalties run in fp32 outside autocast.
    """

    name = "contractive-autoencoder"
    config_type = ContractiveAutoencoderTrainConfig

    def __init__(self, cfg: ContractiveAutoencoderTrainConfig, session: Any) -> None:
        super().__init__(cfg, session)
        model = cfg.model
        self.contraction = LOSSES.create("contractive", model.jacobian)
        self.curvature = LOSSES.create(
            "contractive_higher_order", model.curvature_sigma, model.curvature_copies, model.jacobian
        )

    def objective(self, images: Tensor, step: int) -> dict[str, Tensor]:
        model: DenseAutoencoder = self.model  # type: ignore[assignment]
        cfg = self.cfg.model
        with self.session.autocast():
            recon = model.reconstruct(images)
        layer = model.sigmoid_layer()
        terms = {"reconstruction": self.reconstruction(recon, images)}
        if cfg.contraction:
            terms["contraction"] = cfg.contraction * self.contraction(images, model.encode, layer)
        if cfg.curvature:
            generator = self.noise_generator(step, "contractive-curvature")
            terms["curvature"] = cfg.curvature * self.curvature(images, model.encode, layer, generator)
        return terms


# ---------------------------------------------------------------- stacked autoencoder


@RECIPES.register("stacked-autoencoder")
class StackedAutoencoderRecipe(VariantRecipe):
    """Greedy layer-wise training, then end-to-end fine-tuning, in one run (Bengio et al. 2007, "Greedy
    Layer-Wise Training of Deep Networks").

    Stage i < depth (steps ``[i * layer_steps, (i + 1) * layer_steps)``): layer i alone reconstructs
    its inputs, ``L_i = E ||c_{i-1} - g_i(f_i(c_{i-1}))||^2`` with ``c_{i-1}`` the frozen codes of the
    layers below (``c_0 = x``, whose term uses the run's likelihood); logged as ``loss/layer<i+1>``.
    Then ``L = E_x[sum_i l(x_i, x_hat_i)]`` through the whole stack (``loss/reconstruction``). The
    stage is a function of the step, so a resumed run continues where it stopped; one optimiser
    covers every layer (a layer without gradient is left as it is).
    """

    name = "stacked-autoencoder"
    config_type = StackedAutoencoderTrainConfig

    def objective(self, images: Tensor, step: int) -> dict[str, Tensor]:
        model: DenseAutoencoder = self.model  # type: ignore[assignment]
        stage = self.cfg.model.stage(step)
        if stage == model.depth:
            with self.session.autocast():
                recon = model.reconstruct(images)
            return {"reconstruction": self.reconstruction(recon, images)}
        with self.session.autocast():
            with torch.no_grad():
                inputs = model.encode(images, depth=stage)
            recon = model.reconstruct_layer(stage, inputs)
        if stage == 0:
            return {"layer1": self.reconstruction(recon, inputs)}
        return {f"layer{stage + 1}": likelihood_loss(recon, inputs, "mse")}
