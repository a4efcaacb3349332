"""The edge loss: error between the image gradients of a prediction and its target.

A blurry reconstruction can score a fair pixel error while losing every edge; comparing finite
differences (faceswap-GAN's edge loss) punishes exactly that softness. Pure tensor maths: no
model, no masks of its own (a weight map comes in like every image loss's).
"""

from __future__ import annotations

import torch
from torch import nn

from swaplab.losses.functional import weighted_mean
from swaplab.losses.pixel import Norm, pixel_error
from swaplab.losses.registry import LOSSES

Tensor = torch.Tensor


def image_gradients(images: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences of (N, C, H, W) images: along x (N, C, H, W-1) and along y (N, C, H-1, W)."""
    return images[..., :, 1:] - images[..., :, :-1], images[..., 1:, :] - images[..., :-1, :]


@LOSSES.register("edge")
class EdgeLoss(nn.Module):
    """Mean ``norm`` error of the x and y forward differences, each inside ``weight`` if given.

    ``loss = (mean_w |dx(pred) - dx(target)| + mean_w |dy(pred) - dy(target)|) / 2`` for ``l1``; a
    difference between pixels i and i+1 is weighted by the mean of their two weights.
    """

    def __init__(self, norm: Norm = "l1") -> None:
        super().__init__()
        if norm not in ("l1", "l2"):
            raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
        self.norm = norm

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        pred_x, pred_y = image_gradients(pred.float())
        target_x, target_y = image_gradients(target.float())
        weight_x = weight_y = None
        if weight is not None:
            weight = weight.float()
            weight_x = 0.5 * (weight[..., :, 1:] + weight[..., :, :-1])
            weight_y = 0.5 * (weight[..., 1:, :] + weight[..., :-1, :])
        along_x = weighted_mean(pixel_error(pred_x, target_x, self.norm), weight_x)
        along_y = weighted_mean(pixel_error(pred_y, target_y, self.norm), weight_y)
        return 0.5 * (along_x + along_y)
