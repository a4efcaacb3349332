"""GL-GAN's blender as a built network of the swap stage: ``blend=glgan`` loads it from here.

``swaplab nets build glgan-blender data.train=[FACESET]`` trains the ``glgan-blend`` recipe (GL-GAN's
global U-Net re-making the seam band of a recoloured pasted face, ``peopleDevTrain`` faces only) and
installs its weights with the built-network header, as the learned blender's are; or set
``$SWAPLAB_GLGAN_BLENDER`` to such a weights file.
"""

from __future__ import annotations

import os

from swaplab.models.glgan import GLGANBlendConfig, GLGANBlender
from swaplab.models.installed import BUILT_NETWORKS, BuiltNetwork, load_built

__all__ = ["GLGAN_BLENDER_NAME", "load_glgan_blender"]

GLGAN_BLENDER_NAME = "glgan-blender"

BUILT_NETWORKS.register(GLGAN_BLENDER_NAME)(
    BuiltNetwork(
        GLGAN_BLENDER_NAME,
        GLGANBlender,
        GLGANBlendConfig,
        "SWAPLAB_GLGAN_BLENDER",
        "about 2 CPU-minutes for 300 steps of glgan-blend-tiny; give data.train=[FACESET] of peopleDevTrain faces",
    )
)


def load_glgan_blender(path: str | os.PathLike[str] | None = None) -> GLGANBlender:
    """The built GL-GAN blender, frozen (``NetworkMissing`` names the build command without one)."""
    return load_built(GLGAN_BLENDER_NAME, path)  # type: ignore[return-value]
