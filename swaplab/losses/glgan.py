"""GL-GAN's objectives: SimSwap's weighted global terms plus the local discriminators' terms.

G: adversarial.weight * L_adv(global) + local_adversarial.weight * mean over regions L_adv(local)
+ feature_matching.weight * L_FM(global) + local_feature_matching.weight * mean L_FM(local)
+ identity.weight * (1 - cos) through the named identity network + reconstruction.weight *
L_Recon (same-person pairs only). D: the global real/fake terms (and the lazy gradient penalty)
plus the mean over regions of the local real/fake terms. Feature matching's layer choice
(``weak``, ``full``, ``early``) applies to both. The global terms are ``SimSwapObjective``'s; this
module adds the regions. Discriminators are passed in (a ``GLGANDiscriminator``: ``global_``,
``local[region]``, ``boxes``); nothing here runs an optimiser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from swaplab.config import config_group
from swaplab.losses.adversarial import AdversarialTerm, SimSwapLossConfig, SimSwapObjective
from swaplab.losses.objective import LossTerms

Tensor = torch.Tensor


@dataclass
class LocalFeatureMatchingTerm:
    """Feature matching on the local discriminators (layers, k and norm as ``feature_matching``'s)."""

    weight: float = 5.0


@dataclass
class GLGANLossConfig(SimSwapLossConfig):
    """SimSwap's weights for the global terms; the local adversarial term at half the global one."""

    name: str = "glgan"
    local_adversarial: AdversarialTerm = field(default_factory=lambda: AdversarialTerm(weight=0.5))
    local_feature_matching: LocalFeatureMatchingTerm = field(default_factory=LocalFeatureMatchingTerm)


config_group("loss").register("glgan")(GLGANLossConfig)


def _crops(images: Tensor, boxes: Sequence[Any]) -> dict[str, Tensor]:
    return {b.name: images[:, :, b.top : b.top + b.size, b.left : b.left + b.size] for b in boxes}


class GLGANObjective(nn.Module):
    """``generator_loss`` and ``discriminator_loss`` of GL-GAN from a ``GLGANLossConfig``.

    ``global_objective``: the ``SimSwapObjective`` of the same config (it owns the identity
    network). Local terms are skipped when the discriminator has no local heads (the ablation)
    or their weight is 0.
    """

    def __init__(self, cfg: GLGANLossConfig, global_objective: SimSwapObjective) -> None:
        super().__init__()
        self.cfg = cfg
        self.global_objective = global_objective

    def generator_loss(
        self, discriminator: Any, swapped: Tensor, target: Tensor, source_identity: Tensor, same_identity: Tensor
    ) -> LossTerms:
        """G's terms for ``swapped`` (N, 3, R, R) rendered from ``target``; D's weights should be frozen."""
        objective, cfg = self.global_objective, self.cfg
        fake_out = discriminator.global_(swapped) if objective.needs_fake_output else None
        real_out = None
        if objective.needs_real_output:
            with torch.no_grad():
                real_out = discriminator.global_(target)
        terms = objective.generator_loss(
            swapped.float(), target.float(), source_identity, same_identity, fake_out, real_out
        )
        total, parts = terms.total, dict(terms.components)
        local_adv, local_fm = cfg.local_adversarial.weight, cfg.local_feature_matching.weight
        fm = objective.feature_matching
        if len(discriminator.local) and (local_adv or (local_fm and fm is not None)):
            fake_crops, real_crops = _crops(swapped, discriminator.boxes), _crops(target, discriminator.boxes)
            adversarial, matching = [], []
            for name, head in discriminator.local.items():
                fake_local = head(fake_crops[name])
                adversarial.append(objective.adversarial.generator_loss(fake_local))
                if local_fm and fm is not None:
                    with torch.no_grad():
                        real_local = head(real_crops[name])
                    matching.append(fm(fake_local, real_local))
            if local_adv:
                value = local_adv * torch.stack(adversarial).mean()
                parts["local_adversarial"], total = value.detach(), total + value
            if matching:
                value = local_fm * torch.stack(matching).mean()
                parts["local_feature_matching"], total = value.detach(), total + value
        return LossTerms(total, parts)

    def discriminator_loss(
        self, discriminator: Any, real: Tensor, fake: Tensor, penalty_every: int | None = 1
    ) -> LossTerms:
        """D's terms: the global ones (``real``, ``fake``, ``gradient_penalty``) and ``local_real``,
        ``local_fake`` (means over regions) on the crops of ``real`` and of the detached ``fake``."""
        fake = fake.detach()
        terms = self.global_objective.discriminator_loss(discriminator.global_, real, fake, penalty_every)
        total, parts = terms.total, dict(terms.components)
        if len(discriminator.local):
            real_crops, fake_crops = _crops(real, discriminator.boxes), _crops(fake, discriminator.boxes)
            reals, fakes = [], []
            for name, head in discriminator.local.items():
                real_term, fake_term = self.global_objective.adversarial.discriminator_terms(
                    head(real_crops[name]), head(fake_crops[name])
                )
                reals.append(real_term)
                fakes.append(fake_term)
            local_real, local_fake = torch.stack(reals).mean(), torch.stack(fakes).mean()
            parts.update(local_real=local_real.detach(), local_fake=local_fake.detach())
            total = total + local_real + local_fake
        return LossTerms(total, parts)
