"""GL-GAN's smoother as a built network of the swap stage: ``face_smoothing=glgan`` loads it from here.

``swaplab nets build glgan-smoother data.train=[FACESET]`` trains the ``glgan-smooth`` recipe (GL-GAN's
global U-Net making a flickering face agree with the previous frame's, ``peopleDevTrain`` faces
only) and installs its weights with the built-network header; or set ``$SWAPLAB_GLGAN_SMOOTHER``
to such a weights file.
"""

from __future__ import annotations

import os

from swaplab.models.glgan import GLGANSmoothConfig, GLGANSmoother
from swaplab.models.installed import BUILT_NETWORKS, BuiltNetwork, load_built

__all__ = ["GLGAN_SMOOTHER_NAME", "load_glgan_smoother"]

GLGAN_SMOOTHER_NAME = "glgan-smoother"

BUILT_NETWORKS.register(GLGAN_SMOOTHER_NAME)(
    BuiltNetwork(
        GLGAN_SMOOTHER_NAME,
        GLGANSmoother,
        GLGANSmoothConfig,
        "SWAPLAB_GLGAN_SMOOTHER",
        "about 2 CPU-minutes for 300 steps of glgan-smooth-tiny; give data.train=[FACESET] of peopleDevTrain faces",
    )
)


def load_glgan_smoother(path: str | os.PathLike[str] | None = None) -> GLGANSmoother:
    """The built GL-GAN smoother, frozen (``NetworkMissing`` names the build command without one)."""
    return load_built(GLGAN_SMOOTHER_NAME, path)  # type: ignore[return-value]
