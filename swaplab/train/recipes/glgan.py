"""The GL-GAN recipe (``model=glgan-*``): the one-shot recipe's data, previews and export, with
GL-GAN's generators (global U-Net, local eye and mouth generators, fusion) and discriminators
(global multi-scale, local PatchGANs) and its two phases.

Phase 1 (every step before the last ``gan.phase2_steps``): one update of all discriminators on
the targets (real) and the detached swaps (fake), then one update of all generators through
them. Phase 2 (the last ``gan.phase2_steps`` steps of ``trainer.steps``; 0 = off): the article's
second step, the discriminators fine-tuned against the frozen generators. The generators then
run in eval mode under ``no_grad`` (their batch-norm statistics stay too) and their optimiser
never steps, so the discriminators learn against exactly the swaps the exported model makes.
Everything else (pairs from ``peopleDevTrain`` only, flips, lazy gradient penalty, gradient
averaging across processes, the fixed ``peopleDevTest`` preview pairs, the card) is
``OneShotRecipe``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from swaplab.config import ConfigError, config_group, group_field
from swaplab.losses.glgan import GLGANLossConfig, GLGANObjective
from swaplab.models.glgan import (
    GLGANBlendConfig,
    GLGANBlender,
    GLGANConfig,
    GLGANDiscriminator,
    GLGANGenerator,
    GLGANSmoothConfig,
    GLGANSmoother,
)
from swaplab.models.parts import DISCRIMINATORS
from swaplab.train.config import TrainerConfig
from swaplab.train.data import stream_seed
from swaplab.train.oneshot_data import train_pairs
from swaplab.train.recipe import RECIPES, GanPair, Recipe, StepResult
from swaplab.train.recipes.oneshot import OneShotRecipe
from swaplab.train.recipes.oneshot_config import GanConfig, OneShotDataConfig
from swaplab.train.session import apply_gradients

Tensor = torch.Tensor


@dataclass
class GLGANGanConfig(GanConfig):
    """The two-player settings, plus the second phase (discriminators alone, generators frozen)."""

    phase2_steps: int = 0  # the last N of trainer.steps fine-tune only the discriminators (0 = off)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.phase2_steps < 0:
            raise ConfigError(f"gan.phase2_steps must be >= 0, got {self.phase2_steps}")


@dataclass
class GLGANTrainConfig:
    """Everything a GL-GAN training run depends on; saved as the run's ``config.yaml``."""

    model: GLGANConfig = group_field("glgan-tiny", "model")
    data: OneShotDataConfig = field(default_factory=OneShotDataConfig)
    loss: GLGANLossConfig = group_field("glgan", "loss")
    gan: GLGANGanConfig = field(default_factory=GLGANGanConfig)
    trainer: TrainerConfig = group_field("oneshot-tiny", "trainer")
    run_dir: str = "runs/glgan"

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir)


