"""Named, swappable model parts: ``ENCODERS``, ``BOTTLENECKS``, ``DECODERS``, ``DISCRIMINATORS``.

Importing this package registers the built-in parts; the construction contract each part fulfils
is in :mod:`swaplab.models.parts.registries`.
"""

from swaplab.models.parts import (
    ablation,  # noqa: F401  (registers the ablation substitutes)
    dfl,  # noqa: F401  (registers the DeepFaceLab parts)
    discriminators,  # noqa: F401  (registers the discriminators)
    faceshifter,  # noqa: F401  (registers FaceShifter's generator parts)
    faceswap_gan,  # noqa: F401  (registers faceswap-GAN's encoder and decoder)
    glgan,  # noqa: F401  (registers GL-GAN's PatchGAN)
    simswap,  # noqa: F401  (registers SimSwap's generator parts)
)
from swaplab.models.parts.ablation import ChannelReductionDecoder, GrayscaleResizeEncoder, PassThroughBottleneck
from swaplab.models.parts.dfl import DenseBottleneck, DFLDecoder, DFLEncoder, DFLVariant, check_resolution
from swaplab.models.parts.discriminators import (
    DiscriminatorOutput,
    MultiScaleDiscriminator,
    PatchDiscriminator,
    ProjectedDiscriminator,
)
from swaplab.models.parts.registries import BOTTLENECKS, DECODERS, DISCRIMINATORS, ENCODERS
from swaplab.models.parts.simswap import IdentityInjection, IdentityInjectionBlock, SimSwapDecoder, SimSwapEncoder

__all__ = [
    "BOTTLENECKS",
    "DECODERS",
    "DISCRIMINATORS",
    "ENCODERS",
    "DFLDecoder",
    "DFLEncoder",
    "DFLVariant",
    "DenseBottleneck",
    "check_resolution",
    "ChannelReductionDecoder",
    "DiscriminatorOutput",
    "GrayscaleResizeEncoder",
    "IdentityInjection",
    "IdentityInjectionBlock",
    "MultiScaleDiscriminator",
    "PassThroughBottleneck",
    "PatchDiscriminator",
    "ProjectedDiscriminator",
    "SimSwapDecoder",
    "SimSwapEncoder",
]
