"""Pixel metrics inside a face mask: SSIM, PSNR and L1 against a reference, and the sharpness ratio.

Pure, batched functions of float32 tensors: images N x 3 x H x W, RGB, values in [0, 1]; masks
N x 1 x H x W in [0, 1] (soft masks weight pixels; None = the whole image). Each returns one value
per image. They compute in float32 (float64 when given) with autocast off, and never resize or
colour-correct.
"""

from __future__ import annotations

import torch
from kornia.metrics import ssim as kornia_ssim
from torch.nn import functional as F

from swaplab.metrics.registry import PerItem, per_item, register_metric
from swaplab.system import full_precision

__all__ = [
    "SSIM_WINDOW",
    "laplacian_variance",
    "masked_l1",
    "masked_mean",
    "masked_psnr",
    "masked_ssim",
    "sharpness_ratio",
]

Tensor = torch.Tensor

#: SSIM's Gaussian window: 11 taps, sigma 1.5 (Wang et al. 2004), kornia's map with reflect padding.
SSIM_WINDOW = 11

#: cv2.Laplacian's default (ksize=1) 4-neighbour kernel, as swaplab.faces.analyze.sharpness uses.
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
#: ITU-R BT.601 luma weights (cv2's RGB2GRAY).
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _checked(pred: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    if pred.ndim != 4 or pred.shape != target.shape:
        raise ValueError(
            f"expected two N x C x H x W images of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if mask is not None:
        if tuple(mask.shape) != (pred.shape[0], 1, *pred.shape[2:]):
            raise ValueError(f"mask must be N x 1 x H x W matching {tuple(pred.shape)}, got {tuple(mask.shape)}")
    # float32 unless the caller asks for float64 (half precision would ruin the variances).
    dtype = torch.float64 if torch.float64 in (pred.dtype, target.dtype) else torch.float32
    return pred.to(dtype), target.to(dtype), None if mask is None else mask.to(dtype)


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Per-image mean of ``values`` (N, C, H, W) weighted by ``mask`` (N, 1, H, W): (N,) float32.

    Every channel of a pixel carries the pixel's mask weight. An image whose mask is empty raises.
    """
    if mask is None:
        return values.mean(dim=(1, 2, 3))
    weight = mask.sum(dim=(1, 2, 3)) * values.shape[1]
    if bool((weight <= 0).any()):
        empty = torch.nonzero(weight <= 0).flatten().tolist()
        raise ValueError(f"the mask is empty for image(s) {empty}")
    return (values * mask).sum(dim=(1, 2, 3)) / weight


@register_metric("masked_ssim", better="higher")
def masked_ssim(pred: Tensor, target: Tensor, mask: Tensor | None = None, window_size: int = SSIM_WINDOW) -> PerItem:
    """Structural similarity inside the mask: kornia's SSIM map, averaged over the mask and channels.

    ``pred``, ``target``: N x 3 x H x W in [0, 1]; ``mask``: N x 1 x H x W in [0, 1] or None.
    Returns N values in [-1, 1] (in practice [0, 1]) and their mean; higher is better, 1 means
    identical. The map at a pixel sees a ``window_size`` window (Gaussian, sigma 1.5), so pixels
    up to ``window_size // 2`` outside the mask still count; pixels farther out do not. In float32
    kornia's variances (E[x^2] - E[x]^2) make values accurate to about 1e-4 (pass float64 images,
    about 8x the time on CPU, for more).
    """
    pred, target, mask = _checked(pred, target, mask)
    with full_precision(pred):
        ssim_map = kornia_ssim(pred.contiguous(), target.contiguous(), window_size, max_val=1.0)
        return per_item(masked_mean(ssim_map, mask).cpu().numpy())


@register_metric("masked_psnr", better="higher")
def masked_psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None, max_db: float = 100.0) -> PerItem:
    """Peak signal-to-noise ratio inside the mask, in dB: ``10 log10(1 / MSE)`` over masked pixels.

    ``pred``, ``target``: N x 3 x H x W in [0, 1] (peak value 1); ``mask``: N x 1 x H x W or None.
    Returns N values and their mean (the mean of per-image PSNRs, as papers report it); higher is
    better. Identical images (MSE 0) give ``max_db`` (100 dB) rather than infinity, so that one
    perfect item does not turn the mean infinite; pass ``float("inf")`` to keep infinity. Pixels
    outside the mask (weight 0) do not count at all.
    """
    pred, target, mask = _checked(pred, target, mask)
    mse = masked_mean((pred - target).square(), mask).double()
    psnr = (10.0 * torch.log10(1.0 / mse)).clamp(max=max_db)
    return per_item(psnr.cpu().numpy())


@register_metric("masked_l1", better="lower")
def masked_l1(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> PerItem:
    """Mean absolute difference inside the mask, over channels: N values in [0, 1] and their mean.

    ``pred``, ``target``: N x 3 x H x W in [0, 1]; ``mask``: N x 1 x H x W or None. Lower is better,
    0 means identical inside the mask; pixels outside the mask do not count at all.
    """
    pred, target, mask = _checked(pred, target, mask)
    return per_item(masked_mean((pred - target).abs(), mask).cpu().numpy())


def laplacian_variance(images: Tensor, mask: Tensor | None = None) -> Tensor:
    """Variance of the Laplacian of the grey image inside the mask, (N,), on the [0, 1] scale.

    Grey is BT.601 luma; the Laplacian is cv2's 4-neighbour kernel with reflected borders (so
    ``swaplab.faces.analyze.sharpness`` on uint8 crops gives 255^2 times this value without a mask).
    A pixel's Laplacian sees its 4 neighbours, so the mask's 1-pixel rim also sees outside pixels.
    """
    with full_precision(images):
        images = images if images.dtype == torch.float64 else images.float()
        grey = (images * _LUMA.to(images).view(1, 3, 1, 1)).sum(1, keepdim=True)
        kernel = _LAPLACIAN.to(images).view(1, 1, 3, 3)
        response = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="reflect"), kernel)
        mean = masked_mean(response, mask).view(-1, 1, 1, 1)
        return masked_mean((response - mean).square(), mask)


@register_metric("sharpness_ratio", better="one")
def sharpness_ratio(swap: Tensor, target: Tensor, mask: Tensor | None = None) -> PerItem:
    """Variance of the Laplacian inside the face mask, swap over target: N ratios and their mean.

    ``swap``, ``target``: N x 3 x H x W in [0, 1], the same face region (aligned crops or pasted
    frames); ``mask``: N x 1 x H x W in [0, 1] or None. 1 means as much fine detail as the target;
    below 1 the swap is blurrier (a Gaussian blur of sigma 1.5 px gives 0.05-0.15 on 128 px LFW
    faces), above 1 it has more high frequencies than the target (noise, ringing, GAN artefacts).
    Reported beside identity metrics because those flatter blur. A target that is flat inside the
    mask gives inf (or NaN when the swap is flat too).
    """
    swap, target, mask = _checked(swap, target, mask)
    return per_item((laplacian_variance(swap, mask) / laplacian_variance(target, mask)).cpu().numpy())
