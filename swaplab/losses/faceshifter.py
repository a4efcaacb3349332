"""FaceShifter's losses: the multi-level attribute loss, AEI-Net's weighted objective and HEAR-Net's.

AEI-Net (Li et al., "FaceShifter", 2019): ``adversarial 1 + attribute 10 + identity 5 +
reconstruction 10``, every weight overridable (0 drops the term). The attribute loss is
``1/2 sum_k ||z_att^k(Y) - z_att^k(X_t)||^2``; reconstruction ``1/2 ||Y - X_t||^2`` on the pairs
whose source is the target's person. HEAR-Net: ``identity + change ||Y' - Y_hat||_1 +
reconstruction``, all weight 1. Everything in float32; no models are built or run here (the
attribute maps and discriminator outputs come in from the training loop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from swaplab.config import config_group
from swaplab.losses.adversarial import (
    AdversarialTerm,
    FeatureMatchingTerm,
    IdentitySwapObjective,
    same_identity_reconstruction,
)
from swaplab.losses.identity import IdentityEncoder, IdentityLoss
from swaplab.losses.objective import IdentityTerm, LossTerms, PixelTerm
from swaplab.losses.registry import LOSSES

Tensor = torch.Tensor
Reduction = Literal["mean", "sum"]


def attribute_loss(swapped: Sequence[Tensor], target: Sequence[Tensor], reduction: Reduction = "mean") -> Tensor:
    """``1/2 sum_k d(z_att^k(Y), z_att^k(X_t))``, averaged over the batch.

    ``reduction="sum"``: d is the squared L2 norm of each sample's level (the paper's formula as
    written, whose size grows with the maps); ``"mean"`` (default): the mean squared difference
    over each level's elements, so the paper's weight of 10 stays meaningful at any resolution and
    width (FaceShifter's public re-implementations scale it this way).
    """
    if len(swapped) != len(target) or not swapped:
        raise ValueError(f"need the same non-zero number of levels, got {len(swapped)} and {len(target)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    total = swapped[0].new_zeros((), dtype=torch.float32)
    for a, b in zip(swapped, target):
        if a.shape != b.shape:
            raise ValueError(f"attribute levels differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
        squared = (a.float() - b.float()).square()
        total = total + (squared.mean() if reduction == "mean" else squared.flatten(1).sum(1).mean())
    return 0.5 * total


@LOSSES.register("attribute")
class AttributeLoss(nn.Module):
    """``attribute_loss`` as a module: ``forward(swapped_levels, target_levels)``."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, swapped: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
        return attribute_loss(swapped, target, self.reduction)


@dataclass
class AttributeTerm:
    weight: float = 10.0
    reduction: Reduction = "mean"


@dataclass
class FaceShifterLossConfig:
    """AEI-Net's losses with the paper's weights (feature matching, not in the paper, off)."""

    name: str = "faceshifter"
    adversarial: AdversarialTerm = field(default_factory=AdversarialTerm)
    attribute: AttributeTerm = field(default_factory=AttributeTerm)
    identity: IdentityTerm = field(default_factory=lambda: IdentityTerm(weight=5.0))
    reconstruction: PixelTerm = field(default_factory=lambda: PixelTerm(weight=10.0, norm="l2"))
    feature_matching: FeatureMatchingTerm = field(default_factory=lambda: FeatureMatchingTerm(weight=0.0))


@dataclass
class HearLossConfig:
    """HEAR-Net's losses: identity, change (L1 to the AEI swap) and reconstruction, all weight 1."""

    name: str = "hearnet"
    identity: IdentityTerm = field(default_factory=lambda: IdentityTerm(weight=1.0))
    change: PixelTerm = field(default_factory=lambda: PixelTerm(weight=1.0, norm="l1"))
    reconstruction: PixelTerm = field(default_factory=lambda: PixelTerm(weight=1.0, norm="l2"))


config_group("loss").register("faceshifter")(FaceShifterLossConfig)
config_group("loss").register("hearnet")(HearLossConfig)


def _half_if_squared(term: PixelTerm) -> float:
    """The paper's 1/2 in front of squared errors (none for L1)."""
    return 0.5 if term.norm == "l2" else 1.0


class FaceShifterObjective(IdentitySwapObjective):
    """AEI-Net's generator and discriminator losses from a ``FaceShifterLossConfig``: the shared
    one-shot terms (with the paper's 1/2 on a squared reconstruction) plus the attribute loss.

    Terms with weight 0 are neither built nor computed; ``identity_encoder`` (aligned crops ->
    embeddings) is required when identity.weight > 0. Both methods return ``LossTerms``.
    """

    def __init__(self, cfg: FaceShifterLossConfig, identity_encoder: IdentityEncoder | None = None) -> None:
        super().__init__(cfg, identity_encoder)
        self.attribute = AttributeLoss(cfg.attribute.reduction) if cfg.attribute.weight else None

    def reconstruction_scale(self, term: PixelTerm) -> float:
        return _half_if_squared(term)

    def generator_loss(
        self,
        swapped: Tensor,
        target: Tensor,
        source_identity: Tensor,
        same_identity: Tensor,
        swapped_attributes: Callable[[], Sequence[Tensor]] | None = None,
        target_attributes: Sequence[Tensor] | None = None,
        fake_output: Any | None = None,
        real_output: Any | None = None,
    ) -> LossTerms:
        """G's loss for swaps (N, 3, R, R) of ``target`` with ``source_identity`` (N, D).

        ``swapped_attributes``: a callable giving z_att(swapped) (called only when the attribute
        term is on, so the encoder does not run otherwise); ``target_attributes``: z_att(target).
        ``fake_output``/``real_output``: D(swapped) with gradients / D(target), as in SimSwap's.
        """
        parts = self.shared_terms(swapped, target, source_identity, same_identity, fake_output, real_output)
        if self.attribute is not None:
            if swapped_attributes is None or target_attributes is None:
                raise ValueError("the attribute term needs the attributes of the swap and of the target")
            parts["attribute"] = self.cfg.attribute.weight * self.attribute(swapped_attributes(), target_attributes)
        return LossTerms.of(parts, "generator")

    def discriminator_loss(self, discriminator: Callable[[Tensor], Any], real: Tensor, fake: Tensor) -> LossTerms:
        """D's loss on real faces (the targets) and the detached swaps: components ``real``, ``fake``."""
        real_term, fake_term = self.adversarial.discriminator_terms(discriminator(real), discriminator(fake.detach()))
        return LossTerms(real_term + fake_term, {"real": real_term.detach(), "fake": fake_term.detach()})


class HearObjective(nn.Module):
    """HEAR-Net's loss for refined swaps ``refined`` of (occluded) ``target`` given the AEI swap."""

    def __init__(self, cfg: HearLossConfig, identity_encoder: IdentityEncoder | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.identity: IdentityLoss | None = None
        if cfg.identity.weight:
            if identity_encoder is None:
                raise ValueError("loss.identity.weight > 0 needs an identity_encoder (faces -> embeddings)")
            self.identity = LOSSES.create("identity", identity_encoder)
        self.change = LOSSES.create("pixel", cfg.change.norm) if cfg.change.weight else None
        self.reconstruction = LOSSES.create("pixel", cfg.reconstruction.norm) if cfg.reconstruction.weight else None

    def forward(
        self, refined: Tensor, aei_swap: Tensor, target: Tensor, source_identity: Tensor, same_identity: Tensor
    ) -> LossTerms:
        cfg = self.cfg
        parts: dict[str, Tensor] = {}
        if self.identity is not None:
            parts["identity"] = cfg.identity.weight * self.identity(refined, target_embedding=source_identity)
        if self.change is not None:
            change = self.change(refined, aei_swap.detach())
            parts["change"] = cfg.change.weight * _half_if_squared(cfg.change) * change
        if self.reconstruction is not None:
            recon = same_identity_reconstruction(self.reconstruction, refined, target, same_identity)
            parts["reconstruction"] = cfg.reconstruction.weight * _half_if_squared(cfg.reconstruction) * recon
        return LossTerms.of(parts, "HEAR-Net")
