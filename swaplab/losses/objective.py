"""The reconstruction objective of per-pair models: weighted loss terms from a typed ``LossConfig``.

``ReconstructionObjective`` turns one side's prediction (rgb, mask), its target, the target's
face mask and eye/mouth mask into a total and named components for logging curves. Terms with
weight 0 are never built nor computed. It knows nothing of models or optimisers.

Defaults follow DeepFaceLab's SAEHD (preset ``dfl``): 10 x DSSIM + 10 x L2 inside a softened face
mask, 10 x L2 on the learned mask. Eyes-and-mouth priority: SAEHD adds
``300 * mean(|target - pred| * eyes_mouth_mask)`` with the mean over the *whole* image, which
for eye and mouth regions covering about 5-8 % of a full-face crop is 15-24 x the mean L1 error
*inside* the regions. Here the term is that region mean (an interpretable number) times
``eyes_mouth.weight``; preset ``dfl-eyes`` sets 20, about SAEHD's strength. Off by default, as
in SAEHD.

Sharpening terms (all off in ``dfl``): ``masked.eyes_mouth_priority`` multiplies every image
term's weight map by ``1 + priority`` inside the eyes and mouth (faceswap-GAN's eye-aware loss,
``eye_aware_weights``); ``edge`` compares image gradients (``EdgeLoss``); ``perceptual`` compares
the early features of the frozen dlib ResNet port (``PerceptualLoss``). Presets ``dfl-sharp`` and
``faceswap-gan`` switch them on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
from torch import nn

from swaplab.config import config_group
from swaplab.losses.functional import eye_aware_weights, soften_mask
from swaplab.losses.identity import IdentityEncoder
from swaplab.losses.registry import LOSSES

Tensor = torch.Tensor


@dataclass
class DSSIMTerm:
    """DSSIM with DeepFaceLab's resolution-relative windows (see ``DSSIMLoss``)."""

    weight: float = 10.0
    two_scale_from: int = 256


@dataclass
class MSDSSIMTerm:
    weight: float = 0.0
    levels: int = 3
    window_size: int = 7


@dataclass
class PixelTerm:
    weight: float = 10.0
    norm: Literal["l1", "l2"] = "l2"


@dataclass
class MaskTerm:
    """The learned mask against the (unsoftened) landmark mask."""

    weight: float = 10.0
    norm: Literal["l1", "l2"] = "l2"


@dataclass
class EyesMouthTerm:
    """Extra error term inside the eye and mouth regions (mean inside the regions x weight)."""

    weight: float = 0.0
    norm: Literal["l1", "l2"] = "l1"


@dataclass
class EdgeTerm:
    """Error between the image gradients of reconstruction and target (``EdgeLoss``)."""

    weight: float = 0.0
    norm: Literal["l1", "l2"] = "l1"


@dataclass
class PerceptualTerm:
    """L1 between early features of the frozen dlib ResNet port (``PerceptualLoss``): ``stages``
    residual stages after the stem."""

    weight: float = 0.0
    stages: int = 2


@dataclass
class IdentityTerm:
    """1 - cosine of identity embeddings of reconstruction and target (needs an encoder)."""

    weight: float = 0.0


@dataclass
class MaskedTraining:
    """Restrict image losses to the face mask; ``soften`` applies DeepFaceLab's blur-and-clip."""

    enabled: bool = True
    soften: bool = True
    # Extra weight inside the eyes and mouth for every image term: weight map x (1 + priority x
    # eyes_mouth mask). Needs the eyes/mouth mask; 0 = off.
    eyes_mouth_priority: float = 0.0


@dataclass
class LossConfig:
    name: str = "dfl"
    dssim: DSSIMTerm = field(default_factory=DSSIMTerm)
    ms_dssim: MSDSSIMTerm = field(default_factory=MSDSSIMTerm)
    pixel: PixelTerm = field(default_factory=PixelTerm)
    mask: MaskTerm = field(default_factory=MaskTerm)
    eyes_mouth: EyesMouthTerm = field(default_factory=EyesMouthTerm)
    identity: IdentityTerm = field(default_factory=IdentityTerm)
    edge: EdgeTerm = field(default_factory=EdgeTerm)
    perceptual: PerceptualTerm = field(default_factory=PerceptualTerm)
    masked: MaskedTraining = field(default_factory=MaskedTraining)


