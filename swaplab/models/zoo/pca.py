"""Principal component analysis in closed form: the optimum that a linear autoencoder trained with MSE reaches.

``fit_pca`` (an SVD of the centred images) gives the mean and the top-k principal directions,
``pca_reconstruct`` the best rank-k affine reconstruction (Eckart-Young), and ``principal_angles``
how far apart two subspaces are (the zoo's check that a linear autoencoder's decoder spans the
principal subspace). Pure functions in float64: nothing here trains or is registered.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def fit_pca(images: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(mean (D,), components (k, D)) of ``images`` (N, ...) flattened to D values each.

    The components are orthonormal rows, the directions of largest variance first (the right
    singular vectors of the centred data matrix). Returned in the images' floating dtype.
    """
    flat = images.reshape(len(images), -1)
    if not 1 <= k <= min(flat.shape):
        raise ValueError(f"k must lie in [1, {min(flat.shape)}] for {len(flat)} images of {flat.shape[1]} values")
    dtype = flat.dtype if flat.is_floating_point() else torch.float32
    flat = flat.double()
    mean = flat.mean(0)
    _, _, vt = torch.linalg.svd(flat - mean, full_matrices=False)
    return mean.to(dtype), vt[:k].to(dtype)


def pca_reconstruct(images: Tensor, mean: Tensor, components: Tensor) -> Tensor:
    """``mean + V^T V (x - mean)``: the images projected onto the principal subspace, in their shape."""
    flat = images.reshape(len(images), -1).to(mean.dtype) - mean
    return (mean + flat @ components.T @ components).reshape(images.shape)


def principal_angles(a: Tensor, b: Tensor) -> Tensor:
    """The principal angles (radians, ascending) between the column spans of ``a`` (D, p) and ``b`` (D, q).

    With orthonormal bases Q_a, Q_b of the two spans, the cosines are the singular values of
    ``Q_a^T Q_b``: min(p, q) angles, 0 for shared directions, pi/2 for orthogonal ones. The
    columns need not be orthonormal (a decoder's weight matrix is passed as is), only independent.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"expected two (D, p) and (D, q) matrices, got {tuple(a.shape)} and {tuple(b.shape)}")
    qa, _ = torch.linalg.qr(a.double())
    qb, _ = torch.linalg.qr(b.double())
    cosines = torch.linalg.svdvals(qa.T @ qb).clamp(-1.0, 1.0)  # descending
    return torch.arccos(cosines)
