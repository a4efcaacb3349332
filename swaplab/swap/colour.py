"""Colour transfer: recolour a swapped face so that its colours match the target face's.

Every mode fits a colour map on the pixels inside the mask (``mask >= 0.5``) of each batch item
separately and applies that map to **every** pixel of the item's source, inside the mask or not, so
that the blender can fade the edge without a seam in the colours; this module never blends, warps
or crops. Tensors: float32 (N, 3, H, W), RGB in [0, 1]; masks (N, 1, H, W) in [0, 1]; the output
is clamped to [0, 1] and not differentiable (a post-process). ``target_mask`` (same layout) picks
the target's pixels when its face region differs from the source's; it defaults to ``mask``. An
item with fewer than ``MIN_PIXELS`` masked pixels (in source or target) is returned unchanged.
``idt`` and ``sot`` draw their random directions from one generator seeded by ``seed``, item after
item, so a call is reproducible.

The fitting runs per item in numpy float64 (and OpenCV for Lab): these are (pixels x 3) arrays
against 3x3 matrices and 1-D interpolations, where torch's CPU dispatch measured 10-30x slower.

The modes follow DeepFaceLab's ``color_transfer`` names: ``none``, ``rct`` (Reinhard et al., "Color
Transfer between Images", 2001: per-channel mean and standard deviation in CIE Lab), ``lct`` (linear
colour transfer: RGB covariance matching with principal (eigendecomposition) square roots,
``A = Ct^1/2 Cs^-1/2``), ``mkl`` (the Monge-Kantorovich linear map of Pitie and Kokaram, "The linear
Monge-Kantorovitch linear colour mapping for example-based colour transfer", 2007: the
optimal-transport map between the two Gaussians), ``idt`` (Pitie et al., "Automated colour grading
using colour distribution transfer", 2007: 1-D quantile matching along seeded random rotations),
``sot`` (sliced optimal transport: displacement along seeded random directions, averaged per step;
DeepFaceLab's bilateral regularisation is left out) and ``hist`` (per-channel histogram matching).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
from torch import Tensor

from swaplab.registry import Registry

COLOUR_TRANSFERS: Registry[Callable[..., Tensor]] = Registry("colour transfer")

#: Fewer masked pixels than this in source or target: the item is left as it is.
MIN_PIXELS = 16

#: A colour map fitted on masked pixels: (P, 3) float64 pixels -> (P, 3) recoloured pixels.
PixelMap = Callable[[np.ndarray], np.ndarray]
#: Fits a map from source pixels (M, 3) to target pixels (M', 3); the generator seeds random modes.
MapFitter = Callable[[np.ndarray, np.ndarray, np.random.Generator], PixelMap]


def transfer_colour(
    mode: str,
    source: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    **options: object,
) -> Tensor:
    """Recolour ``source`` towards ``target`` with the registered ``mode`` (see the module docstring)."""
    return COLOUR_TRANSFERS.get(mode)(source, target, mask, **options)


def _recolour(
    source: Tensor,
    target: Tensor,
    mask: Tensor | None,
    target_mask: Tensor | None,
    fit: MapFitter,
    seed: int = 0,
) -> Tensor:
    """Fit ``fit`` per item on the masked pixels, apply it to all of the item's source pixels.

    ``target_mask`` defaults to ``mask`` when target and source have the same size, else to all
    of the target's pixels.
    """
    if source.ndim != 4 or source.shape[1] != 3 or target.ndim != 4 or target.shape[1] != 3:
        shapes = f"{tuple(source.shape)} and {tuple(target.shape)}"
        raise ValueError(f"expected (N, 3, H, W) source and target, got {shapes}")
    if source.shape[0] != target.shape[0]:
        raise ValueError(f"source and target batch sizes differ: {source.shape[0]} vs {target.shape[0]}")
    if target_mask is None and mask is not None and target.shape[-2:] == source.shape[-2:]:
        target_mask = mask
    # One generator per call: item i's random directions depend on the seed and i only.
    generator = np.random.default_rng(seed)
    out = source.detach().clone()
    for i in range(source.shape[0]):
        src = _pixels(source[i])
        tgt = _pixels(target[i])
        src_fit = src if mask is None else src[_inside(mask[i], source.shape[-2:])]
        tgt_fit = tgt if target_mask is None else tgt[_inside(target_mask[i], target.shape[-2:])]
        if len(src_fit) < MIN_PIXELS or len(tgt_fit) < MIN_PIXELS:
            continue
        mapped = fit(src_fit, tgt_fit, generator)(src)
        out[i] = torch.from_numpy(np.ascontiguousarray(mapped.T)).reshape(source.shape[1:]).to(source.dtype)
    return out.clamp_(0.0, 1.0)


def _pixels(image: Tensor) -> np.ndarray:
    """(3, H, W) tensor -> (H*W, 3) float64 array."""
    return np.ascontiguousarray(image.detach().reshape(3, -1).T.cpu().numpy(), dtype=np.float64)


def _inside(mask: Tensor, size: torch.Size) -> np.ndarray:
    if mask.shape[-2:] != size:
        raise ValueError(f"mask size {tuple(mask.shape[-2:])} does not match image size {tuple(size)}")
    return (mask.detach().reshape(-1) >= 0.5).cpu().numpy()


# ------------------------------------------------------------------ moment matching (rct, lct, mkl)


def _mean_cov(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return pixels.mean(0), np.cov(pixels, rowvar=False)


def _sym_power(matrix: np.ndarray, power: float, eps: float = 1e-8) -> np.ndarray:
    """``matrix ** power`` for a symmetric positive semi-definite matrix (eigenvalues floored at eps)."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.maximum(values, eps) ** power) @ vectors.T