config_group("loss").register("dfl")(lambda: LossConfig(name="dfl"))
config_group("loss").register("dfl-eyes")(lambda: LossConfig(name="dfl-eyes", eyes_mouth=EyesMouthTerm(weight=20.0)))
config_group("loss").register("l1")(lambda: LossConfig(name="l1", pixel=PixelTerm(norm="l1"), mask=MaskTerm(norm="l1")))
#: The original DeepFakes objective: L1 over the whole crop (no mask weighting, no DSSIM); the
#: mask term only trains the mask the swap stage pastes with.
config_group("loss").register("deepfakes")(
    lambda: LossConfig(
        name="deepfakes",
        dssim=DSSIMTerm(weight=0.0),
        pixel=PixelTerm(weight=10.0, norm="l1"),
        masked=MaskedTraining(enabled=False),
    )
)
#: SAEHD's terms plus what sharpens: eyes and mouth weighted 3x inside every image term and an
#: edge term (weights picked so the edge term starts about as large as the pixel term).
config_group("loss").register("dfl-sharp")(
    lambda: LossConfig(
        name="dfl-sharp",
        edge=EdgeTerm(weight=10.0),
        masked=MaskedTraining(eyes_mouth_priority=2.0),
    )
)
#: faceswap-GAN's reconstruction terms: L1 inside the eye-aware weight map, edges, perceptual
#: features (the dlib port's early stages standing in for VGGFace), the mask; no DSSIM. The
#: adversarial term is the per-pair recipe's ``gan`` section.
config_group("loss").register("faceswap-gan")(
    lambda: LossConfig(
        name="faceswap-gan",
        dssim=DSSIMTerm(weight=0.0),
        pixel=PixelTerm(weight=10.0, norm="l1"),
        edge=EdgeTerm(weight=10.0),
        perceptual=PerceptualTerm(weight=1.0),
        masked=MaskedTraining(eyes_mouth_priority=2.0),
    )
)


class LossTerms(NamedTuple):
    """``total`` (a scalar with gradients) and ``components``: detached, already weighted
    contributions keyed by term name (they sum to ``total``)."""

    total: Tensor
    components: dict[str, Tensor]

    @classmethod
    def of(cls, parts: dict[str, Tensor], what: str = "") -> LossTerms:
        """The sum of weighted ``parts`` with gradients, each part detached for logging; an empty
        ``parts`` means every term of ``what`` was switched off, which is a configuration error."""
        if not parts:
            raise ValueError(f"every {what + ' ' if what else ''}loss term has weight 0: nothing to optimise")
        total = torch.stack(list(parts.values())).sum()
        return cls(total, {name: value.detach() for name, value in parts.items()})


