"""The model registry and ``create_model``: one typed config in, one ``nn.Module`` out.

Every model family registers its class under the value of its config's ``arch`` field
(``MODELS.register("liae")``); the class is called with the config, and names that config's type
as ``config_type`` (so an exported card's ``model`` section rebuilds it). Nothing here knows a
family; the modules that register are listed once, in ``MODELS``'s providers.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from swaplab.registry import Registry

MODELS: Registry = Registry(
    "model",
    providers=(
        "swaplab.models.per_pair",
        "swaplab.models.simswap",
        "swaplab.models.swap_detector",
        "swaplab.models.zoo.autoencoder",
        "swaplab.models.zoo.autoencoder_variants",
        "swaplab.models.zoo.vae",
        "swaplab.models.zoo.gan",
        "swaplab.models.zoo.stylegan",
        "swaplab.models.zoo.cyclegan",
        "swaplab.models.diffusion",
        "swaplab.models.faceshifter",
        "swaplab.models.glgan",
        "swaplab.models.fsgan",
    ),
)


def create_model(cfg: Any) -> nn.Module:
    """Build the model ``cfg.arch`` names from ``cfg``: ``create_model(model_preset("liae-ud"))``."""
    arch = getattr(cfg, "arch", None)
    if arch is None:
        raise TypeError(f"create_model needs a model config with an 'arch' field, got {type(cfg).__name__}")
    return MODELS.create(arch, cfg)
