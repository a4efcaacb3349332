"""The DDPM recipe on the shared loop: ``model=ddpm-tiny``, ``ddpm-64``, ``ddpm-128``; latent ``ldm-tiny``, ``ldm-64``.

One step (Ho et al. 2020, Algorithm 1): draw t ~ U{0..T-1} and eps ~ N(0, I) per image from the
step's own stream (so resumed and multi-process runs draw alike), form x_t by the closed form
``q(x_t | x_0)`` and regress the U-Net's eps on eps (mean squared error) under the run's autocast.
With ``model.condition=identity`` each face's embedding by ``model.identity_network`` (computed
once, from the faceset's full-size crop) is the condition, replaced by the null condition for a
``model.condition_dropout`` share of the images. Previews: held-out faces, their noisy versions and
x_0-predictions at several t, and samples by ``preview_sampler`` from fixed noise. Validation adds
the held-out denoising loss at fixed (t, eps) to the zoo's numbers.

Latent models first train their autoencoder alone (``autoencoder_steps``; squared error of a decoded
posterior draw plus a small KL term, as latent diffusion's KL-regularised autoencoder), then freeze
it, fix the code scale (1 / std of the training codes, kept in the weights) and train the U-Net on
the codes exactly as above.

Previews, validation and the export use an exponential moving average of the denoiser's weights
(``ema``, decay 0.999 by default; ``swaplab.train.weight_average``), the DDPM convention: samples
from the averaged weights are smoother than from the last step's. The average rides in the run's
checkpoints as the module's ``average.*`` buffers, so a resumed run continues it exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from swaplab.config import ConfigError, config_group, group_field
from swaplab.models.diffusion import DDPM, DDPMConfig
from swaplab.models.diffusion_swapper import DiffusionSwapSettings
from swaplab.models.samplers import SamplerConfig
from swaplab.train.config import TEST_SETTINGS, TrainerConfig, register_trainer
from swaplab.train.data import stream_seed
from swaplab.train.image_data import ImageData, ImageDataConfig
from swaplab.train.recipe import RECIPES, StepResult
from swaplab.train.recipes.generative import PREVIEW_ROWS, PREVIEW_SEED, VALIDATION_SEED, GenerativeRecipe
from swaplab.train.weight_average import WeightAverage, averaged_tensors, fill_missing_average

Tensor = torch.Tensor

#: A few CPU-minutes at 32 px: faces take shape in the previews after a few thousand steps.
register_trainer("ddpm", steps=4000, batch_size=32, optimizer="adam", lr=2e-4, warmup_steps=100, log_every=25,
                 preview_every=500, checkpoint_every=500, keep_last=2)  # fmt: skip
register_trainer("ddpm-test", like="ddpm", steps=6, batch_size=8, checkpoint_every=3, warmup_steps=0, **TEST_SETTINGS)

#: Aligned faces of ``data.train``'s facesets at the model's resolution (32 held out).
config_group("data").register("faces")(functools.partial(ImageDataConfig, name="faces", source="faceset", holdout=32))

#: The timesteps whose noisy faces and x_0-predictions the previews show.
PREVIEW_TIMESTEPS = (50, 250, 500, 750, 950)


@dataclass
class DDPMTrainConfig:
    model: DDPMConfig = group_field(DDPMConfig, "model")
    data: ImageDataConfig = group_field(lambda: config_group("data").create("faces"), "data")
    preview_sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(name="ddim", steps=25))
    # Latent models (model.autoencoder.widths): the autoencoder trains alone for these first steps
    # (squared error plus this weight times its KL term), then stays frozen while the U-Net trains.
    # The exported swapper's defaults (``options={...}`` on ``swaplab swap`` still override them), so a
    # study can ablate swap settings per run: runs that differ only here train identical weights.
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(name="ddim", steps=25))
    swap: DiffusionSwapSettings = field(default_factory=DiffusionSwapSettings)
    autoencoder_steps: int = 1000
    autoencoder_kl: float = 1e-6
    # Per-identity fine-tuning (the DreamBooth idea, Ruiz et al. 2023): start from the exported model
    # ``init_from`` (same model config) and learn the source person's faces (data.train) while the
    # faces of other people in ``prior`` keep the general face model (prior preservation, with real
    # faces rather than the model's own samples), their loss weighted by ``prior_weight``. The exported
    # model then swaps in that person with no source photo (SDEdit from the target).
    init_from: str = ""
    prior: list[str] = field(default_factory=list)
    prior_weight: float = 1.0
    # Whom the exported unconditioned model swaps in: "any" person (source photos, through identity
    # guidance) or the "one" person data.train holds (per-identity fine-tuning, no source). "auto":
    # one when a prior is given (that mode's mark), any otherwise: init_from alone also starts
    # pruning and longer trainings of a many-people model, which still swap in anyone.
    swaps_in: Literal["auto", "any", "one"] = "auto"
    # Validation scores samples against the held-out faces also in this identity network's feature
    # space (the evaluator's Frechet/kernel distances use dlib-resnet's), so quality over training is
    # read on the evaluator's scale ("" = pixels only; needs aligned faces from facesets).
    validation_network: str = "dlib-resnet"
    # Decay of the moving average of the denoiser's weights that previews, validation and the export
    # use (0 = off: the last step's weights). The autoencoder of latent models is not averaged: it is
    # frozen before the denoiser trains, and the denoiser learned the codes of its last weights.
    ema: float = 0.999
    trainer: TrainerConfig = group_field(lambda: config_group("trainer").create("ddpm"), "trainer")
    run_dir: str = "runs/ddpm"


def identity_embeddings(facesets: list[str], network: str, limit: int = 0) -> Tensor:
    """(N, D) embeddings by ``network`` of every face of ``facesets`` in reading order (the first
    ``limit`` when > 0), from the full-size aligned crops."""
    from swaplab.facesets.format import Faceset
    from swaplab.models.simswap import TemplateChipIdentity
    from swaplab.train.recipes.per_pair import alignment_of

    out: list[Tensor] = []
    encoders: dict[tuple[str, int], TemplateChipIdentity] = {}
    shared = None
    for root in facesets:
        faceset = Faceset(root)
        template = alignment_of(root)["template"]
        crops = [faceset.image(i) for i in range(len(faceset.records))]
        if not crops:
            continue
        size = crops[0].shape[0]
        key = (template, size)
        if key not in encoders:
            encoders[key] = TemplateChipIdentity(template, size, shared if shared is not None else network)
            shared = encoders[key].network
        with torch.no_grad():
            batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0)
            out.extend(encoders[key](batch[i : i + 32]) for i in range(0, len(batch), 32))
    embeddings = torch.cat(out)
    return embeddings[:limit] if limit else embeddings


def initial_weights(model_dir: str, config: DDPMConfig) -> dict[str, Tensor]:
    """The weights of the exported model ``model_dir``, which must have ``config``'s architecture."""
    from swaplab.config import from_dict, to_dict
    from swaplab.models.card import load_weights, read_card

    card, weights = read_card(model_dir)
    mine, theirs = to_dict(config), dict(card.get("model") or {})
    # A smaller unet_keep than the model's is pruning it (swaplab.models.diffusion_pruning).
    differ = sorted(k for k in mine if k not in ("name", "unet_keep") and mine[k] != theirs.get(k))
    theirs_keep = float(theirs.get("unet_keep", 1.0))
    if card.get("arch") != "ddpm" or differ or theirs_keep not in (1.0, config.unet_keep):
        what = ", ".join(differ) or ("unet_keep (only unpruned models prune)" if card.get("arch") == "ddpm" else "arch")
        raise ConfigError(
            f"init_from={model_dir}: a {card.get('arch')} model whose config differs in {what}; "
            f"fine-tune with the model config it was trained with"
        )
    tensors = load_weights(card, weights)
    if config.unet_keep == theirs_keep:
        return tensors
    from swaplab.models.diffusion_pruning import prune_unet

    source = DDPM(from_dict(DDPMConfig, theirs))
    source.load_state_dict(tensors)
    prune_unet(source.unet, config.unet_keep)
    return source.state_dict()


