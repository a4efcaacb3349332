"""Typed configs of the per-pair swap models and their presets in the ``model`` config group.

A ``ModelConfig`` names the architecture (``df`` or ``liae``), its sizes, DeepFaceLab's variant
letters and, in ``parts``, which registered encoder/bottleneck/decoder to build, so an ablation
replaces a part by name (``model.parts.bottleneck=...``) without touching model code. Presets:
``df``, ``liae`` and every variant suffix (``liae-ud``, ``df-udt`` ...) with DeepFaceLab's
defaults at 128 px, and the small CPU presets ``df-cpu`` and ``liae-cpu``. No torch here.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Literal

from swaplab.config import ConfigError, config_group
from swaplab.models.parts.dfl import VARIANT_LETTERS, check_resolution

#: The bottleneck each architecture uses unless ``parts.bottleneck`` says otherwise.
DEFAULT_BOTTLENECK = {"df": "dense", "liae": "liae-inter"}


@dataclass
class PartsConfig:
    """Registered part names (see ``swaplab.models.parts``); ``bottleneck`` "" = the arch's default."""

    encoder: str = "dfl"
    bottleneck: str = ""
    decoder: str = "dfl"


@dataclass
class ModelConfig:
    """A per-pair autoencoder (DeepFakes ``df`` or DeepFaceLab's ``liae``).

    ``resolution`` is both the input and the output side (every variant, ``d`` included, outputs
    at ``resolution``). ``variant``: "" or any of u, d, t (DeepFaceLab's ``-ud`` etc.).
    """

    name: str = "df"
    arch: Literal["df", "liae"] = "df"
    resolution: int = 128
    ae_dims: int = 256
    e_dims: int = 64
    d_dims: int = 64
    d_mask_dims: int = 22
    variant: str = ""
    parts: PartsConfig = field(default_factory=PartsConfig)

    def __post_init__(self) -> None:
        for key in ("ae_dims", "e_dims", "d_dims", "d_mask_dims"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
        try:
            check_resolution(self.resolution, self.variant)
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None

    @property
    def bottleneck(self) -> str:
        """The bottleneck part name actually used (the arch's default when ``parts`` leaves it empty)."""
        return self.parts.bottleneck or DEFAULT_BOTTLENECK[self.arch]


def _variant_suffixes() -> list[str]:
    """Every variant suffix: the empty one, then u, d, t, ud, ut, dt, udt (DeepFaceLab's letter order)."""
    return [
        "".join(combo) for n in range(len(VARIANT_LETTERS) + 1) for combo in itertools.combinations(VARIANT_LETTERS, n)
    ]


def _register_dfl_presets() -> None:
    for arch in ("df", "liae"):
        for variant in _variant_suffixes():
            name = f"{arch}-{variant}" if variant else arch
            config_group("model").register(name)(
                lambda name=name, arch=arch, variant=variant: ModelConfig(name=name, arch=arch, variant=variant)
            )


_register_dfl_presets()

#: CPU presets: 64 px, u+d (pixel-norm code; the decoder's body at 32 px), narrow convs and a
#: wide-enough dense code. Sized so a bf16 channels_last training step at batch 16 stays well
#: under a second on the 2-core reference machine (see benchmarks/bench_model_flops.py).
CPU_PRESET = dict(resolution=64, ae_dims=192, e_dims=32, d_dims=32, d_mask_dims=12, variant="ud")

config_group("model").register("df-cpu")(lambda: ModelConfig(name="df-cpu", arch="df", **CPU_PRESET))
config_group("model").register("liae-cpu")(lambda: ModelConfig(name="liae-cpu", arch="liae", **CPU_PRESET))


#: The reference line of the per-pair benchmarks: a plain DeepFakes-style autoencoder at 64 px (no
#: variant letters, widths 64..512 in the encoder, 256..64 in each decoder, a 512-wide code), to
#: be trained with ``loss=deepfakes``. DeepFaceLab's parts (its decoder has residual blocks), so
#: only the sizes and losses are DeepFakes'.
config_group("model").register("df-64-plain")(
    lambda: ModelConfig(name="df-64-plain", arch="df", resolution=64, ae_dims=512, e_dims=64, d_dims=32, d_mask_dims=8)
)

#: faceswap-GAN (``swaplab.models.parts.faceswap_gan``): the DeepFakes wiring with its
#: self-attention encoder and alpha-predicting decoder. Widths shrink as the side grows so the
#: dense bottleneck stays a few million weights; sizes are starting points, not measured optima.
FACESWAP_GAN_PRESETS = {
    64: dict(ae_dims=256, e_dims=16, d_dims=32),
    128: dict(ae_dims=256, e_dims=16, d_dims=32),
    256: dict(ae_dims=256, e_dims=8, d_dims=16),
}
for _side, _sizes in FACESWAP_GAN_PRESETS.items():
    config_group("model").register(f"faceswap-gan-{_side}")(
        lambda side=_side, sizes=_sizes: ModelConfig(
            name=f"faceswap-gan-{side}",
            arch="df",
            resolution=side,
            parts=PartsConfig(encoder="faceswap-gan", decoder="faceswap-gan"),
            **sizes,
        )
    )


def model_preset(name: str, **overrides: object) -> ModelConfig:
    """A registered preset with fields replaced: ``model_preset("liae-ud", resolution=256)``."""
    return dataclasses.replace(config_group("model").create(name), **overrides)
