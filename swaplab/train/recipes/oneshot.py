"""The one-shot recipe: SimSwap-style GAN swappers trained on many people (``model=simswap-*``).

Each step draws this rank's (target, source) pairs (a pure function of seed and step, from
``peopleDevTrain`` people only), renders the swaps once, then
1. updates the discriminator on the targets (real) and the detached swaps (fake), with the
   gradient penalty every ``gan.gp_every`` steps (lazy regularisation);
2. updates the generator through the updated discriminator: adversarial, identity (through the
   frozen ``gan.identity_network``), same-identity reconstruction and feature-matching terms.
Both players use Adam(W, no decay) with SimSwap's lr 4e-4 and betas (0, 0.99) by default, losses
in fp32. Under ``torchrun`` each player's gradients are averaged across processes with
``torch.distributed`` (StyleGAN2-ADA's way: DistributedDataParallel does not support the gradient
penalty's double backward). Previews show fixed ``peopleDevTest`` pairs, and the study report's
strips are written beside them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from swaplab.config import ConfigError, to_dict
from swaplab.io.atomic import atomic_write_json
from swaplab.io.images import write_image
from swaplab.losses import LossTerms
from swaplab.losses.adversarial import SimSwapObjective
from swaplab.models.simswap import SimSwapGenerator, TemplateChipIdentity, create_discriminator
from swaplab.train.data import stream_seed
from swaplab.train.oneshot_data import OneShotBatch, OneShotPairs, eval_pairs, train_pairs
from swaplab.train.preview import compose_grid, save_preview, to_hwc
from swaplab.train.recipe import RECIPES, GanPair, Recipe, StepResult
from swaplab.train.recipes.oneshot_config import OneShotTrainConfig
from swaplab.train.recipes.per_pair import alignment_of
from swaplab.train.session import apply_gradients

Tensor = torch.Tensor

PREVIEW_COLUMNS = ("source", "target", "swap", "self-swap")


def _row(images: np.ndarray) -> np.ndarray:
    """(K, R, R, 3) -> one (R, K*R, 3) strip."""
    return np.concatenate(list(images), axis=1)


@RECIPES.register("oneshot")
class OneShotRecipe(Recipe):
    """Trains a one-shot generator and its discriminator on ``data.train`` (peopleDevTrain people)."""

    name = "oneshot"
    config_type = OneShotTrainConfig

    def __init__(self, cfg: OneShotTrainConfig, session: Any) -> None:
        super().__init__(cfg, session)
        if not cfg.data.train:
            raise ConfigError("data.train must name the training faceset folder(s) (peopleDevTrain people)")
        if cfg.trainer.accumulate != 1:
            raise ConfigError("trainer.accumulate must be 1 for one-shot GAN training (use more processes instead)")
        lists_dir = cfg.data.lists_dir or None
        resolution = cfg.model.resolution
        self.data = train_pairs(
            cfg.data.train,
            resolution,
            same_identity_ratio=cfg.data.same_identity_ratio,
            schedule=cfg.data.schedule,
            seed=cfg.data.seed,
            lists_dir=lists_dir,
            cache=cfg.data.cache,
        )
        self.eval_source = "peopleDevTest"
        if cfg.data.eval:
            self.eval_data: OneShotPairs = eval_pairs(
                cfg.data.eval, resolution, seed=cfg.data.seed, lists_dir=lists_dir
            )
        else:
            self.eval_data, self.eval_source = self.data, "peopleDevTrain (no data.eval given)"
        self.eval_batch = self.eval_data.batch(0, batch_size=cfg.data.eval_pairs)
        if self.eval_data is self.data:  # training pairs: show real swaps, not same-identity ones
            self.eval_batch = self._different_identity(self.eval_batch, self.data)
        self.objective = self.create_objective()

    def loss_identity_encoder(self, network: str) -> TemplateChipIdentity:
        """The frozen identity network ``network`` on this data's aligned crops (for identity losses)."""
        identity = TemplateChipIdentity(self.data.template, self.cfg.model.resolution, network)
        return identity.to(self.session.device).eval().requires_grad_(False)

    def create_objective(self) -> nn.Module:
        """The family's losses (SimSwap's here; other one-shot families override this)."""
        cfg = self.cfg
        identity = self.loss_identity_encoder(cfg.gan.identity_network) if cfg.loss.identity.weight else None
        return SimSwapObjective(cfg.loss, identity_encoder=identity).to(self.session.device)

    @staticmethod
    def _different_identity(batch: OneShotBatch, pairs: OneShotPairs) -> OneShotBatch:
        """Replace same-identity sources of a fixed batch with another person's face (seeded)."""
        sources = []
        for k, same in enumerate(batch.same_identity.tolist()):
            target = pairs.ids.index(batch.target_ids[k])
            sources.append(pairs.source_for(target, 10**9 + k, False) if same else pairs.ids.index(batch.source_ids[k]))
        return batch._replace(
            source=pairs._images(sources),
            source_identity=pairs.identities[sources],
            same_identity=torch.zeros(len(sources), dtype=torch.bool),
            source_ids=[pairs.ids[s] for s in sources],
        )

    # ------------------------------------------------------------ the models

    def build(self) -> nn.Module:
        return GanPair(SimSwapGenerator(self.cfg.model), create_discriminator(self.cfg.model))

    def param_groups(self, module: nn.Module) -> dict[str, list[dict[str, Any]]]:
        d_scale = self.cfg.gan.d_lr / self.cfg.trainer.lr if self.cfg.gan.d_lr else 1.0
        return {
            "generator": [{"params": list(module.generator.parameters())}],
            "discriminator": [{"params": list(module.discriminator.parameters()), "lr_scale": d_scale}],
        }

    @property
    def generator(self) -> SimSwapGenerator:
        return self.module.generator  # type: ignore[union-attr]

    @property
    def discriminator(self) -> nn.Module:
        return self.module.discriminator  # type: ignore[union-attr]

    # ------------------------------------------------------------ one step

    def _inputs(self, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """This rank's targets (N, 3, R, R), source identities (N, 128) and same-identity flags."""
        session = self.session
        batch = self.data.batch(
            step, batch_size=session.trainer.batch_size, rank=session.dist.rank, world_size=session.dist.world_size
        )
        self.last_batch = batch  # its face ids index other per-face tables (e.g. another network's embeddings)
        target = batch.target.to(session.device)
        if self.cfg.data.flip:
            seed = stream_seed("oneshot-flip", session.trainer.seed, step, session.dist.rank)
            flip = torch.rand(len(target), generator=torch.Generator().manual_seed(seed)) < 0.5
            target = torch.where(flip.view(-1, 1, 1, 1).to(session.device), target.flip(-1), target)
        target = target.contiguous(memory_format=session.memory_format)
        return target, batch.source_identity.to(session.device), batch.same_identity.to(session.device)

    def train_step(self, step: int) -> StepResult:
        """One discriminator and one generator update."""
        session, objective = self.session, self.objective
        world, clip = session.dist.world_size, session.trainer.grad_clip
        target, source_identity, same = self._inputs(step)
        with session.autocast():
            fake = self.generator(target, source_identity)

        # 1. the discriminator, on the detached swaps
        gp_every = self.cfg.gan.gp_every
        penalty = gp_every if step % gp_every == 0 else None
        with session.autocast():
            d_terms = objective.discriminator_loss(self.discriminator, target, fake.float(), penalty_every=penalty)
        d_terms.total.backward()
        d_ok, d_norm = apply_gradients(self.optimizers["discriminator"], d_terms.total.detach(), clip, world, True)

        # 2. the generator, through the discriminator just updated (its weights frozen meanwhile)
        self.discriminator.requires_grad_(False)
        try:
            with session.autocast():
                fake_out = self.discriminator(fake) if objective.needs_fake_output else None
                real_out = None
                if objective.needs_real_output:
                    with torch.no_grad():
                        real_out = self.discriminator(target)
                g_terms: LossTerms = objective.generator_loss(
                    fake.float(), target.float(), source_identity, same, fake_out, real_out
                )
            g_terms.total.backward()
        finally:
            self.discriminator.requires_grad_(True)
        g_ok, g_norm = apply_gradients(self.optimizers["generator"], g_terms.total.detach(), clip, world, True)

        values = {"loss": float(g_terms.total.detach()), "d_loss": float(d_terms.total.detach())}
        values.update({f"loss/{k}": float(v) for k, v in g_terms.components.items()})
        values.update({f"d_loss/{k}": float(v) for k, v in d_terms.components.items()})
        values.update(grad_norm=g_norm, d_grad_norm=d_norm)
        return StepResult(d_ok and g_ok, values)

    # ------------------------------------------------------------ records

    @torch.no_grad()
    def render_eval_pairs(self) -> dict[str, np.ndarray]:
        """The fixed pairs' sources, targets, swaps and self-swaps as (K, R, R, 3) uint8 arrays."""
        batch, session = self.eval_batch, self.session
        was_training = self.generator.training
        self.generator.eval()
        try:
            target = batch.target.to(session.device).contiguous(memory_format=session.memory_format)
            with session.autocast():
                swap = self.generator(target, batch.source_identity.to(session.device))
                self_swap = self.generator(target, batch.target_identity.to(session.device))
        finally:
            self.generator.train(was_training)
        return {
            "source": to_hwc(batch.source),
            "target": to_hwc(batch.target),
            "swap": to_hwc(swap),
            "self-swap": to_hwc(self_swap),
        }

    def preview(self, step: int) -> Path | None:
        from swaplab.provenance import Provenance, write_marked_image

        images = self.render_eval_pairs()
        grid = compose_grid([images[c] for c in PREVIEW_COLUMNS], names=PREVIEW_COLUMNS, title=f"step {step}")
        folder = self.session.previews
        path = save_preview(grid, folder, step, model_id="swaplab-oneshot-training")
        # Strips for the study report: every run of a study shows the same pairs in the same order.
        provenance = Provenance.create("swaplab-oneshot-training", content=f"eval swaps step {step}")
        write_marked_image(folder / "eval-swaps.png", _row(images["swap"]), provenance)
        write_image(folder / "eval-sources.png", _row(images["source"]))
        write_image(folder / "eval-targets.png", _row(images["target"]))
        batch = self.eval_batch
        atomic_write_json(
            folder / "eval-pairs.json",
            {
                "resolution": self.cfg.model.resolution,
                "step": step,
                "people": self.eval_source,
                "pairs": [{"source": s, "target": t} for s, t in zip(batch.source_ids, batch.target_ids)],
            },
        )
        return path

    def data_hashes(self) -> dict[str, Any]:
        return {
            "train": self.data.content_hashes(),
            "eval": self.eval_data.content_hashes() if self.cfg.data.eval else [],
        }

    def trainer_state(self, step: int) -> dict[str, Any]:
        return {"kind": "oneshot", "pairs_seen": step * self.samples_per_step}

    def wants_final_preview(self, stop_reason: str) -> bool:
        # A finished run evaluated again still needs its fixed-pair strips for the study report.
        return super().wants_final_preview(stop_reason) or not (self.session.previews / "eval-swaps.png").is_file()

    # ------------------------------------------------------------ export

    @classmethod
    def export(
        cls, cfg: OneShotTrainConfig, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]
    ) -> dict[str, Any]:
        # The generator alone swaps; the discriminator stays in the run.
        generator = GanPair.generator_weights(tensors)
        super().export(cfg, generator, out_dir, state)
        loss_network = cfg.gan.identity_network if cfg.loss.identity.weight else None
        loss_config = to_dict(cfg.loss)
        loss_config["identity"]["network"] = cfg.gan.identity_network
        return {
            "swapper": "identity-conditioned",
            "identity": {"conditions_on": "dlib-resnet", "loss_network": loss_network},
            "alignment": alignment_of(cfg.data.train[0]) if cfg.data.train else {"template": "whole_face"},
            "loss_config": loss_config,
            "split": {"trained_on": "peopleDevTrain.txt", "evaluate_on": "peopleDevTest.txt"},
            "conventions": (
                "generator(target (N, 3, R, R) float32 RGB in [0, 1], source identity (N, 128)) -> swap (N, 3, R, R); "
                "the source identity is the dlib-resnet embedding of a photo of the source person"
            ),
        }


def read_eval_pairs(run_dir: str | Path) -> dict[str, Any]:
    """``previews/eval-pairs.json`` of a one-shot run (the fixed pairs its previews show)."""
    return json.loads((Path(run_dir) / "previews" / "eval-pairs.json").read_text(encoding="utf-8"))
