"""Swap models built from named parts: ``create_model(cfg)`` and the per-pair interface.

``MODELS`` maps a config's ``arch`` to a model class; parts live in ``swaplab.models.parts``;
configs and their ``model`` presets in ``swaplab.models.config``. Training loops live elsewhere.
"""

from swaplab.models.config import ModelConfig, PartsConfig, model_preset
from swaplab.models.factory import MODELS, create_model
from swaplab.models.per_pair import DeepFakesModel, LIAEModel, PairReconstruction, PerPairModel
from swaplab.models.simswap import (
    DiscriminatorConfig,
    SimSwapConfig,
    SimSwapGenerator,
    SimSwapPartsConfig,
    TemplateChipIdentity,
    create_discriminator,
    template_chip_matrix,
)

__all__ = [
    "MODELS",
    "DeepFakesModel",
    "LIAEModel",
    "ModelConfig",
    "PairReconstruction",
    "PartsConfig",
    "PerPairModel",
    "create_model",
    "model_preset",
    "DiscriminatorConfig",
    "SimSwapConfig",
    "SimSwapGenerator",
    "SimSwapPartsConfig",
    "TemplateChipIdentity",
    "create_discriminator",
    "template_chip_matrix",
]