class ReconstructionObjective(nn.Module):
    """Weighted sum of the configured terms for one side (src or dst) of a per-pair model.

    Call with ``pred_rgb`` (N, 3, R, R), ``pred_mask`` (N, 1, R, R), ``target_rgb``,
    ``target_mask`` (N, 1, R, R, the landmark mask; may be None when neither masked training nor
    the mask term needs it) and ``eyes_mouth_mask`` (N, 1, R, R; needed when its weight > 0),
    all in [0, 1]. ``identity_encoder`` is required when ``identity.weight`` > 0.
    """

    def __init__(self, cfg: LossConfig, identity_encoder: IdentityEncoder | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_terms = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        # Every term is looked up by its name in LOSSES: the config's term names are the registry's.
        if cfg.dssim.weight:
            self.image_terms["dssim"] = LOSSES.create("dssim", two_scale_from=cfg.dssim.two_scale_from)
        if cfg.ms_dssim.weight:
            self.image_terms["ms_dssim"] = LOSSES.create("ms_dssim", cfg.ms_dssim.levels, cfg.ms_dssim.window_size)
        if cfg.pixel.weight:
            self.image_terms["pixel"] = LOSSES.create("pixel", cfg.pixel.norm)
        if cfg.edge.weight:
            self.image_terms["edge"] = LOSSES.create("edge", cfg.edge.norm)
        if cfg.perceptual.weight:
            self.image_terms["perceptual"] = LOSSES.create("perceptual", cfg.perceptual.stages)
        for name in self.image_terms:
            self.weights[name] = getattr(cfg, name).weight
        self.mask_term = LOSSES.create("mask", cfg.mask.norm) if cfg.mask.weight else None
        self.eyes_mouth_term = LOSSES.create("pixel", cfg.eyes_mouth.norm) if cfg.eyes_mouth.weight else None
        self.identity_term: nn.Module | None = None
        if cfg.identity.weight:
            if identity_encoder is None:
                raise ValueError("loss.identity.weight > 0 needs an identity_encoder (faces -> embeddings)")
            self.identity_term = LOSSES.create("identity", identity_encoder)

    def forward(
        self,
        pred_rgb: Tensor,
        pred_mask: Tensor,
        target_rgb: Tensor,
        target_mask: Tensor | None = None,
        eyes_mouth_mask: Tensor | None = None,
    ) -> LossTerms:
        cfg = self.cfg
        needs_mask = (cfg.masked.enabled and bool(self.image_terms)) or self.mask_term is not None
        if needs_mask and target_mask is None:
            raise ValueError("target_mask is required (masked training or the mask term is on)")
        weight = None
        if cfg.masked.enabled and target_mask is not None:
            weight = soften_mask(target_mask) if cfg.masked.soften else target_mask
        if cfg.masked.eyes_mouth_priority and self.image_terms:
            if eyes_mouth_mask is None:
                raise ValueError("loss.masked.eyes_mouth_priority > 0 needs eyes_mouth_mask; pass it or set it to 0")
            base = weight if weight is not None else torch.ones_like(eyes_mouth_mask)
            weight = eye_aware_weights(base, eyes_mouth_mask, cfg.masked.eyes_mouth_priority)
        parts: dict[str, Tensor] = {}
        for name, loss in self.image_terms.items():
            parts[name] = self.weights[name] * loss(pred_rgb, target_rgb, weight)
        if self.mask_term is not None:
            parts["mask"] = cfg.mask.weight * self.mask_term(pred_mask, target_mask)
        if self.eyes_mouth_term is not None:
            if eyes_mouth_mask is None:
                raise ValueError("loss.eyes_mouth.weight > 0 needs eyes_mouth_mask; pass it or set the weight to 0")
            parts["eyes_mouth"] = cfg.eyes_mouth.weight * self.eyes_mouth_term(pred_rgb, target_rgb, eyes_mouth_mask)
        if self.identity_term is not None:
            parts["identity"] = cfg.identity.weight * self.identity_term(pred_rgb, target_rgb)
        return LossTerms.of(parts)

    def pair(
        self,
        src: tuple[Tensor, Tensor],
        dst: tuple[Tensor, Tensor],
        src_target: dict[str, Tensor],
        dst_target: dict[str, Tensor],
    ) -> LossTerms:
        """Both sides at once: ``src``/``dst`` are (rgb, mask) predictions, the targets dicts with
        ``target`` (or ``image``), ``mask`` and optionally ``eyes_mouth``; components are
        prefixed ``src/`` and ``dst/`` and ``total`` is their sum."""
        total = None
        components: dict[str, Tensor] = {}
        for side, pred, batch in (("src", src, src_target), ("dst", dst, dst_target)):
            image = batch["target"] if "target" in batch else batch["image"]
            terms = self(pred[0], pred[1], image, batch.get("mask"), batch.get("eyes_mouth"))
            total = terms.total if total is None else total + terms.total
            components.update({f"{side}/{k}": v for k, v in terms.components.items()})
        return LossTerms(total, components)
