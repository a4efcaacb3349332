"""How much of an occluder survives a swap: the swap's error inside the occluder's mask, relative to
how far the occluder is from the face it hides.

A pure, batched function of float32 tensors (images N x 3 x H x W in [0, 1], masks N x 1 x H x W).
"""

from __future__ import annotations

import torch

from swaplab.metrics.reconstruction import masked_mean
from swaplab.metrics.registry import PerItem, per_item, register_metric

__all__ = ["occluder_error"]

Tensor = torch.Tensor


@register_metric("occluder_error", better="lower")
def occluder_error(swap: Tensor, occluded: Tensor, original: Tensor, mask: Tensor) -> PerItem:
    """Mean absolute difference of ``swap`` from the ``occluded`` target inside the occluder ``mask``,
    over that of the ``original`` (unoccluded) photo from the occluded one: N ratios and their mean.

    0: the occluder is in the swap exactly; 1: the swap differs from the occluder as much as the face
    under it does (a swapper that paints a face over the occluder lands near 1); above 1 it differs
    even more. An occluder identical to the face under it gives inf (no contrast to lose).
    """
    if not swap.shape == occluded.shape == original.shape or swap.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(
            f"expected images N x 3 x H x W of one shape and a N x 1 x H x W mask, got {tuple(swap.shape)}, "
            f"{tuple(occluded.shape)}, {tuple(original.shape)}, {tuple(mask.shape)}"
        )
    lost = masked_mean((swap.float() - occluded.float()).abs(), mask.float())
    contrast = masked_mean((original.float() - occluded.float()).abs(), mask.float())
    return per_item((lost / contrast).cpu().numpy())
