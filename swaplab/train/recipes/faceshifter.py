"""FaceShifter's two training phases on the one loop: AEI-Net (``model=faceshifter-*``), then
HEAR-Net on a finished AEI-Net (``model=hearnet-* aei=RUN_OR_MODEL``).

Both reuse the one-shot recipe's data (``peopleDevTrain`` pairs, fixed ``peopleDevTest`` preview
pairs), previews and export. AEI-Net: per step one discriminator update (multi-scale PatchGAN,
hinge) on the targets and the detached swaps, then one generator update through it with the
adversarial, attribute, identity and same-person reconstruction losses. HEAR-Net: AEI-Net frozen
(no gradients, batch norm in eval), occluders pasted onto the targets (``swaplab.train.occlusion``)
so the refiner learns to bring back what the swap loses; its export holds both networks.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from swaplab.config import ConfigError, config_group, from_dict, group_field, to_dict
from swaplab.losses import LossTerms
from swaplab.losses.faceshifter import FaceShifterLossConfig, FaceShifterObjective, HearLossConfig, HearObjective
from swaplab.models.faceshifter import FaceShifter, FaceShifterConfig, HearNetConfig, create_discriminator
from swaplab.train.config import TEST_SETTINGS, TrainerConfig, register_trainer
from swaplab.train.data import stream_seed
from swaplab.train.occlusion import OcclusionConfig, paste_occluders
from swaplab.train.oneshot_data import OneShotPairs
from swaplab.train.preview import to_hwc
from swaplab.train.recipe import RECIPES, GanPair, Recipe, StepResult
from swaplab.train.recipes.oneshot import OneShotRecipe
from swaplab.train.recipes.oneshot_config import GanConfig, OneShotDataConfig
from swaplab.train.recipes.per_pair import alignment_of
from swaplab.train.session import apply_gradients

Tensor = torch.Tensor

#: The network whose descriptors the extraction stores in every faceset record.
STORED_IDENTITY = "dlib-resnet"

# FaceShifter's optimiser for both players: Adam, lr 4e-4, betas (0, 0.999).
register_trainer("faceshifter", lr=4e-4, betas=(0.0, 0.999), warmup_steps=0, keep_last=2)
register_trainer("faceshifter-paper", like="faceshifter", steps=500_000, preview_every=1000, checkpoint_every=5000)
#: CPU runs with model=faceshifter-tiny (see docs/faceshifter.md for the step time).
register_trainer(
    "faceshifter-tiny", like="faceshifter", steps=600, log_every=10, preview_every=100, checkpoint_every=100
)
register_trainer("faceshifter-test", like="faceshifter", steps=4, batch_size=4, checkpoint_every=2, **TEST_SETTINGS)


@dataclass
class FaceShifterTrainConfig:
    """An AEI-Net training run; saved as the run's ``config.yaml``."""

    model: FaceShifterConfig = group_field(lambda: config_group("model").create("faceshifter-tiny"), "model")
    data: OneShotDataConfig = field(default_factory=OneShotDataConfig)
    loss: FaceShifterLossConfig = group_field(lambda: config_group("loss").create("faceshifter"), "loss")
    gan: GanConfig = field(default_factory=GanConfig)
    trainer: TrainerConfig = group_field(lambda: config_group("trainer").create("faceshifter-tiny"), "trainer")
    run_dir: str = "runs/faceshifter"