@RECIPES.register("glgan")
class GLGANRecipe(OneShotRecipe):
    """Trains GL-GAN's generators and discriminators on ``data.train`` (peopleDevTrain people)."""

    name = "glgan"
    config_type = GLGANTrainConfig

    def __init__(self, cfg: GLGANTrainConfig, session: Any) -> None:
        super().__init__(cfg, session)
        if cfg.model.template != self.data.template:
            raise ConfigError(
                f"model.template is {cfg.model.template!r} but the facesets are aligned to {self.data.template!r}: "
                "the local crops would miss the eyes and mouth"
            )
        if cfg.gan.phase2_steps >= cfg.trainer.steps:
            raise ConfigError(
                f"gan.phase2_steps ({cfg.gan.phase2_steps}) must be below trainer.steps ({cfg.trainer.steps})"
            )
        self.objective = GLGANObjective(cfg.loss, self.objective).to(session.device)  # type: ignore[arg-type]

    def build(self) -> nn.Module:
        return GanPair(GLGANGenerator(self.cfg.model), GLGANDiscriminator(self.cfg.model))

    @property
    def phase2_start(self) -> int:
        """The first (0-based) step of phase 2."""
        return self.cfg.trainer.steps - self.cfg.gan.phase2_steps if self.cfg.gan.phase2_steps else 2**62

    def train_step(self, step: int) -> StepResult:
        """Phase 1: one discriminator and one generator update; phase 2: the discriminators only."""
        session, objective = self.session, self.objective
        world, clip = session.dist.world_size, session.trainer.grad_clip
        target, source_identity, same = self._inputs(step)
        phase2 = step >= self.phase2_start
        generator: GLGANGenerator = self.generator  # type: ignore[assignment]
        if phase2:
            generator.eval()
            try:
                with torch.no_grad(), session.autocast():
                    fake = generator(target, source_identity)
            finally:
                generator.train()
        else:
            with session.autocast():
                fake = generator(target, source_identity)

        gp_every = self.cfg.gan.gp_every
        penalty = gp_every if step % gp_every == 0 else None
        with session.autocast():
            d_terms = objective.discriminator_loss(self.discriminator, target, fake.float(), penalty_every=penalty)
        d_terms.total.backward()
        d_ok, d_norm = apply_gradients(self.optimizers["discriminator"], d_terms.total.detach(), clip, world, True)
        values = {"d_loss": float(d_terms.total.detach()), "phase": 2.0 if phase2 else 1.0, "d_grad_norm": d_norm}
        values.update({f"d_loss/{k}": float(v) for k, v in d_terms.components.items()})
        if phase2:
            return StepResult(d_ok, values)

        self.discriminator.requires_grad_(False)
        try:
            with session.autocast():
                g_terms = objective.generator_loss(self.discriminator, fake, target, source_identity, same)
            g_terms.total.backward()
        finally:
            self.discriminator.requires_grad_(True)
        g_ok, g_norm = apply_gradients(self.optimizers["generator"], g_terms.total.detach(), clip, world, True)
        values.update({"loss": float(g_terms.total.detach()), "grad_norm": g_norm})
        values.update({f"loss/{k}": float(v) for k, v in g_terms.components.items()})
        return StepResult(d_ok and g_ok, values)

    def trainer_state(self, step: int) -> dict[str, Any]:
        return {**super().trainer_state(step), "kind": "glgan", "phase": 2 if step > self.phase2_start else 1}

    @classmethod
    def export(
        cls, cfg: GLGANTrainConfig, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]
    ) -> dict[str, Any]:
        fields = super().export(cfg, tensors, out_dir, state)
        generator = GLGANGenerator(cfg.model)
        fields["glgan"] = {
            "local_generators": list(generator.local_generators),
            "fusion": cfg.model.fusion if generator.local_generators else "none",
            "crops": [box._asdict() for box in generator.boxes],
            "phase2_steps": cfg.gan.phase2_steps,
        }
        return fields


# ---------------------------------------------------------------- blending through the same parts


@dataclass
class BlendLossConfig:
    """The blender's losses: L1 to the real face on the seam band, hinge adversarial on whole faces."""

    name: str = "glgan-blend"
    reconstruction: float = 10.0
    adversarial: float = 1.0
    colour_gain: float = 0.2  # the pasted face's per-channel gain is drawn from 1 +- this
    colour_shift: float = 0.08  # and its per-channel shift from +- this


config_group("loss").register("glgan-blend")(BlendLossConfig)


@dataclass
class GLGANBlendTrainConfig:
    """A blending run: faces of ``data.train`` (peopleDevTrain people) with recoloured pasted faces."""

    model: GLGANBlendConfig = group_field("glgan-blend-tiny", "model")
    data: OneShotDataConfig = field(default_factory=OneShotDataConfig)
    loss: BlendLossConfig = group_field(BlendLossConfig, "loss")
    trainer: TrainerConfig = group_field("oneshot-tiny", "trainer")
    run_dir: str = "runs/glgan-blend"


def paste_mismatched(faces: Tensor, mask: Tensor, gain: float, shift: float, seed: int) -> Tensor:
    """``faces`` whose ``mask`` region is recoloured (per-sample, per-channel gain and shift, seeded):
    a face pasted from another photo, with the colour and light mismatch that leaves a seam."""
    generator = torch.Generator().manual_seed(seed)
    n = len(faces)
    gains = 1.0 + (torch.rand(n, 3, 1, 1, generator=generator) * 2 - 1) * gain
    shifts = (torch.rand(n, 3, 1, 1, generator=generator) * 2 - 1) * shift
    pasted = (faces * gains.to(faces) + shifts.to(faces)).clamp(0.0, 1.0)
    return faces + mask * (pasted - faces)


