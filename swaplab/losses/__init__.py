"""Losses as small registered modules (``LOSSES``) and the per-pair reconstruction objective.

Image losses: ``loss(pred, target, weight=None)`` on (N, C, H, W) tensors in [0, 1]. Configs:
``LossConfig`` and its ``loss`` presets (``dfl``, ``dfl-eyes``, ``l1``). GAN and VAE losses
will register here too.
"""

from swaplab.losses.adversarial import (
    AdversarialLoss,
    AdversarialTerm,
    FeatureMatchingTerm,
    GradientPenalty,
    GradientPenaltyTerm,
    SimSwapLossConfig,
    SimSwapObjective,
)
from swaplab.losses.feature_matching import FeatureMatchingLoss, select_layers
from swaplab.losses.identity import IdentityLoss
from swaplab.losses.objective import (
    DSSIMTerm,
    EdgeTerm,
    EyesMouthTerm,
    IdentityTerm,
    LossConfig,
    LossTerms,
    MaskedTraining,
    MaskTerm,
    MSDSSIMTerm,
    PerceptualTerm,
    PixelTerm,
    ReconstructionObjective,
)
from swaplab.losses.pixel import MaskLoss, PixelLoss
from swaplab.losses.registry import LOSSES
from swaplab.losses.ssim import DSSIMLoss, MSDSSIMLoss

__all__ = [
    "LOSSES",
    "DSSIMLoss",
    "DSSIMTerm",
    "EdgeTerm",
    "EyesMouthTerm",
    "PerceptualTerm",
    "IdentityLoss",
    "IdentityTerm",
    "LossConfig",
    "LossTerms",
    "MSDSSIMLoss",
    "MSDSSIMTerm",
    "MaskLoss",
    "MaskTerm",
    "MaskedTraining",
    "PixelLoss",
    "PixelTerm",
    "ReconstructionObjective",
    "AdversarialLoss",
    "AdversarialTerm",
    "FeatureMatchingLoss",
    "FeatureMatchingTerm",
    "GradientPenalty",
    "GradientPenaltyTerm",
    "SimSwapLossConfig",
    "SimSwapObjective",
    "select_layers",
]