@dataclass
class HearTrainConfig:
    """A HEAR-Net run on a finished AEI-Net: ``aei`` is its run folder or exported model folder.

    ``gan.identity_network`` is the identity loss' network (HEAR-Net has no discriminator).
    """

    model: HearNetConfig = group_field(lambda: config_group("model").create("hearnet-tiny"), "model")
    aei: str = ""
    data: OneShotDataConfig = field(default_factory=OneShotDataConfig)
    loss: HearLossConfig = group_field(lambda: config_group("loss").create("hearnet"), "loss")
    occlusion: OcclusionConfig = field(default_factory=OcclusionConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    trainer: TrainerConfig = group_field(lambda: config_group("trainer").create("faceshifter-tiny"), "trainer")
    run_dir: str = "runs/hearnet"


def embed_all(pairs: OneShotPairs, encoder: nn.Module, batch_size: int = 64) -> Tensor:
    """Embeddings (len(pairs), D) of every face of ``pairs`` by ``encoder`` (aligned crops -> embeddings)."""
    rows = range(len(pairs))
    with torch.no_grad():
        return torch.cat([encoder(pairs._images(rows[i : i + batch_size])).float().cpu() for i in rows[::batch_size]])


def _card_fields(cfg: Any, model: FaceShifterConfig) -> dict[str, Any]:
    loss_config = to_dict(cfg.loss)
    loss_config["identity"]["network"] = cfg.gan.identity_network
    return {
        "swapper": "faceshifter",
        "identity": {
            "conditions_on": model.identity_network,
            "loss_network": cfg.gan.identity_network if cfg.loss.identity.weight else None,
        },
        "alignment": alignment_of(cfg.data.train[0]) if cfg.data.train else {"template": "whole_face"},
        "loss_config": loss_config,
        "split": {"trained_on": "peopleDevTrain.txt", "evaluate_on": "peopleDevTest.txt"},
        "conventions": (
            "model(target (N, 3, R, R) float32 RGB in [0, 1], source identity (N, D)[, target identity (N, D)]) "
            f"-> swap (N, 3, R, R); identities are {model.identity_network} embeddings; the target identity "
            "turns HEAR-Net on"
        ),
    }


class ConditionedRecipe(OneShotRecipe):
    """A one-shot recipe whose model is conditioned on ``conditioning``'s embeddings: the faces are
    embedded by it once, up front, when it is not the network the facesets store; and the identity
    loss, when its network (``gan.identity_network``) is another, compares with the source's
    embedding by that network."""

    def setup_identities(self, conditioning: str, identity_dim: int) -> None:
        stored = self.data.identities
        if conditioning != STORED_IDENTITY:
            self._condition_on(conditioning, identity_dim)
        loss_network = self.cfg.gan.identity_network
        self.loss_identities: Tensor | None = None
        if self.cfg.loss.identity.weight and loss_network != conditioning:
            encoder = self.loss_identity_encoder(loss_network)
            self.loss_identities = stored if loss_network == STORED_IDENTITY else embed_all(self.data, encoder)
        self.face_rows = {face: k for k, face in enumerate(self.data.ids)}

    def _condition_on(self, network: str, identity_dim: int) -> None:
        """Replace the stored descriptors by ``network``'s embeddings of the crops."""
        encoder = self.loss_identity_encoder(network)
        for pairs in {id(p): p for p in (self.data, self.eval_data)}.values():
            pairs.identities = embed_all(pairs, encoder)
        if self.data.identities.shape[1] != identity_dim:
            dim = self.data.identities.shape[1]
            raise ConfigError(f"{network} embeds in {dim} dimensions: set model.identity_dim={dim}")
        batch, ids = self.eval_batch, self.eval_data.ids
        self.eval_batch = batch._replace(
            source_identity=self.eval_data.identities[[ids.index(i) for i in batch.source_ids]],
            target_identity=self.eval_data.identities[[ids.index(i) for i in batch.target_ids]],
        )

    def loss_targets(self, source_identity: Tensor) -> Tensor:
        """The identity loss' targets for the last batch: the sources' embeddings by the loss' network."""
        if self.loss_identities is None:
            return source_identity
        rows = [self.face_rows[face] for face in self.last_batch.source_ids]
        return self.loss_identities[rows].to(source_identity.device)


@RECIPES.register("faceshifter")
class FaceShifterRecipe(ConditionedRecipe):
    """Trains AEI-Net and its discriminator on ``data.train`` (peopleDevTrain people)."""

    name = "faceshifter"
    config_type = FaceShifterTrainConfig

    def __init__(self, cfg: FaceShifterTrainConfig, session: Any) -> None:
        super().__init__(cfg, session)
        if cfg.model.with_hear:
            raise ConfigError("HEAR-Net trains in its own phase on a finished AEI-Net: model=hearnet-tiny aei=RUN")
        self.setup_identities(cfg.model.identity_network, cfg.model.identity_dim)

    def create_objective(self) -> nn.Module:
        cfg = self.cfg
        identity = self.loss_identity_encoder(cfg.gan.identity_network) if cfg.loss.identity.weight else None
        return FaceShifterObjective(cfg.loss, identity_encoder=identity).to(self.session.device)

    def build(self) -> nn.Module:
        return GanPair(FaceShifter(self.cfg.model), create_discriminator(self.cfg.model))

    def train_step(self, step: int) -> StepResult:
        """One discriminator and one generator update."""
        session, objective = self.session, self.objective
        world, clip = session.dist.world_size, session.trainer.grad_clip
        target, source_identity, same = self._inputs(step)
        generator, discriminator = self.generator, self.discriminator
        with session.autocast():
            fake, target_attributes = generator.aei(target, source_identity)

        with session.autocast():
            d_terms = objective.discriminator_loss(discriminator, target, fake.float())
        d_terms.total.backward()
        d_ok, d_norm = apply_gradients(self.optimizers["discriminator"], d_terms.total.detach(), clip, world, True)

        discriminator.requires_grad_(False)
        try:
            with session.autocast():
                fake_out = discriminator(fake) if objective.needs_fake_output else None
                real_out = None
                if objective.needs_real_output:
                    with torch.no_grad():
                        real_out = discriminator(target)
                g_terms: LossTerms = objective.generator_loss(
                    fake.float(),
                    target.float(),
                    self.loss_targets(source_identity),
                    same,
                    lambda: generator.attributes(fake),
                    target_attributes,
                    fake_out,
                    real_out,
                )
            g_terms.total.backward()
        finally:
            discriminator.requires_grad_(True)
        g_ok, g_norm = apply_gradients(self.optimizers["generator"], g_terms.total.detach(), clip, world, True)

        values = {"loss": float(g_terms.total.detach()), "d_loss": float(d_terms.total.detach())}
        values.update({f"loss/{k}": float(v) for k, v in g_terms.components.items()})
        values.update({f"d_loss/{k}": float(v) for k, v in d_terms.components.items()})
        values.update(grad_norm=g_norm, d_grad_norm=d_norm)
        return StepResult(d_ok and g_ok, values)

    def trainer_state(self, step: int) -> dict[str, Any]:
        return {"kind": "faceshifter", "pairs_seen": step * self.samples_per_step}

    @classmethod
    def export(
        cls, cfg: FaceShifterTrainConfig, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]
    ) -> dict[str, Any]:
        return {**super().export(cfg, tensors, out_dir, state), **_card_fields(cfg, cfg.model)}


