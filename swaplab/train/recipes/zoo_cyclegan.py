"""The zoo's CycleGAN recipe (``model=cyclegan-digits``, ``cyclegan-faces``): unpaired translation A <-> B.

Domains: ``domain_b=inverted`` (the default, for quick checks): ``data``'s training images split in two
seeded halves, A the first as they are, B the second colour-inverted (1 - x), so no image is in both;
``domain_b=data_b``: A is ``data``, B is ``data_b`` (e.g. two people's facesets, a swap without pairs:
``model=cyclegan-faces domain_b=data_b data.train=[FACESET_A] data_b.train=[FACESET_B]``).
Loss (the paper's; LSGAN criteria, D's loss halved):
``L_G = L_adv(D_B(G(a))) + L_adv(D_A(F(b))) + lambda_cyc L_cyc(G, F) + lambda_id (E|G(b) - b|_1 + E|F(a) - a|_1)``,
``L_adv(x) = E(x - 1)^2``, ``L_cyc`` = ``CycleConsistencyLoss`` (lambda_cyc 10, lambda_id 5), and
``L_D = 1/2 [E(D_B(b) - 1)^2 + E D_B(G(a))^2] + 1/2 [E(D_A(a) - 1)^2 + E D_A(F(b))^2]``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from swaplab.config import ConfigError, group_field
from swaplab.losses.adversarial import AdversarialKind
from swaplab.losses.cycle import CycleConsistencyLoss
from swaplab.losses.registry import LOSSES
from swaplab.metrics import frechet_distance
from swaplab.models.generative import GenerativeModel
from swaplab.models.zoo.cyclegan import CycleGAN, CycleGANConfig, patch_discriminators
from swaplab.train.config import TrainerConfig
from swaplab.train.data import EpochStream
from swaplab.train.image_data import ImageData, ImageDataConfig
from swaplab.train.recipe import RECIPES, StepResult
from swaplab.train.recipes.generative import PREVIEW_ROWS, TwoPlayerRecipe

Tensor = torch.Tensor


@dataclass
class CycleGANLossConfig:
    """The weights of CycleGAN's generator terms (0 drops a term; the adversarial one stays)."""

    adversarial: AdversarialKind = "lsgan"
    cycle: float = 10.0  # lambda_cyc
    identity: float = 5.0  # lambda_id (the paper: 0.5 lambda_cyc)


@dataclass
class CycleGANTrainConfig:
    model: CycleGANConfig = group_field(CycleGANConfig, "model")
    data: ImageDataConfig = group_field(ImageDataConfig, "data")  # domain A (and B's source with inverted)
    data_b: ImageDataConfig = group_field(ImageDataConfig, "data")  # domain B with domain_b=data_b
    domain_b: Literal["inverted", "data_b"] = "inverted"
    loss: CycleGANLossConfig = field(default_factory=CycleGANLossConfig)
    trainer: TrainerConfig = group_field("zoo", "trainer")
    run_dir: str = "runs/cyclegan"

    def __post_init__(self) -> None:
        if self.loss.cycle < 0 or self.loss.identity < 0:
            raise ConfigError("loss.cycle and loss.identity must be >= 0")
        if self.domain_b == "inverted" and (self.data_b.source == "faceset" or self.data_b.train):
            raise ConfigError("data_b names facesets but domain_b=inverted ignores it: set domain_b=data_b")


class Domain:
    """One domain's training images (uint8 (N, C, R, R)) and held-out images, batches drawn by step from the
    domain's own stream (so A and B batches are unpaired), optionally colour-inverted; ``source`` is the
    ``ImageData`` they come from."""

    def __init__(
        self, source: ImageData, images: Tensor, heldout: Tensor, seed: int, stream: str, inverted: bool
    ) -> None:
        self.source, self.images, self.heldout_images, self.inverted = source, images, heldout, inverted
        self.stream = EpochStream(len(images), seed, stream)

    def _floats(self, images: Tensor) -> Tensor:
        out = images.float().div(255.0)
        return 1.0 - out if self.inverted else out

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Tensor:
        positions = self.stream.positions((step * world_size + rank) * batch_size, batch_size)
        return self._floats(self.images[positions])

    def heldout(self, count: int = 0) -> Tensor:
        return self._floats(self.heldout_images[: count or None])


def unpaired_domains(cfg: CycleGANTrainConfig, data: ImageData) -> tuple[Domain, Domain]:
    """(A, B) as ``cfg.domain_b`` says (see the module docstring); ``data`` is ``ImageData`` of ``cfg.data``.
    With ``inverted`` both domains hold out ``data``'s held-out images (B's inverted): only validation and
    pictures see them, and the same digit on both sides makes the pictures easy to read."""
    seed = cfg.data.seed
    if cfg.domain_b == "inverted":
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        half = len(order) // 2
        first, second = order[:half].sort().values, order[half:].sort().values
        held = data.heldout_images
        return (
            Domain(data, data.images[first], held, seed, "cyclegan-a", inverted=False),
            Domain(data, data.images[second], held, seed, "cyclegan-b", inverted=True),
        )
    other = ImageData(cfg.data_b.resolved(cfg.model))
    if other.shape != data.shape:
        raise ConfigError(f"data_b's images {other.shape} differ from data's {data.shape} (C, R, R)")
    return (
        Domain(data, data.images, data.heldout_images, seed, "cyclegan-a", inverted=False),
        Domain(other, other.images, other.heldout_images, cfg.data_b.seed, "cyclegan-b", inverted=False),
    )


