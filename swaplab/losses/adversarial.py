"""GAN losses: adversarial criteria (hinge, non-saturating, least squares, minimax, Wasserstein),
gradient penalties, and SimSwap's weighted generator and discriminator objectives with their
typed ``SimSwapLossConfig``.

Discriminator outputs are read through their ``logits`` (one patch-logit map per head, see
``swaplab.models.parts.discriminators``); a bare tensor or list of tensors also works. Losses
average over patches and then over heads. Everything is computed in float32. This module runs
no optimiser and chooses no data: the training loop passes images and discriminator outputs in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from swaplab.config import config_group
from swaplab.losses.feature_matching import LayerChoice
from swaplab.losses.identity import IdentityEncoder, IdentityLoss
from swaplab.losses.objective import IdentityTerm, LossTerms, PixelTerm
from swaplab.losses.pixel import PixelLoss
from swaplab.losses.registry import LOSSES

Tensor = torch.Tensor
AdversarialKind = Literal["hinge", "nonsaturating", "lsgan", "minimax", "wasserstein"]


def head_logits(output: Any) -> list[Tensor]:
    """The per-head logits of a discriminator output (``.logits``), a tensor, or a list of tensors."""
    logits = getattr(output, "logits", output)
    if isinstance(logits, Tensor):
        return [logits]
    if isinstance(logits, Sequence) and logits and all(isinstance(t, Tensor) for t in logits):
        return list(logits)
    raise TypeError(f"expected discriminator logits (a tensor or a list of them), got {type(output).__name__}")


# Per-logit criteria (real side, fake side, generator side), elementwise on float32 logits x.
# hinge (Lim & Ye 2017; SimSwap's released code): D relu(1 - x) on real, relu(1 + x) on fake; G -x.
# non-saturating (Goodfellow et al. 2014): D softplus(-x) = -log sigmoid(x) on real, softplus(x) on
#   fake; G softplus(-x).
# least squares (Mao et al. 2017, a=0, b=c=1, without the 1/2): D (x - 1)^2 on real, x^2 on fake;
#   G (x - 1)^2.
# minimax (Goodfellow et al. 2014, the game as written): D as non-saturating; G minimises
#   log(1 - sigmoid(x)) = -softplus(x), whose gradient vanishes where D rejects the fakes.
# wasserstein (Arjovsky et al. 2017, "Wasserstein GAN"): the critic's unbounded score x, D -x on real
#   and x on fake (so D minimises E[x_fake] - E[x_real]); G -x. Needs a Lipschitz critic: a gradient
#   penalty (WGAN-GP) or spectral normalisation.
CRITERIA: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "hinge": (lambda x: F.relu(1.0 - x), lambda x: F.relu(1.0 + x), lambda x: -x),
    "nonsaturating": (lambda x: F.softplus(-x), F.softplus, lambda x: F.softplus(-x)),
    "lsgan": (lambda x: (x - 1.0).square(), lambda x: x.square(), lambda x: (x - 1.0).square()),
    "minimax": (lambda x: F.softplus(-x), F.softplus, lambda x: -F.softplus(x)),
    "wasserstein": (lambda x: -x, lambda x: x, lambda x: -x),
}


class AdversarialLoss(nn.Module):
    """One adversarial criterion, both sides.

    - ``generator_loss(fake)``: what G minimises, from D's logits on generated images;
    - ``discriminator_terms(real, fake)``: D's (real, fake) losses; ``discriminator_loss`` their sum.
    ``forward(fake, real=None)`` is the generator side without ``real`` and the discriminator side
    with it. Each side's value is the mean over heads of the mean over each head's patches.
    """

    def __init__(self, kind: AdversarialKind = "hinge") -> None:
        super().__init__()
        if kind not in CRITERIA:
            raise ValueError(f"adversarial kind must be one of {', '.join(CRITERIA)}, got {kind!r}")
        self.kind = kind
        self._real, self._fake, self._generator = CRITERIA[kind]

    @staticmethod
    def _mean_over_heads(criterion: Callable[[Tensor], Tensor], output: Any) -> Tensor:
        return torch.stack([criterion(logits.float()).mean() for logits in head_logits(output)]).mean()

    def generator_loss(self, fake: Any) -> Tensor:
        return self._mean_over_heads(self._generator, fake)

    def discriminator_terms(self, real: Any, fake: Any) -> tuple[Tensor, Tensor]:
        return self._mean_over_heads(self._real, real), self._mean_over_heads(self._fake, fake)

    def discriminator_loss(self, real: Any, fake: Any) -> Tensor:
        real_term, fake_term = self.discriminator_terms(real, fake)
        return real_term + fake_term

    def forward(self, fake: Any, real: Any | None = None) -> Tensor:
        return self.generator_loss(fake) if real is None else self.discriminator_loss(real, fake)


for _kind in CRITERIA:
    LOSSES.register(_kind)(functools.partial(AdversarialLoss, _kind))


@LOSSES.register("gradient_penalty")
class GradientPenalty(nn.Module):
    """A penalty on the gradient of D's logits with respect to its input images.

    ``mode="interpolate"`` (WGAN-GP, Gulrajani et al. 2017): on x = a * real + (1 - a) * fake
    with a ~ U(0, 1) per sample, mean over samples of (||grad_x||_2 - ``center``)^2. This is the
    penalty in SimSwap's pix2pixHD-era code (``_gradinet_penalty_D`` in ``models/fs_model.py``:
    interpolates between the target and the swap, centre 1), which the paper weighs by
    lambda_GP = 1e-5. ``mode="r1"`` (Mescheder et al. 2018): on the real images only, mean over
    samples of ||grad_x||_2^2 (SimSwap's 2022 code defines this one, ``compute_grad2``, but its
    train.py does not call it; R1's usual gamma / 2 belongs in the weight).

    The differentiated output is the sum of every patch logit of every head (SimSwap passes
    ``grad_outputs=ones``), so the gradient of a patch discriminator grows with its patch count.
    ``forward(discriminator, real, fake=None, alpha=None)``: ``discriminator`` maps images to an
    output with logits; ``alpha`` (N,) fixes the interpolation weights (tests). The returned
    penalty keeps its graph, so backpropagating it trains D (a double backward).
    """

    def __init__(self, mode: Literal["interpolate", "r1"] = "interpolate", center: float = 1.0) -> None:
        super().__init__()
        if mode not in ("interpolate", "r1"):
            raise ValueError(f"gradient penalty mode must be 'interpolate' or 'r1', got {mode!r}")
        self.mode, self.center = mode, center

    def forward(
        self,
        discriminator: Callable[[Tensor], Any],
        real: Tensor,
        fake: Tensor | None = None,
        alpha: Tensor | None = None,
    ) -> Tensor:
        real = real.detach().float()
        if self.mode == "interpolate":
            if fake is None:
                raise ValueError("the interpolate gradient penalty needs fake images")
            if alpha is None:
                alpha = torch.rand(len(real), device=real.device)
            alpha = alpha.to(real).view(-1, 1, 1, 1)
            points = alpha * real + (1.0 - alpha) * fake.detach().float()
        else:
            points = real
        points = points.requires_grad_(True)
        total = torch.stack([logits.float().sum() for logits in head_logits(discriminator(points))]).sum()
        (gradient,) = torch.autograd.grad(total, points, create_graph=True)
        norms = gradient.flatten(1).norm(dim=1)
        if self.mode == "r1":
            return norms.square().mean()
        return (norms - self.center).square().mean()


# ---------------------------------------------------------------- SimSwap's objectives


@dataclass
class AdversarialTerm:
    """The adversarial criterion of both sides and its weight in G's loss (SimSwap: hinge, 1)."""

    kind: AdversarialKind = "hinge"
    weight: float = 1.0


@dataclass
class FeatureMatchingTerm:
    """Feature matching between D's features of the swap and of the target (SimSwap: weak, L1)."""

    weight: float = 10.0
    layers: LayerChoice = "weak"
    k: int = 2
    norm: Literal["l1", "l2"] = "l1"


@dataclass
class GradientPenaltyTerm:
    weight: float = 1e-5
    mode: Literal["interpolate", "r1"] = "interpolate"


@dataclass
class SimSwapLossConfig:
    """SimSwap's losses with its paper's weights; every weight overridable, 0 drops the term.

    G: adversarial.weight * L_adv + identity.weight * L_Id + reconstruction.weight * L_Recon
    + feature_matching.weight * L_wFM, with lambda_Id = lambda_Recon = lambda_wFM = 10.
    D: L_adv(real) + L_adv(fake) + gradient_penalty.weight * L_GP, lambda_GP = 1e-5.
    L_Recon (L1 by default) counts only same-identity pairs; L_Id = 1 - cos(E(swap), source
    identity). SimSwap's 2022 code uses lambda_Id = 30; the paper says 10.
    """

    name: str = "simswap"
    adversarial: AdversarialTerm = field(default_factory=AdversarialTerm)
    identity: IdentityTerm = field(default_factory=lambda: IdentityTerm(weight=10.0))
    reconstruction: PixelTerm = field(default_factory=lambda: PixelTerm(weight=10.0, norm="l1"))
    feature_matching: FeatureMatchingTerm = field(default_factory=FeatureMatchingTerm)
    gradient_penalty: GradientPenaltyTerm = field(default_factory=GradientPenaltyTerm)


config_group("loss").register("simswap")(SimSwapLossConfig)
#: The study's "L2 norms" ablation: L_Recon and L_wFM with L2 instead of L1.
config_group("loss").register("simswap-l2")(
    lambda: SimSwapLossConfig(
        name="simswap-l2",
        reconstruction=PixelTerm(weight=10.0, norm="l2"),
        feature_matching=FeatureMatchingTerm(norm="l2"),
    )
)


def same_identity_reconstruction(loss: PixelLoss, swapped: Tensor, target: Tensor, same_identity: Tensor) -> Tensor:
    """``loss`` averaged over the same-identity samples only (0 when the batch has none).

    ``same_identity`` (N,) bool or 0/1 is the per-sample weight: a weight map per sample keeps
    the other samples out, and the mean is rescaled from the whole batch to the pairs it covers.
    """
    flags = same_identity.to(device=swapped.device, dtype=torch.float32).view(-1)
    if flags.numel() != len(swapped):
        raise ValueError(f"same_identity has {flags.numel()} flags for {len(swapped)} images")
    count = flags.sum()
    if count == 0:
        return swapped.new_zeros((), dtype=torch.float32)
    weight = flags.view(-1, 1, 1, 1).expand(-1, 1, *swapped.shape[-2:])
    return loss(swapped, target, weight) * (len(swapped) / count)


class IdentitySwapObjective(nn.Module):
    """The generator terms one-shot swappers share: adversarial, identity (``1 - cos`` to the source's
    embedding), reconstruction on same-identity pairs, and feature matching on D's features.

    Families add their own terms around ``shared_terms`` (SimSwap a gradient penalty on D,
    FaceShifter the attribute loss). ``reconstruction_scale(term)`` lets a family put its paper's
    constant in front of the reconstruction (FaceShifter's 1/2 on squared errors). Terms with weight
    0 are neither built nor computed; ``identity_encoder`` is required when identity.weight > 0.
    """

    def __init__(self, cfg: Any, identity_encoder: IdentityEncoder | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.adversarial = LOSSES.create(cfg.adversarial.kind)
        self.identity: IdentityLoss | None = None
        if cfg.identity.weight:
            if identity_encoder is None:
                raise ValueError("loss.identity.weight > 0 needs an identity_encoder (faces -> embeddings)")
            self.identity = LOSSES.create("identity", identity_encoder)
        self.reconstruction = LOSSES.create("pixel", cfg.reconstruction.norm) if cfg.reconstruction.weight else None
        fm = cfg.feature_matching
        self.feature_matching = LOSSES.create("feature_matching", fm.layers, fm.k, fm.norm) if fm.weight else None

    @property
    def needs_fake_output(self) -> bool:
        """Whether ``generator_loss`` needs D's output on the swap (adversarial or feature matching on)."""
        return bool(self.cfg.adversarial.weight) or self.feature_matching is not None

    @property
    def needs_real_output(self) -> bool:
        """Whether ``generator_loss`` needs D's output on the target (feature matching on)."""
        return self.feature_matching is not None

    def reconstruction_scale(self, term: Any) -> float:
        return 1.0

    def shared_terms(
        self,
        swapped: Tensor,
        target: Tensor,
        source_identity: Tensor,
        same_identity: Tensor,
        fake_output: Any | None = None,
        real_output: Any | None = None,
    ) -> dict[str, Tensor]:
        """The shared terms, weighted, by name (only those switched on)."""
        cfg = self.cfg
        parts: dict[str, Tensor] = {}
        if cfg.adversarial.weight:
            if fake_output is None:
                raise ValueError("the adversarial term needs fake_output = D(swapped)")
            parts["adversarial"] = cfg.adversarial.weight * self.adversarial.generator_loss(fake_output)
        if self.identity is not None:
            parts["identity"] = cfg.identity.weight * self.identity(swapped, target_embedding=source_identity)
        if self.reconstruction is not None:
            recon = same_identity_reconstruction(self.reconstruction, swapped, target, same_identity)
            scale = cfg.reconstruction.weight * self.reconstruction_scale(cfg.reconstruction)
            parts["reconstruction"] = scale * recon
        if self.feature_matching is not None:
            if fake_output is None or real_output is None:
                raise ValueError("feature matching needs fake_output = D(swapped) and real_output = D(target)")
            parts["feature_matching"] = cfg.feature_matching.weight * self.feature_matching(fake_output, real_output)
        return parts


class SimSwapObjective(IdentitySwapObjective):
    """SimSwap's generator and discriminator losses from a ``SimSwapLossConfig``.

    The shared one-shot terms plus a gradient penalty on D. ``identity_encoder`` (aligned crops ->
    embeddings, e.g. ``swaplab.models.TemplateChipIdentity``) is required when identity.weight > 0.
    Both methods return ``LossTerms``: the total with gradients and detached, weighted components.
    """

    def __init__(self, cfg: SimSwapLossConfig, identity_encoder: IdentityEncoder | None = None) -> None:
        super().__init__(cfg, identity_encoder)
        gp = cfg.gradient_penalty
        self.gradient_penalty = LOSSES.create("gradient_penalty", gp.mode) if gp.weight else None

    def generator_loss(
        self,
        swapped: Tensor,
        target: Tensor,
        source_identity: Tensor,
        same_identity: Tensor,
        fake_output: Any | None = None,
        real_output: Any | None = None,
    ) -> LossTerms:
        """G's loss for swaps (N, 3, R, R) of ``target`` with ``source_identity`` (N, D).

        ``fake_output`` = D(swapped) with gradients to G (needed when ``needs_fake_output``);
        ``real_output`` = D(target), best computed under ``torch.no_grad()`` (needed when
        ``needs_real_output``); ``same_identity`` (N,) flags the pairs whose target is the
        source's person, the only ones ``L_Recon`` covers.
        """
        parts = self.shared_terms(swapped, target, source_identity, same_identity, fake_output, real_output)
        return LossTerms.of(parts, "generator")

    def discriminator_loss(
        self,
        discriminator: Callable[[Tensor], Any],
        real: Tensor,
        fake: Tensor,
        penalty_every: int | None = 1,
    ) -> LossTerms:
        """D's loss on ``real`` faces (SimSwap: the targets) and generated ``fake`` ones (detached here).

        Components: ``real``, ``fake`` and, when on, ``gradient_penalty`` (weighted).
        ``penalty_every``: lazy regularisation; the caller asks for the penalty only every k-th
        step and passes k (its weight is multiplied by k to keep its average strength), or None
        to leave it out of this step.
        """
        fake = fake.detach()
        real_term, fake_term = self.adversarial.discriminator_terms(discriminator(real), discriminator(fake))
        parts = {"real": real_term, "fake": fake_term}
        if self.gradient_penalty is not None and penalty_every:
            penalty = self.gradient_penalty(discriminator, real, fake)
            parts["gradient_penalty"] = self.cfg.gradient_penalty.weight * penalty_every * penalty
        return LossTerms.of(parts)