def tensors_sha256(tensors: dict[str, Tensor]) -> str:
    """SHA-256 of named tensors (names and raw bytes, in name order): which AEI-Net a HEAR run froze."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_aei(path: str | Path) -> tuple[FaceShifterConfig, dict[str, Tensor]]:
    """(config, weights) of a trained AEI-Net: an exported model folder or a ``faceshifter`` run folder."""
    from swaplab.models.card import CardError, load_weights, read_card
    from swaplab.train.checkpoint import load_latest_good
    from swaplab.train.run import read_run_config

    path = Path(path)
    if (path / "config.yaml").is_file():
        recipe, run_cfg = read_run_config(path)
        if recipe.name != "faceshifter":
            raise ConfigError(f"aei={path} is a {recipe.name} run, not a FaceShifter (AEI-Net) run")
        ckpt, _ = load_latest_good(path / "checkpoints", with_optimizer=False)
        if ckpt is None:
            raise ConfigError(f"aei={path} has no usable checkpoint: train it first")
        weights = GanPair.generator_weights(ckpt.model)
        return run_cfg.model, weights
    try:
        card, weights_path = read_card(path)
    except CardError as err:
        raise ConfigError(f"aei={path}: {err}") from None
    if card.get("arch") != "faceshifter":
        raise ConfigError(f"aei={path} is a {card.get('arch')} model, not a FaceShifter (AEI-Net) model")
    return from_dict(FaceShifterConfig, card["model"], prefix="model"), load_weights(card, weights_path)


@RECIPES.register("hearnet")
class HearRecipe(ConditionedRecipe):
    """Trains HEAR-Net on occluded ``data.train`` targets with a finished AEI-Net frozen."""

    name = "hearnet"
    config_type = HearTrainConfig

    def __init__(self, cfg: HearTrainConfig, session: Any) -> None:
        if not cfg.aei:
            raise ConfigError(
                "aei must name a trained AEI-Net: its run folder or exported model (aei=runs/faceshifter)"
            )
        aei_config, self.aei_weights = load_aei(cfg.aei)
        if aei_config.with_hear:
            raise ConfigError(f"aei={cfg.aei} already has a HEAR-Net; give the AEI-Net run it was trained on")
        if aei_config.resolution != cfg.model.resolution:
            raise ConfigError(
                f"model.resolution {cfg.model.resolution} must be the AEI-Net's {aei_config.resolution} px"
            )
        self.full_config = dataclasses.replace(aei_config, with_hear=True, hear=cfg.model)
        self.aei_sha256 = tensors_sha256(self.aei_weights)
        super().__init__(cfg, session)
        # HEAR's heuristic error needs each target's own embedding, as the exported swapper computes it.
        self.own_identity = self.loss_identity_encoder(aei_config.identity_network)
        self.setup_identities(aei_config.identity_network, aei_config.identity_dim)

    def create_objective(self) -> nn.Module:
        cfg = self.cfg
        identity = self.loss_identity_encoder(cfg.gan.identity_network) if cfg.loss.identity.weight else None
        return HearObjective(cfg.loss, identity_encoder=identity).to(self.session.device)

    def build(self) -> nn.Module:
        model = FaceShifter(self.full_config)
        result = model.load_state_dict(self.aei_weights, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("hear.")]
        if missing or result.unexpected_keys:
            raise ConfigError(
                f"aei={self.cfg.aei}: weights do not fit its config ({missing or result.unexpected_keys})"
            )
        model.freeze_aei()
        return model

    def param_groups(self, module: nn.Module) -> dict[str, list[dict[str, Any]]]:
        return {"model": [{"params": list(module.hear.parameters())}]}

    @property
    def generator(self) -> FaceShifter:
        return self.module  # type: ignore[return-value]

    def refine(self, occluded: Tensor, source_identity: Tensor) -> tuple[Tensor, Tensor]:
        """(HEAR-refined swap, AEI swap) of occluded targets; AEI-Net and the embeddings run without gradients."""
        model = self.generator
        with torch.no_grad(), self.session.autocast():
            own = self.own_identity(occluded)
            z_att = model.attributes(occluded)
            aei_swap = model.generator(source_identity, z_att)
            error = occluded - model.generator(own, z_att)
        with self.session.autocast():
            return model.hear(aei_swap, error), aei_swap

    def train_step(self, step: int) -> StepResult:
        session = self.session
        target, source_identity, same = self._inputs(step)
        seed = stream_seed("hear-occlusion", session.trainer.seed, step, session.dist.rank)
        occluded, _ = paste_occluders(target, seed, self.cfg.occlusion)
        occluded = occluded.contiguous(memory_format=session.memory_format)
        refined, aei_swap = self.refine(occluded, source_identity)
        terms: LossTerms = self.objective(
            refined.float(), aei_swap.float(), occluded.float(), self.loss_targets(source_identity), same
        )
        terms.total.backward()
        clip, world = session.trainer.grad_clip, session.dist.world_size
        ok, norm = apply_gradients(self.optimizers["model"], terms.total.detach(), clip, world, True)
        values = {"loss": float(terms.total.detach()), "grad_norm": norm}
        values.update({f"loss/{k}": float(v) for k, v in terms.components.items()})
        return StepResult(ok, values)

    @torch.no_grad()
    def render_eval_pairs(self) -> dict[str, np.ndarray]:
        """The fixed pairs with occluded targets: sources, targets, HEAR swaps and HEAR self-swaps."""
        batch, session = self.eval_batch, self.session
        target = batch.target.to(session.device)
        occluded, _ = paste_occluders(
            target, stream_seed("hear-eval-occlusion", self.cfg.data.seed), self.cfg.occlusion
        )
        swap, _ = self.refine(occluded, batch.source_identity.to(session.device))
        self_swap, _ = self.refine(occluded, batch.target_identity.to(session.device))
        return {
            "source": to_hwc(batch.source),
            "target": to_hwc(occluded),
            "swap": to_hwc(swap),
            "self-swap": to_hwc(self_swap),
        }

    def data_hashes(self) -> dict[str, Any]:
        return {**super().data_hashes(), "aei": {"path": str(self.cfg.aei), "weights_sha256": self.aei_sha256}}

    def trainer_state(self, step: int) -> dict[str, Any]:
        return {
            "kind": "hearnet",
            "pairs_seen": step * self.samples_per_step,
            "faceshifter_model": to_dict(self.full_config),
            "aei_weights_sha256": self.aei_sha256,
        }

    @classmethod
    def export(
        cls, cfg: HearTrainConfig, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]
    ) -> dict[str, Any]:
        # AEI-Net and HEAR-Net ship together: the card describes the whole FaceShifter.
        Recipe.export(cfg, tensors, out_dir, state)
        model = from_dict(FaceShifterConfig, state["trainer"]["faceshifter_model"], prefix="model")
        return {
            "arch": "faceshifter",
            "model": to_dict(model),
            "resolution": model.resolution,
            "hear": {
                "aei": cfg.aei,
                "aei_weights_sha256": state["trainer"].get("aei_weights_sha256"),
                "occlusion": to_dict(cfg.occlusion),
            },
            **_card_fields(cfg, model),
        }