@RECIPES.register("cyclegan")
class CycleGANRecipe(TwoPlayerRecipe):
    """Trains CycleGAN's G and F against D_A and D_B (see the module docstring)."""

    name = "cyclegan"
    config_type = CycleGANTrainConfig

    def __init__(self, cfg: CycleGANTrainConfig, session: Any) -> None:
        super().__init__(cfg, session)
        self.domain_a, self.domain_b = unpaired_domains(cfg, self.data)
        self.adversarial = LOSSES.create(cfg.loss.adversarial)
        self.cycle = CycleConsistencyLoss("l1")
        self.pixel = LOSSES.create("pixel", "l1")

    @property
    def model(self) -> CycleGAN:
        return super().model  # type: ignore[return-value]

    def build_players(self) -> tuple[GenerativeModel, nn.Module]:
        return CycleGAN(self.cfg.model), patch_discriminators(self.cfg.model)

    def data_hashes(self) -> dict[str, Any]:
        hashes = super().data_hashes()
        if self.domain_b.source is not self.data:
            hashes["images_b"] = self.domain_b.source.content_hash()
        return hashes

    def domain_batches(self, step: int) -> tuple[Tensor, Tensor]:
        session = self.session
        args = (step, session.trainer.batch_size, session.dist.rank, session.dist.world_size)

        def on_device(images: Tensor) -> Tensor:
            return images.to(session.device).contiguous(memory_format=session.memory_format)

        return on_device(self.domain_a.batch(*args)), on_device(self.domain_b.batch(*args))

    def train_step(self, step: int) -> StepResult:
        weights, session = self.cfg.loss, self.session
        a, b = self.domain_batches(step)
        with session.autocast():
            fake_b, fake_a = self.model.translate(a, "a2b"), self.model.translate(b, "b2a")

        # 1. D_B on real b vs G(a), D_A on real a vs F(b), each halved (the paper slows D down so)
        d_parts: dict[str, Tensor] = {}
        with session.autocast():
            for name, real, fake in (("b", b, fake_b), ("a", a, fake_a)):
                critic = self.discriminator[name]
                real_term, fake_term = self.adversarial.discriminator_terms(critic(real), critic(fake.detach()))
                d_parts[f"{name}_real"], d_parts[f"{name}_fake"] = 0.5 * real_term, 0.5 * fake_term
        d_loss = torch.stack(list(d_parts.values())).sum()
        d_ok, d_norm = self.update("discriminator", d_loss)

        # 2. G and F together, through the critics just updated
        with self.frozen_discriminator():
            with session.autocast():
                parts = {
                    "adversarial_b": self.adversarial.generator_loss(self.discriminator["b"](fake_b)),
                    "adversarial_a": self.adversarial.generator_loss(self.discriminator["a"](fake_a)),
                }
                if weights.cycle:
                    g = functools.partial(self.model.translate, direction="a2b")
                    f = functools.partial(self.model.translate, direction="b2a")
                    cycle_a, cycle_b = self.cycle.terms(g, f, a, b, fake_b, fake_a)
                    parts["cycle_a"], parts["cycle_b"] = weights.cycle * cycle_a, weights.cycle * cycle_b
                if weights.identity:
                    parts["identity_b"] = weights.identity * self.pixel(self.model.translate(b, "a2b"), b)
                    parts["identity_a"] = weights.identity * self.pixel(self.model.translate(a, "b2a"), a)
            g_loss = torch.stack([v.float() for v in parts.values()]).sum()
            g_ok, g_norm = self.update("generator", g_loss)

        values = {"loss": float(g_loss.detach()), "d_loss": float(d_loss.detach())}
        values.update({f"loss/{k}": float(v.detach()) for k, v in parts.items()})
        values.update({f"d_loss/{k}": float(v.detach()) for k, v in d_parts.items()})
        values.update(grad_norm=g_norm, d_grad_norm=d_norm)
        return StepResult(d_ok and g_ok, values)

    # ------------------------------------------------------------ pictures and held-out numbers

    @torch.no_grad()
    def pictures(self) -> dict[str, Tensor]:
        """Rows: held-out A, G(A), F(G(A)), held-out B, F(B), G(F(B))."""
        model, device = self.model, self.session.device
        out: dict[str, Tensor] = {}
        with self.session.autocast():
            for side, there, back in (("A", "a2b", "b2a"), ("B", "b2a", "a2b")):
                domain = self.domain_a if side == "A" else self.domain_b
                images = domain.heldout(PREVIEW_ROWS)
                translated = model.translate(images.to(device), there)
                out[side] = images
                out[_label(there, side)] = translated.float().cpu()
                out[_label(back, _label(there, side))] = model.translate(translated, back).float().cpu()
        return {k: v.clamp(0, 1) for k, v in out.items()}

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        """The base's ``val/reconstruction_mse`` (the cycle a -> G -> F), the cycle b -> F -> G error, and the
        Frechet distances (pixel PCA space) of the translations to the other domain's held-out images."""
        values = super().validate(step)
        held_a, held_b = self.domain_a.heldout(), self.domain_b.heldout()
        device, model = self.session.device, self.model
        to_b = model.translate(held_a.to(device), "a2b").float()
        to_a = model.translate(held_b.to(device), "b2a").float()
        cycled_b = model.translate(to_a, "a2b").float().cpu().clamp(0, 1)
        values["val/cycle_b_mse"] = float(((cycled_b - held_b) ** 2).mean())
        if len(held_a) >= 8 and len(held_b) >= 8:
            features = self._pixel_features
            values["val/fd_a_to_b"] = frechet_distance(features(to_b.cpu().clamp(0, 1)), features(held_b))
            values["val/fd_b_to_a"] = frechet_distance(features(to_a.cpu().clamp(0, 1)), features(held_a))
        return values


def _label(direction: str, of: str) -> str:
    """``G(A)`` for a2b of A, ``F(B)`` for b2a of B (the paper's names of the two maps)."""
    return f"{'G' if direction == 'a2b' else 'F'}({of})"
