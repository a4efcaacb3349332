"""Models built from named parts: ``create_model(cfg)``, exported cards and the swapper contract.

``MODELS`` maps a config's ``arch`` to a model class; parts live in ``swaplab.models.parts``;
configs and their ``model`` presets beside each family. ``swaplab.models.card`` reads exported
models, ``swaplab.models.swapper`` is the one protocol the swap stage and the evaluator call.
Training loops live elsewhere.
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
from swaplab.models.swapper import SWAPPERS, SwapOutput, Swapper, load_swapper

__all__ = [
    "MODELS",
    "SWAPPERS",
    "SwapOutput",
    "Swapper",
    "load_swapper",
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