@RECIPES.register("glgan-blend")
class GLGANBlendRecipe(Recipe):
    """Trains GL-GAN's U-Net to make the seam of a pasted face (the article's blending use).

    Each step takes this rank's target faces, pastes a recoloured copy of their inner face back
    over the template's face hull, and asks the blender for the seam band: L1 to the real face on
    the band, and a PatchGAN judging blended against real faces (hinge). The one-shot recipe's
    data (``peopleDevTrain`` people only) is reused; no identity is involved.
    """

    name = "glgan-blend"
    config_type = GLGANBlendTrainConfig

    def __init__(self, cfg: GLGANBlendTrainConfig, session: Any) -> None:
        from swaplab.losses.registry import LOSSES

        super().__init__(cfg, session)
        if not cfg.data.train:
            raise ConfigError("data.train must name the training faceset folder(s) (peopleDevTrain people)")
        self.data = train_pairs(
            cfg.data.train, cfg.model.resolution, seed=cfg.data.seed, lists_dir=cfg.data.lists_dir or None
        )
        if cfg.model.template != self.data.template:
            raise ConfigError(f"model.template is {cfg.model.template!r}, the facesets' is {self.data.template!r}")
        self.adversarial = LOSSES.create("hinge")

    def build(self) -> nn.Module:
        d = self.cfg.model.discriminator
        discriminator = DISCRIMINATORS.create(
            "patchgan", resolution=self.cfg.model.resolution, dims=d.dims, n_layers=d.n_layers, norm=d.norm
        )
        return GanPair(GLGANBlender(self.cfg.model), discriminator)

    def param_groups(self, module: nn.Module) -> dict[str, list[dict[str, Any]]]:
        return {
            "generator": [{"params": list(module.generator.parameters())}],
            "discriminator": [{"params": list(module.discriminator.parameters())}],
        }

    @property
    def generator(self) -> GLGANBlender:
        return self.module.generator  # type: ignore[union-attr]

    @property
    def discriminator(self) -> nn.Module:
        return self.module.discriminator  # type: ignore[union-attr]

    def composites(self, step: int) -> tuple[Tensor, Tensor]:
        """(real faces, the same faces with a mismatched face pasted in) of ``step``."""
        session = self.session
        batch = self.data.batch(
            step, batch_size=session.trainer.batch_size, rank=session.dist.rank, world_size=session.dist.world_size
        )
        real = batch.target.to(session.device)
        seed = stream_seed("glgan-blend", session.trainer.seed, step, session.dist.rank)
        loss = self.cfg.loss
        composite = paste_mismatched(real, self.generator.mask, loss.colour_gain, loss.colour_shift, seed)
        return real, composite

    #: What the generator is scored on (its name in the metrics) and the inputs' columns in previews.
    region_name = "seam"
    columns = ("real", "pasted", "blended")

    def inputs(self, step: int) -> tuple[Tensor, tuple[Tensor, ...]]:
        """(real faces, the generator's inputs) of ``step``; the first input is what it corrects."""
        real, composite = self.composites(step)
        return real, (composite,)

    @property
    def region(self) -> Tensor:
        """(1, 1, R, R) where the generator's output is scored: the seam band."""
        return self.generator.band

    def train_step(self, step: int) -> StepResult:
        session, cfg = self.session, self.cfg.loss
        world, clip = session.dist.world_size, session.trainer.grad_clip
        real, inputs = self.inputs(step)
        with session.autocast():
            blended = self.generator(*inputs)
            d_real, d_fake = self.adversarial.discriminator_terms(
                self.discriminator(real), self.discriminator(blended.detach())
            )
        d_total = d_real + d_fake
        d_total.backward()
        d_ok, _ = apply_gradients(self.optimizers["discriminator"], d_total.detach(), clip, world, True)

        self.discriminator.requires_grad_(False)
        try:
            region = self.region
            with session.autocast():
                adversarial = self.adversarial.generator_loss(self.discriminator(blended))
            error = ((blended.float() - real).abs() * region).sum() / (region.sum() * 3 * len(real))
            total = cfg.reconstruction * error + cfg.adversarial * adversarial
            total.backward()
        finally:
            self.discriminator.requires_grad_(True)
        g_ok, _ = apply_gradients(self.optimizers["generator"], total.detach(), clip, world, True)
        before = ((inputs[0] - real).abs() * region).sum() / (region.sum() * 3 * len(real))
        name = self.region_name
        values = {
            "loss": float(total.detach()),
            f"loss/{name}_l1": float(cfg.reconstruction * error.detach()),
            "loss/adversarial": float(cfg.adversarial * adversarial.detach()),
            f"{name}_l1_{self.columns[1]}": float(before),  # the same error of the input, for comparison
            "d_loss": float(d_total.detach()),
        }
        return StepResult(d_ok and g_ok, values)

    def preview(self, step: int) -> Path | None:
        from swaplab.train.preview import compose_grid, save_preview, to_hwc

        real, inputs = self.inputs(0)
        inputs = tuple(x[:6] for x in inputs)
        with torch.no_grad():
            made = self.generator(*inputs)
        columns = [to_hwc(real[:6]), to_hwc(inputs[0]), to_hwc(made)]
        grid = compose_grid(columns, names=self.columns, title=f"step {step}")
        return save_preview(grid, self.session.previews, step, model_id=f"swaplab-{self.name}-training")

    def data_hashes(self) -> dict[str, Any]:
        return {"train": self.data.content_hashes()}

    def trainer_state(self, step: int) -> dict[str, Any]:
        return {"kind": self.name, "faces_seen": step * self.samples_per_step}

    #: What the exported card says of the network.
    card_fields = {
        "blender": "seam",
        "conventions": "blender(composite (N, 3, R, R) in [0, 1], mask (N, 1, R, R) or None) -> blended",
    }

    @classmethod
    def export(
        cls, cfg: GLGANBlendTrainConfig, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]
    ) -> dict[str, Any]:
        generator = GanPair.generator_weights(tensors)
        super().export(cfg, generator, out_dir, state)
        return dict(cls.card_fields)


