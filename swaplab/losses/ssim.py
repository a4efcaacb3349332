"""Structural dissimilarity losses: DeepFaceLab's DSSIM and multi-scale DSSIM.

DSSIM = (1 - SSIM) / 2, in [0, 1] (0 for identical images). Both losses take an optional weight
map that restricts the SSIM map's average to the face; neither resizes or colour-converts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from swaplab.losses.functional import (
    dfl_dssim_window_sizes,
    ms_ssim_weights,
    per_image_mean,
    ssim_components,
    weighted_mean,
)
from swaplab.losses.registry import LOSSES

Tensor = torch.Tensor


@LOSSES.register("dssim")
class DSSIMLoss(nn.Module):
    """DeepFaceLab's structural dissimilarity, (1 - SSIM) / 2, averaged over window sizes.

    Gaussian windows of sigma 1.5 with 'valid' padding, as DeepFaceLab's ``nn.dssim``. With
    ``window_sizes`` unset, the sizes follow the image side R as SAEHD does: int(R / 11.6)
    (11 at 128 px, 5 at 64 px), and from ``two_scale_from`` px (SAEHD: 256) the average of
    int(R / 11.6) and int(R / 23.2). ``weight`` (N, 1, H, W) averages the SSIM map inside the mask.
    """

    def __init__(
        self,
        window_sizes: Sequence[int] | None = None,
        two_scale_from: int = 256,
        sigma: float = 1.5,
        max_val: float = 1.0,
    ) -> None:
        super().__init__()
        self.window_sizes = tuple(window_sizes) if window_sizes else None
        self.two_scale_from = two_scale_from
        self.sigma = sigma
        self.max_val = max_val

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        sizes = self.window_sizes or dfl_dssim_window_sizes(pred.shape[-1], self.two_scale_from)
        losses = []
        for size in sizes:
            luminance, cs = ssim_components(pred, target, size, self.sigma, self.max_val)
            losses.append(weighted_mean((1.0 - luminance * cs) / 2.0, weight))
        return torch.stack(losses).mean()


@LOSSES.register("ms_dssim")
class MSDSSIMLoss(nn.Module):
    """Multi-scale DSSIM: (1 - MS-SSIM) / 2 over ``levels`` dyadic scales (Wang et al. 2003).

    "Multi-scale structural similarity for image quality assessment": the contrast-structure
    term at each scale and the luminance at the coarsest, combined with the paper's exponents
    (the first ``levels`` of them, renormalised). Images and weights are halved by 2x2 average
    pooling between scales; the coarsest scale must still be at least ``window_size`` wide.
    Negative per-image terms are clamped to a small positive value before the powers.
    """

    def __init__(self, levels: int = 3, window_size: int = 7, sigma: float = 1.5, max_val: float = 1.0):
        super().__init__()
        self.weights = ms_ssim_weights(levels)
        self.window_size = window_size
        self.sigma = sigma
        self.max_val = max_val

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        levels = len(self.weights)
        smallest = min(pred.shape[-2:]) // 2 ** (levels - 1)
        if smallest < self.window_size:
            raise ValueError(
                f"MS-SSIM with {levels} levels shrinks {tuple(pred.shape[-2:])} to {smallest} px, "
                f"below the window ({self.window_size}); use fewer levels or a smaller window"
            )
        log_msssim = torch.zeros(pred.shape[0], device=pred.device)
        for level, exponent in enumerate(self.weights):
            if level:
                pred, target = F.avg_pool2d(pred, 2), F.avg_pool2d(target, 2)
                weight = F.avg_pool2d(weight, 2) if weight is not None else None
            luminance, cs = ssim_components(pred, target, self.window_size, self.sigma, self.max_val)
            term = luminance * cs if level == levels - 1 else cs
            log_msssim = log_msssim + exponent * per_image_mean(term, weight).clamp_min(1e-6).log()
        return ((1.0 - log_msssim.exp()) / 2.0).mean()
