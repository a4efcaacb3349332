"""Distribution distances between two sets of face features: Frechet distance and kernel distance.

Pure numpy functions of (N, D) feature matrices. swaplab's features are the 256-d penultimate
features of dlib's face-recognition ResNet (``swaplab.identity.embed.identity_features``), so
these are FID and KID computed on a face network instead of Inception: compare them only with
numbers from the same features and the same sample sizes. They run no network themselves.
"""

from __future__ import annotations

import numpy as np
import torch

from swaplab.metrics.registry import KernelDistance, as_float_array, register_metric

__all__ = ["frechet_distance", "kernel_distance", "polynomial_mmd2"]


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (rounding negatives to 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(eigenvalues.clip(min=0.0))) @ eigenvectors.T


def _feature_pair(feats_a, feats_b, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    a = as_float_array(feats_a, "feats_a", 2)
    b = as_float_array(feats_b, "feats_b", 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in width: {a.shape} and {b.shape}")
    if min(len(a), len(b)) < min_rows:
        raise ValueError(f"need at least {min_rows} rows in each feature set, got {len(a)} and {len(b)}")
    return a, b


@register_metric("frechet_distance", better="lower")
def frechet_distance(feats_a: np.ndarray | torch.Tensor, feats_b: np.ndarray | torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (FID's formula).

    ``feats_a`` (N, D) and ``feats_b`` (M, D), N, M >= 2. With sample means mu and covariances C
    (unbiased, ddof 1):  ``|mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^(1/2))``.
    Returns a float >= 0 in squared feature units; lower means closer distributions, 0 for sets
    with equal means and covariances (Heusel et al. 2017, "GANs trained by a two time-scale
    update rule converge to a local Nash equilibrium").

    Numerics: ``tr((C_a C_b)^(1/2))`` is computed as the sum of square roots of the eigenvalues of
    the symmetric PSD matrix ``C_a^(1/2) C_b C_a^(1/2)`` (same eigenvalues as ``C_a C_b``), both
    by ``eigh`` with tiny negative eigenvalues rounded to 0. Unlike ``scipy.linalg.sqrtm`` of the
    non-symmetric product, this never yields complex parts or fails on singular covariances (D > N).
    The estimate is biased upwards for small N (it needs N well above D; 1000 x 256 is workable):
    compare runs at equal N.
    """
    a, b = _feature_pair(feats_a, feats_b, min_rows=2)
    mean_gap = a.mean(0) - b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_root = np.sqrt(np.linalg.eigvalsh((middle + middle.T) / 2.0).clip(min=0.0)).sum()
    distance = mean_gap @ mean_gap + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root
    return float(max(distance, 0.0))


def polynomial_mmd2(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Unbiased MMD^2 of two samples (m, D) and (n, D) under KID's kernel ``k(u, v) = (u.v / D + 1)^3``.

    ``sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1)) - 2 mean k(x_i, y_j)``;
    its expectation is 0 when x and y are independent samples of one distribution (single values
    can be negative). The Gram products run in float32 (the cost), the cube and the sums in float64.
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.float32)
    dim = x.shape[1]

    def kernel(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u @ v.T).double().div_(dim).add_(1.0).pow_(3)

    def within(u: torch.Tensor) -> torch.Tensor:
        k = kernel(u, u)
        return (k.sum() - k.diagonal().sum()) / (len(u) * (len(u) - 1))

    return float(within(x) + within(y) - 2.0 * kernel(x, y).mean())


@register_metric("kernel_distance", better="lower")
def kernel_distance(
    feats_a: np.ndarray | torch.Tensor,
    feats_b: np.ndarray | torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> KernelDistance:
    """Kernel distance (KID): unbiased MMD^2 with the cubic polynomial kernel, over random subsets.

    Bińkowski et al. 2018, "Demystifying MMD GANs". ``feats_a`` (N, D) and ``feats_b`` (M, D);
    each of ``subsets`` rounds draws ``m = min(subset_size, N, M)`` rows from each set without
    replacement (generator seeded by ``seed``, so a result can be reproduced) and computes
    :func:`polynomial_mmd2`. Returns the mean and standard deviation over the rounds, in squared
    kernel units; lower is better. When neither set has more than ``subset_size`` rows, the two
    full sets are compared once instead (std 0): every round would see (nearly) the same rows.

    Unlike the Frechet distance the estimate is unbiased: 0 on average for independent samples of
    one distribution, whatever m. Two copies of the *same* rows are not independent samples: they
    give ``-(2 / m) (mean_i k(x_i, x_i) - mean_{i != j} k(x_i, x_j))``, a small negative value that
    shrinks as 1/m.
    """
    a, b = _feature_pair(feats_a, feats_b, min_rows=2)
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    a32, b32 = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    if max(len(a), len(b)) <= subset_size:
        return KernelDistance(polynomial_mmd2(a32, b32), 0.0)
    size = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            polynomial_mmd2(
                a32[torch.from_numpy(rng.choice(len(a), size, replace=False))],
                b32[torch.from_numpy(rng.choice(len(b), size, replace=False))],
            )
            for _ in range(subsets)
        ]
    )
    return KernelDistance(float(values.mean()), float(values.std()))