def _affine_map(src_mean: np.ndarray, tgt_mean: np.ndarray, matrix: np.ndarray) -> PixelMap:
    return lambda x: (x - src_mean) @ matrix.T + tgt_mean


def _fit_lct(src: np.ndarray, tgt: np.ndarray, _: np.random.Generator) -> PixelMap:
    mu_s, cov_s = _mean_cov(src)
    mu_t, cov_t = _mean_cov(tgt)
    return _affine_map(mu_s, mu_t, _sym_power(cov_t, 0.5) @ _sym_power(cov_s, -0.5))


def _fit_mkl(src: np.ndarray, tgt: np.ndarray, _: np.random.Generator) -> PixelMap:
    mu_s, cov_s = _mean_cov(src)
    mu_t, cov_t = _mean_cov(tgt)
    root_s, inv_root_s = _sym_power(cov_s, 0.5), _sym_power(cov_s, -0.5)
    matrix = inv_root_s @ _sym_power(root_s @ cov_t @ root_s, 0.5) @ inv_root_s
    return _affine_map(mu_s, mu_t, matrix)


def _lab(pixels: np.ndarray, code: int) -> np.ndarray:
    """sRGB [0, 1] <-> CIE Lab (L in [0, 100]) through OpenCV, for (P, 3) arrays."""
    if code == cv2.COLOR_RGB2Lab:
        pixels = np.clip(pixels, 0.0, 1.0)
    image = np.ascontiguousarray(pixels, dtype=np.float32).reshape(-1, 1, 3)
    return cv2.cvtColor(image, code).reshape(-1, 3).astype(np.float64)


def _fit_rct(src: np.ndarray, tgt: np.ndarray, _: np.random.Generator) -> PixelMap:
    src_lab, tgt_lab = (
        _lab(np.clip(src, 0, 1), cv2.COLOR_RGB2Lab),
        _lab(np.clip(tgt, 0, 1), cv2.COLOR_RGB2Lab),
    )
    mu_s, sd_s = src_lab.mean(0), np.maximum(src_lab.std(0), 1e-2)
    mu_t, sd_t = tgt_lab.mean(0), tgt_lab.std(0)

    def apply(x: np.ndarray) -> np.ndarray:
        lab = (_lab(x, cv2.COLOR_RGB2Lab) - mu_s) * (sd_t / sd_s) + mu_t
        return _lab(lab, cv2.COLOR_Lab2RGB)

    return apply


# ------------------------------------------------------------------ distribution matching (idt, sot, hist)


def _quantile_map(src: np.ndarray, tgt: np.ndarray, bins: int) -> Callable[[np.ndarray], np.ndarray]:
    """The monotone 1-D map sending the distribution of ``src`` onto that of ``tgt``.

    Beyond the range of ``src`` it continues with slope 1 (a shift), so that colours outside the
    masked range keep their differences instead of being flattened onto one value.
    """
    levels = np.linspace(0.0, 1.0, bins)
    src_q, tgt_q = np.quantile(src, levels), np.quantile(tgt, levels)

    def apply(x: np.ndarray) -> np.ndarray:
        out = np.interp(x, src_q, tgt_q)
        out = np.where(x < src_q[0], tgt_q[0] + x - src_q[0], out)
        return np.where(x > src_q[-1], tgt_q[-1] + x - src_q[-1], out)

    return apply


