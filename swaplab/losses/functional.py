"""Pure tensor functions behind the losses: Gaussian filtering, SSIM maps, weighted means.

Images are (N, C, H, W) float tensors in [0, 1]. These functions always compute in float32 with
autocast disabled: SSIM's variances are differences of nearly equal numbers, which bf16 ruins.
They hold no state and know nothing of configs.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from swaplab.system import full_precision

Tensor = torch.Tensor


def gaussian_kernel1d(size: int, sigma: float, device: torch.device | None = None) -> Tensor:
    """A normalised 1-D Gaussian of ``size`` taps centred at (size - 1) / 2 (even sizes allowed)."""
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2.0
    kernel = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return kernel / kernel.sum()


def gaussian_filter(x: Tensor, size: int, sigma: float, padding: str = "valid") -> Tensor:
    """Depthwise separable Gaussian filter of every channel of ``x`` (N, C, H, W).

    ``padding="valid"`` shrinks each side by size - 1 (as DeepFaceLab's SSIM does);
    ``"same"`` (odd sizes only) reflect-pads so the output keeps H x W. Runs channels_last,
    where depthwise convolutions are several times faster on CPU.
    """
    channels = x.shape[1]
    kernel = gaussian_kernel1d(size, sigma, x.device).to(x.dtype)
    if padding == "same":
        if size % 2 == 0:
            raise ValueError(f"'same' padding needs an odd filter size, got {size}")
        x = F.pad(x, (size // 2,) * 4, mode="reflect")
    elif padding != "valid":
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    x = x.contiguous(memory_format=torch.channels_last)
    horizontal = kernel.view(1, 1, 1, size).expand(channels, 1, 1, size)
    vertical = kernel.view(1, 1, size, 1).expand(channels, 1, size, 1)
    x = F.conv2d(x, horizontal.contiguous(memory_format=torch.channels_last), groups=channels)
    return F.conv2d(x, vertical.contiguous(memory_format=torch.channels_last), groups=channels)


def ssim_components(
    x: Tensor,
    y: Tensor,
    window_size: int,
    sigma: float = 1.5,
    max_val: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> tuple[Tensor, Tensor]:
    """Per-pixel luminance and contrast-structure terms of SSIM (Wang et al. 2004), 'valid' windows.

    Returns ``(luminance, cs)``, each (N, C, H - w + 1, W - w + 1); SSIM = luminance * cs.
    Gaussian window of ``window_size`` taps and ``sigma`` (DeepFaceLab: sigma 1.5 at every size).
    """
    if x.shape != y.shape:
        raise ValueError(f"SSIM needs two images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"SSIM window {window_size} is larger than the image {tuple(x.shape[-2:])}")
    with full_precision(x):
        x, y = x.float(), y.float()
        channels = x.shape[1]
        # Variances are E[x^2] - E[x]^2; centring each image first keeps that difference from
        # cancelling catastrophically in float32 (covariances are invariant to the shifts).
        x_mean = x.mean(dim=(2, 3), keepdim=True).detach()
        y_mean = y.mean(dim=(2, 3), keepdim=True).detach()
        xc, yc = x - x_mean, y - y_mean
        # One filter pass over the five moments instead of five passes.
        moments = gaussian_filter(torch.cat([xc, yc, xc * xc, yc * yc, xc * yc], dim=1), window_size, sigma)
        mu_xc, mu_yc, xx, yy, xy = moments.split(channels, dim=1)
        c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
        mu_x, mu_y = mu_xc + x_mean, mu_yc + y_mean
        luminance = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
        covariance = xy - mu_xc * mu_yc
        variances = xx - mu_xc * mu_xc + yy - mu_yc * mu_yc
        cs = (2.0 * covariance + c2) / (variances + c2)
    return luminance, cs


def crop_to(weight: Tensor, height: int, width: int) -> Tensor:
    """Centre-crop a weight map to a 'valid'-filtered size (the offset of the window centre)."""
    top = (weight.shape[-2] - height) // 2
    left = (weight.shape[-1] - width) // 2
    return weight[..., top : top + height, left : left + width]


def per_image_mean(error: Tensor, weight: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """Mean of an error map (N, C, H, W) per image, inside ``weight`` (N, 1, H, W) if given: (N,).

    With a weight: sum(w * e) / (C * sum(w)), "the mean error inside the mask" whatever the
    mask's area; an all-zero weight gives 0. A weight larger than ``error`` is centre-cropped
    (the error map of a 'valid' filter is smaller than the image).
    """
    error = error.float()
    if weight is None:
        return error.mean(dim=(1, 2, 3))
    if weight.ndim != 4 or weight.shape[1] != 1 or weight.shape[0] != error.shape[0]:
        raise ValueError(f"weight must be (N, 1, H, W) matching the batch, got {tuple(weight.shape)}")
    weight = crop_to(weight.float(), *error.shape[-2:])
    total = (error * weight).sum(dim=(1, 2, 3))
    area = weight.sum(dim=(1, 2, 3)) * error.shape[1]
    return total / (area + eps)


def weighted_mean(error: Tensor, weight: Tensor | None = None) -> Tensor:
    """The batch mean of ``per_image_mean`` (a scalar)."""
    return per_image_mean(error, weight).mean()


def dfl_dssim_window_sizes(resolution: int, two_scale_from: int = 256, min_size: int = 3) -> tuple[int, ...]:
    """DeepFaceLab's DSSIM filter sizes: int(R / 11.6), plus int(R / 23.2) from ``two_scale_from`` px.

    SAEHD uses one scale below 256 px and the average of the two from 256 px (5 * each instead
    of 10 * one). Sizes are clamped to at least ``min_size`` so tiny test images stay meaningful.
    """
    sizes = [int(resolution / 11.6)]
    if resolution >= two_scale_from:
        sizes.append(int(resolution / 23.2))
    return tuple(max(min_size, s) for s in sizes)


def soften_mask(mask: Tensor, resolution: int | None = None) -> Tensor:
    """DeepFaceLab's training mask: Gaussian blur (sigma = max(1, R // 32)), then clip(0, 0.5) * 2.

    The result is 1 inside the hull and up to its edge and falls off softly outside, so the loss
    also covers the first pixels of the border (where blending happens).
    """
    resolution = resolution or mask.shape[-1]
    sigma = max(1, resolution // 32)
    size = max(3, int(4 * sigma))
    size += 1 - size % 2
    with full_precision(mask):
        blurred = gaussian_filter(mask.float(), size, sigma, padding="same")
    return blurred.clamp(0.0, 0.5) * 2.0


def eye_aware_weights(face_weight: Tensor, eyes_mouth_mask: Tensor, priority: float) -> Tensor:
    """faceswap-GAN's eye-aware weight map: ``face_weight * (1 + priority * eyes_mouth_mask)``.

    Both maps (N, 1, H, W) in [0, 1]; the result is ``face_weight`` outside the eyes and mouth and
    up to ``1 + priority`` times it inside, so a loss averaged under this weight spends that much
    more of its attention on the features a viewer looks at first.
    """
    if priority < 0:
        raise ValueError(f"eyes-and-mouth priority must be >= 0, got {priority}")
    if face_weight.shape != eyes_mouth_mask.shape:
        raise ValueError(
            f"face weight {tuple(face_weight.shape)} and eyes/mouth mask {tuple(eyes_mouth_mask.shape)} differ"
        )
    return face_weight * (1.0 + priority * eyes_mouth_mask.to(face_weight.dtype))


def ms_ssim_weights(levels: int) -> list[float]:
    """Wang et al.'s five MS-SSIM scale exponents, the first ``levels`` of them renormalised to 1."""
    base = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
    if not 1 <= levels <= len(base):
        raise ValueError(f"MS-SSIM levels must be 1..{len(base)}, got {levels}")
    chosen = base[:levels]
    return [w / math.fsum(chosen) for w in chosen]
