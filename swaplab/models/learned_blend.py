"""The learned blender: a small U-Net that predicts the seam correction Poisson blending would make.

FSGAN's idea (Nirkin et al., "FSGAN: Subject Agnostic Face Swapping and Reenactment", ICCV 2019)
at CPU size: given the frame, the face pasted over it and the blend mask, it predicts a smooth
colour correction of the face, trained self-supervised (``learned-blender`` recipe) to reproduce
``cv2.seamlessClone`` results (``swaplab.swap.blend.poisson_blend``). The swap stage's
``blend=learned`` composites the corrected face under the mask, so pixels where the mask is 0 are
the frame's, bit for bit. Conventions: float N x C x R x R in [0, 1] at the net's ``resolution``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from swaplab.models.installed import BUILT_NETWORKS, BuiltNetwork, load_built
from swaplab.models.unet import UNet

__all__ = ["LearnedBlender", "LearnedBlenderConfig", "load_learned_blender"]

BLENDER_NAME = "learned-blender"


@dataclass
class LearnedBlenderConfig:
    name: str = BLENDER_NAME
    arch: Literal["learned-blender"] = "learned-blender"
    resolution: int = 64  # the correction is smooth: it is predicted at this side and upsampled
    widths: tuple[int, ...] = (16, 32, 64, 64)


class LearnedBlender(nn.Module):
    """``forward(frame, face, alpha)`` -> the correction to add to ``face`` (N x 3 x R x R)."""

    def __init__(self, config: LearnedBlenderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or LearnedBlenderConfig()
        self.resolution = cfg.resolution
        self.unet = UNet(7, 3, cfg.widths)
        # Start as plain alpha blending: no correction until training has found one.
        nn.init.zeros_(self.unet.head.weight)
        nn.init.zeros_(self.unet.head.bias)

    def forward(self, frame: torch.Tensor, face: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        x = torch.cat([(frame - 0.5) * 2, (face - 0.5) * 2, alpha], dim=1)
        return self.unet(x).float() * 0.5


BUILT_NETWORKS.register(BLENDER_NAME)(
    BuiltNetwork(BLENDER_NAME, LearnedBlender, LearnedBlenderConfig, "SWAPLAB_LEARNED_BLENDER", "2-6 CPU-minutes")
)


def load_learned_blender(path: str | os.PathLike[str] | None = None) -> LearnedBlender:
    """The built learned blender, frozen (``NetworkMissing`` names the build command without one)."""
    return load_built(BLENDER_NAME, path)  # type: ignore[return-value]