def _random_rotation(generator: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(generator.standard_normal((3, 3)))
    return q * np.sign(np.diagonal(r))  # the sign fix makes the draw uniform over rotations


def _match_axes(x: np.ndarray, fit_x: np.ndarray, tgt: np.ndarray, axes: np.ndarray, bins: int) -> np.ndarray:
    """Quantile-match along each row of ``axes`` (orthonormal), fitted on ``fit_x`` -> ``tgt``."""
    proj, proj_fit, proj_tgt = x @ axes.T, fit_x @ axes.T, tgt @ axes.T
    matched = np.stack([_quantile_map(proj_fit[:, d], proj_tgt[:, d], bins)(proj[:, d]) for d in range(3)], 1)
    return x + (matched - proj) @ axes


def _fit_hist(bins: int) -> MapFitter:
    def fit(src: np.ndarray, tgt: np.ndarray, _: np.random.Generator) -> PixelMap:
        return lambda x: _match_axes(x, src, tgt, np.eye(3), bins)

    return fit


def _fit_idt(iterations: int, bins: int) -> MapFitter:
    def fit(src: np.ndarray, tgt: np.ndarray, generator: np.random.Generator) -> PixelMap:
        rotations = [_random_rotation(generator) for _ in range(iterations)]

        def apply(x: np.ndarray) -> np.ndarray:
            # Each step is fitted on the masked source pixels as they stand after the previous
            # steps, so those pixels travel along with the rest.
            n_fit = len(src)
            both = np.concatenate([src, x])
            for rotation in rotations:
                both = _match_axes(both, both[:n_fit], tgt, rotation, bins)
            return both[n_fit:]

        return apply

    return fit


def _fit_sot(steps: int, directions: int, bins: int) -> MapFitter:
    def fit(src: np.ndarray, tgt: np.ndarray, generator: np.random.Generator) -> PixelMap:
        draws = [generator.standard_normal((directions, 3)) for _ in range(steps)]

        def apply(x: np.ndarray) -> np.ndarray:
            n_fit = len(src)
            both = np.concatenate([src, x])
            for draw in draws:
                dirs = draw / np.linalg.norm(draw, axis=1, keepdims=True)
                proj, proj_tgt = both @ dirs.T, tgt @ dirs.T
                maps = [_quantile_map(proj[:n_fit, k], proj_tgt[:, k], bins) for k in range(directions)]
                moved = np.stack([maps[k](proj[:, k]) for k in range(directions)], 1)
                both = both + (moved - proj) @ dirs / directions
            return both[n_fit:]

        return apply

    return fit


# ------------------------------------------------------------------ the registered modes


@COLOUR_TRANSFERS.register("none")
def no_transfer(source: Tensor, target: Tensor, mask: Tensor | None = None, **_: object) -> Tensor:
    """The identity: ``source`` unchanged (a copy)."""
    return source.clone()


@COLOUR_TRANSFERS.register("rct")
def reinhard_transfer(
    source: Tensor, target: Tensor, mask: Tensor | None = None, target_mask: Tensor | None = None
) -> Tensor:
    """Match per-channel mean and standard deviation in CIE Lab (Reinhard et al. 2001)."""
    return _recolour(source, target, mask, target_mask, _fit_rct)


@COLOUR_TRANSFERS.register("lct")
def linear_transfer(
    source: Tensor, target: Tensor, mask: Tensor | None = None, target_mask: Tensor | None = None
) -> Tensor:
    """Match the RGB mean and covariance, ``x -> Ct^1/2 Cs^-1/2 (x - ms) + mt`` (eigendecomposition roots)."""
    return _recolour(source, target, mask, target_mask, _fit_lct)


@COLOUR_TRANSFERS.register("mkl")
def monge_kantorovich_transfer(
    source: Tensor, target: Tensor, mask: Tensor | None = None, target_mask: Tensor | None = None
) -> Tensor:
    """Match the RGB mean and covariance with the Monge-Kantorovich (least-displacement) linear map."""
    return _recolour(source, target, mask, target_mask, _fit_mkl)


@COLOUR_TRANSFERS.register("idt")
def iterative_distribution_transfer(
    source: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    target_mask: Tensor | None = None,
    iterations: int = 20,
    bins: int = 256,
    seed: int = 0,
) -> Tensor:
    """Match the full 3-D colour distribution by 1-D quantile matching along random rotations."""
    return _recolour(source, target, mask, target_mask, _fit_idt(iterations, bins), seed)


@COLOUR_TRANSFERS.register("sot")
def sliced_ot_transfer(
    source: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    target_mask: Tensor | None = None,
    steps: int = 10,
    directions: int = 5,
    bins: int = 256,
    seed: int = 0,
) -> Tensor:
    """Sliced optimal transport: per step, move along ``directions`` random unit vectors by the mean
    of the 1-D transport displacements (DeepFaceLab's ``color_transfer_sot`` without its bilateral
    regularisation)."""
    return _recolour(source, target, mask, target_mask, _fit_sot(steps, directions, bins), seed)


@COLOUR_TRANSFERS.register("hist")
def histogram_transfer(
    source: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    target_mask: Tensor | None = None,
    bins: int = 256,
) -> Tensor:
    """Per-channel (R, G, B) histogram matching by quantile maps with ``bins`` levels."""
    return _recolour(source, target, mask, target_mask, _fit_hist(bins))
