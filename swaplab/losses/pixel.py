"""Per-pixel losses: L1/L2 image reconstruction and the learned-mask loss.

One ``norm`` switch chooses L1 or L2, so an ablation flips the norm without swapping classes.
The optional weight map restricts the mean to the face (see ``functional.per_image_mean``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from swaplab.losses.functional import weighted_mean
from swaplab.losses.registry import LOSSES

Tensor = torch.Tensor
Norm = Literal["l1", "l2"]


def pixel_error(pred: Tensor, target: Tensor, norm: Norm) -> Tensor:
    """|pred - target| or (pred - target)^2, computed in float32."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    diff = pred.float() - target.float()
    if norm == "l1":
        return diff.abs()
    if norm == "l2":
        return diff * diff
    raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")


@LOSSES.register("pixel")
class PixelLoss(nn.Module):
    """Mean absolute (``l1``) or squared (``l2``) error, inside ``weight`` if given.

    DeepFaceLab's SAEHD uses L2 (weight 10, beside 10 x DSSIM); SimSwap's reconstruction L1.
    """

    def __init__(self, norm: Norm = "l1") -> None:
        super().__init__()
        if norm not in ("l1", "l2"):
            raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
        self.norm = norm

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        return weighted_mean(pixel_error(pred, target, self.norm), weight)


@LOSSES.register("mask")
class MaskLoss(PixelLoss):
    """The learned mask (N, 1, H, W) against the landmark-hull target mask; L2 like DeepFaceLab.

    DeepFaceLab trains its mask branch with 10 x mean squared error against the unblurred target.
    """

    def __init__(self, norm: Norm = "l2") -> None:
        super().__init__(norm)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        if pred.ndim != 4 or pred.shape[1] != 1:
            raise ValueError(f"mask loss expects (N, 1, H, W) masks, got {tuple(pred.shape)}")
        return super().forward(pred, target, weight)