@RECIPES.register("ddpm")
class DDPMRecipe(GenerativeRecipe):
    """Trains a ``DDPM`` by the simple noise-regression loss."""

    name = "ddpm"
    config_type = DDPMTrainConfig
    swap_time_sections = ("sampler", "swap")  # previews and validation use ``preview_sampler``

    def __init__(self, cfg: DDPMTrainConfig, session: Any) -> None:
        super().__init__(cfg, session)
        self.identities: Tensor | None = None
        if cfg.model.condition == "identity":
            data = cfg.data.resolved(cfg.model)
            every = identity_embeddings(data.train, cfg.model.identity_network, data.limit)
            self.identities = every[self.data.train_index]
            self.heldout_identities = every[self.data.heldout_index]
        if cfg.prior_weight < 0:
            raise ConfigError(f"prior_weight must be >= 0, got {cfg.prior_weight}")
        if not 0 <= cfg.ema < 1:
            raise ConfigError(f"ema must be in [0, 1) (0 = no average of the weights), got {cfg.ema}")
        self.prior = self._load_prior()

    def _load_prior(self) -> tuple[ImageData, Tensor | None] | None:
        cfg = self.cfg
        if not cfg.prior:
            return None
        data = dataclasses.replace(cfg.data.resolved(cfg.model), train=list(cfg.prior), holdout=0, limit=0)
        prior = ImageData(data)
        identities = None
        if cfg.model.condition == "identity":
            identities = identity_embeddings(cfg.prior, cfg.model.identity_network)[prior.train_index]
        return prior, identities

    def build(self) -> nn.Module:
        model = DDPM(self.cfg.model)
        if self.cfg.init_from and not self.session.resuming:
            model.load_state_dict(initial_weights(self.cfg.init_from, self.cfg.model))
        if self.cfg.ema:
            # Attached after any init_from weights, so a fine-tuning's average starts from them.
            model.average = WeightAverage(model, self.cfg.ema, include=lambda name: not name.startswith("autoencoder."))
        return model

    @property
    def average(self) -> WeightAverage | None:
        return getattr(self.model, "average", None)

    def complete_checkpoint(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        # Runs written before the average existed resume with one that starts from their weights.
        return fill_missing_average(tensors, self.average, "average") if self.average is not None else tensors

    def _averaged(self):
        """The block runs on the averaged weights (the last ones when ``ema`` is 0)."""
        average = self.average
        return average.swapped_into(self.model) if average is not None else contextlib.nullcontext()

    @property
    def model(self) -> DDPM:
        return self.module  # type: ignore[return-value]

    def _rank_rows(self, count: int) -> slice:
        """This rank's rows of a step's draws made for the whole global batch (``count`` per rank):
        every rank draws the global batch from one stream and keeps its share, so N processes draw
        exactly what one process with an N times larger batch would (tests/test_ddp.py)."""
        rank = self.session.dist.rank
        return slice(rank * count, (rank + 1) * count)

    def _draws(self, name: str, count: int, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """(t, eps, null-condition flags) of ``step`` for this rank's ``count`` images."""
        session, cfg = self.session, self.cfg.model
        total, rows = count * session.dist.world_size, self._rank_rows(count)
        generator = torch.Generator().manual_seed(stream_seed(name, session.trainer.seed, step))
        t = torch.randint(0, cfg.schedule.train_timesteps, (total,), generator=generator)[rows]
        eps = torch.randn((total, *self.model.diffusion_shape), generator=generator)[rows]
        null = (torch.rand(total, generator=generator) < cfg.condition_dropout)[rows]
        device = session.device
        return t.to(device), eps.to(device).contiguous(memory_format=session.memory_format), null.to(device)

    @torch.no_grad()
    def diffusion_inputs(self, images: Tensor, training: bool = False) -> Tensor:
        """Images in [0, 1] -> what the U-Net denoises (latent models: the frozen autoencoder's scaled codes;
        the first diffusion-phase training step sets the scale from the first 256 training faces)."""
        model = self.model
        if training and model.autoencoder is not None and float(model.latent_scale) == 0:
            sample = self.data.images[:256].float().div(255.0).to(images.device)
            with self.session.autocast():
                codes = torch.cat([model.encode_latents(sample[i : i + 64]).float() for i in range(0, len(sample), 64)])
            model.latent_scale.fill_(1.0 / float(codes.std().clamp_min(1e-6)))
        with self.session.autocast():
            return model.to_diffusion(images).float()

    def autoencoder_step(self, images: Tensor, step: int) -> StepResult:
        """One step of the latent model's autoencoder: squared error of a decoded posterior draw plus KL."""
        autoencoder = self.model.autoencoder
        session = self.session
        generator = torch.Generator().manual_seed(stream_seed("ldm-autoencoder", session.trainer.seed, step))
        with session.autocast():
            posterior = autoencoder.encode(images.mul(2).sub(1)).latent_dist
            mean, log_var = posterior.mean.float(), posterior.logvar.float()
            shape = (len(mean) * session.dist.world_size, *mean.shape[1:])
            unit = torch.randn(shape, generator=generator)[self._rank_rows(len(mean))].to(mean.device)
            draw = mean + torch.exp(0.5 * log_var) * unit
            recon = autoencoder.decode(draw).sample.float().add(1).div(2)
        squared = nn.functional.mse_loss(recon, images)
        kl = 0.5 * (mean.square() + log_var.exp() - log_var - 1).sum(dim=(1, 2, 3)).mean()
        loss = squared + self.cfg.autoencoder_kl * kl
        loss.backward()
        applied, norm = self.apply_gradients("model", loss)
        values = {"loss": float(loss.detach()), "loss/reconstruction": float(squared.detach()),
                  "loss/kl": float(kl.detach()), "grad_norm": norm}  # fmt: skip
        return StepResult(applied, values)

    def denoising_loss(self, x0: Tensor, t: Tensor, eps: Tensor, identity: Tensor | None, null: Tensor) -> Tensor:
        x_t = self.model.schedule.q_sample(x0, t, eps)
        with self.session.autocast():
            predicted = self.model(x_t, t, identity, null=null if identity is not None else None)
        return nn.functional.mse_loss(predicted.float(), eps)

    def train_step(self, step: int) -> StepResult:
        session = self.session
        t_cfg = session.trainer
        positions = self.data.stream.positions((step * session.dist.world_size + session.dist.rank) * t_cfg.batch_size,
                                               t_cfg.batch_size)  # fmt: skip
        images = self.data.images[positions].float().div(255.0).to(session.device)
        images = images.contiguous(memory_format=session.memory_format)
        if self.model.autoencoder is not None and step < self.cfg.autoencoder_steps:
            return self.autoencoder_step(images, step)
        x0 = self.diffusion_inputs(images, training=True)
        identity = self.identities[positions].to(session.device) if self.identities is not None else None
        t, eps, null = self._draws("ddpm", len(x0), step)
        loss = self.denoising_loss(x0, t, eps, identity, null)
        if self.prior is not None:
            prior, prior_identities = self.prior
            where = prior.stream.positions((step * session.dist.world_size + session.dist.rank) * t_cfg.batch_size,
                                           t_cfg.batch_size)  # fmt: skip
            faces = prior.images[where].float().div(255.0).to(session.device)
            prior_x0 = self.diffusion_inputs(faces.contiguous(memory_format=session.memory_format), training=True)
            prior_identity = prior_identities[where].to(session.device) if prior_identities is not None else None
            t, eps, null = self._draws("ddpm-prior", len(prior_x0), step)
            loss = loss + self.cfg.prior_weight * self.denoising_loss(prior_x0, t, eps, prior_identity, null)
        loss.backward()
        applied, norm = self.apply_gradients("model", loss)
        if applied and self.average is not None:
            self.average.update(self.model)
        return StepResult(applied, {"loss": float(loss.detach()), "grad_norm": norm})

    # ------------------------------------------------------------ pictures and numbers

    def _with_preview_sampler(self):
        model = self.model
        previous = model.sampler_config
        model.sampler_config = self.cfg.preview_sampler
        return previous

    @torch.no_grad()
    def pictures(self) -> dict[str, Tensor]:
        with self._averaged():
            return self._pictures()

    @torch.no_grad()
    def _pictures(self) -> dict[str, Tensor]:
        model, device = self.model, self.session.device
        held, _ = self.data.heldout(PREVIEW_ROWS)
        x0 = self.diffusion_inputs(held.to(device))
        identity = self.heldout_identities[:PREVIEW_ROWS].to(device) if self.identities is not None else None
        eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(PREVIEW_SEED)).to(device)
        out: dict[str, Tensor] = {"held out": held}
        with self.session.autocast():
            for t in PREVIEW_TIMESTEPS:
                x_t = model.schedule.q_sample(x0, t, eps)
                predicted = model.schedule.predict_x0(x_t, t, model(x_t, t, identity).float())
                out[f"x_t t={t}"] = model.from_diffusion(x_t).float().cpu()
                out[f"x0 from t={t}"] = model.from_diffusion(predicted).float().cpu()
            previous = self._with_preview_sampler()
            try:
                generator = torch.Generator().manual_seed(PREVIEW_SEED)
                out["samples"] = model.sample(len(held), generator).float().cpu()
                if identity is not None:
                    generator = torch.Generator().manual_seed(PREVIEW_SEED)
                    out["samples, held-out identity"] = model.sample(len(identity), generator, identity=identity).cpu()
            finally:
                model.sampler_config = previous
        return {k: v.clamp(0, 1) for k, v in out.items()}

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        with self._averaged():
            return self._validate(step)

    @torch.no_grad()
    def _validate(self, step: int) -> dict[str, float]:
        previous = self._with_preview_sampler()
        try:
            with self.session.autocast():
                values = super().validate(step)
        finally:
            self.model.sampler_config = previous
        held, _ = self.data.heldout()
        if self.model.autoencoder is not None:
            with self.session.autocast():
                recon = self.model.from_diffusion(self.model.to_diffusion(held.to(self.session.device)))
            values["val/reconstruction_mse"] = float(((recon.float().clamp(0, 1).cpu() - held) ** 2).mean())
        x0 = self.diffusion_inputs(held.to(self.session.device))
        t, eps, null = self._draws("ddpm-validation", len(x0), 0)
        identity = self.heldout_identities.to(self.session.device) if self.identities is not None else None
        values["val/loss"] = float(self.denoising_loss(x0, t, eps, identity, torch.zeros_like(null)))
        return values

    def sample_distances(self, samples: Tensor, held: Tensor) -> dict[str, float]:
        """The pixel FD, and FD and KID in ``validation_network``'s features (dlib's 256-d
        penultimate layer for the evaluator's network) of samples against the held-out faces."""
        from swaplab.metrics import frechet_distance, kernel_distance

        values = super().sample_distances(samples, held)
        encoder = self._validation_encoder(samples.shape[-1])
        if encoder is None:
            return values
        ours = self._validation_features(encoder, samples)
        if self._held_features is None:
            self._held_features = self._validation_features(encoder, held)
        values["val/fd_features"] = float(frechet_distance(ours, self._held_features))
        subset = min(len(ours), len(self._held_features))
        kid = kernel_distance(ours, self._held_features, subsets=20, subset_size=subset, seed=VALIDATION_SEED)
        values["val/kid_features"] = float(kid.mean)
        return values

    _encoder: Any = None
    _held_features: np.ndarray | None = None

    def _validation_encoder(self, resolution: int):
        """``TemplateChipIdentity`` on the faces' alignment, or None (no network named, not faces)."""
        cfg = self.cfg
        data = cfg.data.resolved(cfg.model)
        if not cfg.validation_network or data.source != "faceset" or not data.train:
            return None
        if self._encoder is None:
            from swaplab.models.simswap import TemplateChipIdentity
            from swaplab.train.recipes.per_pair import alignment_of

            template = alignment_of(data.train[0])["template"]
            self._encoder = TemplateChipIdentity(template, resolution, cfg.validation_network).eval()
        return self._encoder

    @staticmethod
    def _validation_features(encoder, images: Tensor) -> np.ndarray:
        with torch.no_grad():
            chips = torch.cat([encoder.chips(images[i : i + 32]) for i in range(0, len(images), 32)])
            return torch.cat([encoder.network.features(chips[i : i + 32]) for i in range(0, len(chips), 32)]).numpy()

    # ------------------------------------------------------------ export

    @classmethod
    def export(cls, cfg: DDPMTrainConfig, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]) -> dict:
        from swaplab.train.recipes.per_pair import alignment_of

        # The exported model is the averaged one: its weights in place of the last step's.
        fields = super().export(cfg, averaged_tensors(tensors, "average"), out_dir, state)
        data = cfg.data.resolved(cfg.model)
        network = cfg.model.identity_network
        # A model fine-tuned on one person (unconditioned) swaps that person in: it takes no source.
        one = cfg.swaps_in == "one" or (cfg.swaps_in == "auto" and bool(cfg.prior))
        per_identity = one and cfg.model.condition == "none"
        fields.update(
            {
                "swapper": "diffusion",
                # The source is embedded by this network: the condition of conditioned models and the
                # identity guidance of every model, so the evaluator must score identity with another.
                "identity": {"conditions_on": None if per_identity else network, "loss_network": network},
                "alignment": alignment_of(data.train[0]) if data.source == "faceset" and data.train else {},
                "split": {"trained_on": "peopleDevTrain.txt", "evaluate_on": "peopleDevTest.txt"},
                "diffusion": {
                    "condition": cfg.model.condition,
                    "sampler": dataclasses.asdict(cfg.sampler),
                    "swap": dataclasses.asdict(cfg.swap),
                    "schedule": dataclasses.asdict(cfg.model.schedule),
                    "samplers": "swaplab.models.samplers.SAMPLERS (an option, never a weight)",
                },
                "conventions": (
                    "eps-prediction U-Net over images in [-1, 1]; sample() and the swapper take and give [0, 1]; "
                    "see swaplab.models.diffusion"
                ),
            }
        )
        return fields