@dataclass
class SmoothLossConfig:
    """The smoother's losses and the frame-to-frame changes it learns to remove: L1 to the real face
    inside the face hull, hinge adversarial on whole faces; each training face is shown as "this
    frame" with a flicker (per-channel gain and shift, noise) over the crop, beside the same face,
    clean, moved by up to ``motion_px`` as "the previous frame"."""

    name: str = "glgan-smooth"
    reconstruction: float = 10.0
    adversarial: float = 1.0
    flicker_gain: float = 0.1
    flicker_shift: float = 0.04
    noise: float = 0.02
    motion_px: float = 2.0


config_group("loss").register("glgan-smooth")(SmoothLossConfig)


@dataclass
class GLGANSmoothTrainConfig:
    """A smoothing run: faces of ``data.train`` (peopleDevTrain people), flickered against a moved clean copy."""

    model: GLGANSmoothConfig = group_field("glgan-smooth-tiny", "model")
    data: OneShotDataConfig = field(default_factory=OneShotDataConfig)
    loss: SmoothLossConfig = group_field(SmoothLossConfig, "loss")
    trainer: TrainerConfig = group_field("oneshot-tiny", "trainer")
    run_dir: str = "runs/glgan-smooth"


def moved(faces: Tensor, max_px: float, seed: int) -> Tensor:
    """``faces`` shifted by a seeded sub-pixel translation of up to ``max_px`` per axis (edges replicated)."""
    generator = torch.Generator().manual_seed(seed)
    n, _, height, width = faces.shape
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * max_px
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 2 * shift[:, 0] / width
    theta[:, 1, 2] = 2 * shift[:, 1] / height
    grid = torch.nn.functional.affine_grid(theta.to(faces), list(faces.shape), align_corners=False)
    return torch.nn.functional.grid_sample(faces, grid, padding_mode="border", align_corners=False)


@RECIPES.register("glgan-smooth")
class GLGANSmoothRecipe(GLGANBlendRecipe):
    """Trains GL-GAN's U-Net to smooth a swap across frames (the article's smoothing use).

    From still faces of ``peopleDevTrain`` people: "this frame" is the face with a seeded flicker
    over the face hull (what a per-frame swap adds between frames), "the previous frame" is the
    same face, clean and moved a little (a track's aligned crops are nearly, not exactly, in
    register); the smoother must give back the real face. Same loop, discriminator and losses as
    the blender, scored inside the face hull instead of the seam band.
    """

    name = "glgan-smooth"
    config_type = GLGANSmoothTrainConfig
    region_name = "face"
    columns = ("real", "flickered", "smoothed")
    card_fields = {
        "smoother": "frames",
        "conventions": "smoother(current (N, 3, R, R) in [0, 1], previous (N, 3, R, R)) -> smoothed",
    }

    def build(self) -> nn.Module:
        d = self.cfg.model.discriminator
        discriminator = DISCRIMINATORS.create(
            "patchgan", resolution=self.cfg.model.resolution, dims=d.dims, n_layers=d.n_layers, norm=d.norm
        )
        return GanPair(GLGANSmoother(self.cfg.model), discriminator)

    @property
    def region(self) -> Tensor:
        return self.generator.mask

    def inputs(self, step: int) -> tuple[Tensor, tuple[Tensor, ...]]:
        session, loss = self.session, self.cfg.loss
        batch = self.data.batch(
            step, batch_size=session.trainer.batch_size, rank=session.dist.rank, world_size=session.dist.world_size
        )
        real = batch.target.to(session.device)
        seed = stream_seed("glgan-smooth", session.trainer.seed, step, session.dist.rank)
        # The whole crop flickers, as a model's rendered crop does from frame to frame: the only
        # steady reference is the previous frame (a flicker inside the face alone would be read off
        # the face's own surroundings, which the swap's rendered crop does not have).
        everywhere = torch.ones_like(self.generator.mask)
        flickered = paste_mismatched(real, everywhere, loss.flicker_gain, loss.flicker_shift, seed)
        noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(seed + 1)).to(real)
        flickered = (flickered + loss.noise * noise).clamp(0.0, 1.0)
        return real, (flickered, moved(real, loss.motion_px, seed + 2))
