"""Named, swappable model parts: ``ENCODERS``, ``BOTTLENECKS``, ``DECODERS``, ``DISCRIMINATORS``.

Importing this package registers the built-in parts; the construction contract each part fulfils
is in :mod:`swaplab.models.parts.registries`.
"""

from swaplab.models.parts import dfl  # noqa: F401  (registers the DeepFaceLab parts)
from swaplab.models.parts.dfl import DenseBottleneck, DFLDecoder, DFLEncoder, DFLVariant, check_resolution
from swaplab.models.parts.registries import BOTTLENECKS, DECODERS, DISCRIMINATORS, ENCODERS

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
]
