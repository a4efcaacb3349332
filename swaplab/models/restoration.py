"""The face restorer: a small residual U-Net that sharpens an upscaled, soft or compressed face crop.

Trained by the ``face-restorer`` recipe (``swaplab nets build face-restorer``) on aligned LFW
training-split faces against synthetic degradations (downscale 2-4x, blur, noise, JPEG), and used
by the swap stage (``restore=on``) on the swapped face after it is upscaled to the frame's
footprint, so the pasted face reaches the frame's resolution. Loading never trains. It predicts a
correction added to its input, so a strength between 0 and 1 blends towards the input; it must
not change who the face is (benchmarks/bench_restore.py measures the identity distance).
Conventions: float N x 3 x H x W RGB in [0, 1], any size (padded to a multiple internally).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swaplab.models.installed import BUILT_NETWORKS, BuiltNetwork, as_batch, load_built
from swaplab.models.unet import UNet

__all__ = ["FaceRestorer", "FaceRestorerConfig", "load_face_restorer", "restore_faces"]

RESTORER_NAME = "face-restorer"


@dataclass
class FaceRestorerConfig:
    """The restorer's shape (everything needed to rebuild it from its weights)."""

    name: str = RESTORER_NAME
    arch: Literal["face-restorer"] = "face-restorer"
    widths: tuple[int, ...] = (16, 32, 64)


class FaceRestorer(nn.Module):
    """``forward``: images plus a predicted correction, clamped to [0, 1]."""

    def __init__(self, config: FaceRestorerConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or FaceRestorerConfig()
        self.unet = UNet(3, 3, cfg.widths)
        # Start as the identity map: training adds corrections, and a clean face stays as it was.
        nn.init.zeros_(self.unet.head.weight)
        nn.init.zeros_(self.unet.head.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W in [0, 1] (sides multiples of ``unet.multiple``) -> restored, same shape."""
        return (images + self.unet((images - 0.5) * 2.0).float() * 0.5).clamp(0.0, 1.0)

    def restore(self, images: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """``images`` of any size moved ``strength`` of the way to the restored face (reflect-padded
        to the U-Net's multiple and cropped back)."""
        height, width = images.shape[-2:]
        multiple = self.unet.multiple
        pad_h, pad_w = -height % multiple, -width % multiple
        padded = F.pad(images, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else images
        restored = self(padded)[..., :height, :width]
        return images + strength * (restored - images)


BUILT_NETWORKS.register(RESTORER_NAME)(
    BuiltNetwork(RESTORER_NAME, FaceRestorer, FaceRestorerConfig, "SWAPLAB_FACE_RESTORER", "2-5 CPU-minutes, by load")
)


def load_face_restorer(path: str | os.PathLike[str] | None = None) -> FaceRestorer:
    """The built face restorer, frozen (``NetworkMissing`` names the build command without one)."""
    return load_built(RESTORER_NAME, path)  # type: ignore[return-value]


def restore_faces(
    faces: np.ndarray,
    strength: float = 1.0,
    restorer: FaceRestorer | None = None,
    dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Restored RGB uint8 faces (N, H, W, 3), or one face (H, W, 3), of the same shape. ``dtype``:
    an autocast dtype (bf16 with channels-last runs about 2x faster on this project's CPU)."""
    from swaplab.system import autocast

    net = restorer if restorer is not None else load_face_restorer()
    single = faces.ndim == 3
    device = next(net.parameters()).device
    batch = as_batch(faces, device)
    if dtype is not None:
        net = net.to(memory_format=torch.channels_last)
        batch = batch.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, dtype):
        out = net.restore(batch, strength).float()
    out = out.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return out[0] if single else out
