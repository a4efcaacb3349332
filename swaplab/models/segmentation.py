"""The face segmenter: a small U-Net that labels each pixel of an aligned face crop as background,
face or occluder (hands, glasses, microphones, hair strands in front of the face).

Trained by the ``face-segmenter`` recipe (``swaplab nets build face-segmenter``) on landmark-hull
labels with synthetic occluders pasted over them (``swaplab.faces.occlusion``) and the user's
corrected polygons; loaded with ``load_face_segmenter`` (never trains on load). Conventions:
images are float N x 3 x H x W RGB in [0, 1], any square size (resized to the network's
``resolution`` and back); probabilities are N x C x H x W over ``classes``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swaplab.config import ConfigError
from swaplab.faces.occlusion import BACKGROUND_LABEL, FACE_LABEL, OCCLUDER_LABEL
from swaplab.models.installed import BUILT_NETWORKS, BuiltNetwork, as_batch, load_built
from swaplab.models.unet import UNet

__all__ = [
    "BACKGROUND",
    "FACE",
    "OCCLUDER",
    "SEGMENT_CLASSES",
    "FaceSegmenter",
    "FaceSegmenterConfig",
    "load_face_segmenter",
    "segment_faces",
]

SEGMENTER_NAME = "face-segmenter"
SEGMENT_CLASSES: tuple[str, ...] = ("background", "face", "occluder")
BACKGROUND, FACE, OCCLUDER = BACKGROUND_LABEL, FACE_LABEL, OCCLUDER_LABEL


@dataclass
class FaceSegmenterConfig:
    """The segmenter's shape (everything needed to rebuild it from its weights)."""

    name: str = SEGMENTER_NAME
    arch: Literal["face-segmenter"] = "face-segmenter"
    resolution: int = 64  # side the crop is resized to; the masks are resized back
    widths: tuple[int, ...] = (16, 32, 48, 64)
    classes: tuple[str, ...] = SEGMENT_CLASSES

    def __post_init__(self) -> None:
        if tuple(self.classes[:3]) != SEGMENT_CLASSES:
            raise ConfigError(f"model.classes must start with {', '.join(SEGMENT_CLASSES)}, got {self.classes}")
        if self.resolution % 2 ** (len(self.widths) - 1):
            raise ConfigError(f"model.resolution={self.resolution} must be divisible by 2^{len(self.widths) - 1}")


class FaceSegmenter(nn.Module):
    """Per-pixel class logits of aligned face crops; ``segment`` gives probabilities at any size."""

    def __init__(self, config: FaceSegmenterConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or FaceSegmenterConfig()
        self.resolution = cfg.resolution
        self.classes = tuple(cfg.classes)
        self.unet = UNet(3, len(cfg.classes), cfg.widths)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits N x C x R x R of N x 3 x R x R images in [0, 1] (R = ``resolution``)."""
        return self.unet((images - 0.5) * 2.0)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities N x C x H x W of N x 3 x H x W images in [0, 1] of any size."""
        size = images.shape[-2:]
        small = images
        if tuple(size) != (self.resolution, self.resolution):
            small = F.interpolate(images, size=(self.resolution, self.resolution), mode="area")
        probabilities = self(small).float().softmax(dim=1)
        if tuple(size) != (self.resolution, self.resolution):
            probabilities = F.interpolate(probabilities, size=size, mode="bilinear", align_corners=False)
        return probabilities


BUILT_NETWORKS.register(SEGMENTER_NAME)(
    BuiltNetwork(
        SEGMENTER_NAME, FaceSegmenter, FaceSegmenterConfig, "SWAPLAB_FACE_SEGMENTER", "3-10 CPU-minutes, by load"
    )
)


def load_face_segmenter(path: str | os.PathLike[str] | None = None) -> FaceSegmenter:
    """The built face segmenter, frozen (``NetworkMissing`` names the build command without one)."""
    return load_built(SEGMENTER_NAME, path)  # type: ignore[return-value]


def segment_faces(crops: np.ndarray, segmenter: FaceSegmenter | None = None) -> np.ndarray:
    """Class probabilities (N, C, H, W) float32 of RGB uint8 crops (N, H, W, 3) or one crop (H, W, 3)."""
    net = segmenter if segmenter is not None else load_face_segmenter()
    device = next(net.parameters()).device
    with torch.inference_mode():
        return net.segment(as_batch(crops, device)).cpu().numpy()
