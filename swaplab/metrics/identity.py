"""Identity metrics: how much a swap looks like its source (similarity, retrieval), and the features.

Pure functions of embeddings (numpy or torch, N x D); the networks that make the embeddings run in
``swaplab.identity.embed``. It must not detect faces, run networks or train anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from swaplab.metrics.registry import PerItem, as_float_array, per_item, register_metric

__all__ = ["identity_retrieval", "identity_similarity"]


def _unit_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


@register_metric("identity_similarity", better="higher")
def identity_similarity(swap_emb: np.ndarray | torch.Tensor, source_emb: np.ndarray | torch.Tensor) -> PerItem:
    """Cosine similarity between each swap's identity embedding and its source's.

    ``swap_emb`` and ``source_emb``: (N, D) embeddings of N pairs (row i of one belongs to row i
    of the other), or a single (D,) source broadcast to every swap. Returns the N cosines, each in
    [-1, 1], and their mean; higher means the swap looks more like its source. dlib's descriptors
    use a narrow range: on 24 LFW photos of 6 people, same-person pairs scored 0.92-0.97 and
    different people 0.77-0.91, so compare models by this number rather than read it absolutely.
    """
    swaps = as_float_array(swap_emb, "swap_emb", 2)
    sources = as_float_array(source_emb, "source_emb", (1, 2))
    sources = sources[None] if sources.ndim == 1 else sources
    if sources.shape[-1] != swaps.shape[-1] or sources.shape[0] not in (1, swaps.shape[0]):
        raise ValueError(f"embeddings do not pair up: swap {swaps.shape}, source {sources.shape}")
    return per_item((_unit_rows(swaps) * _unit_rows(sources)).sum(-1))


@register_metric("identity_retrieval", better="higher")
def identity_retrieval(
    swap_emb: np.ndarray | torch.Tensor,
    gallery_emb: np.ndarray | torch.Tensor,
    gallery_labels: Sequence | np.ndarray,
    true_labels: Sequence | np.ndarray,
    k: Sequence[int] = (1, 5),
    distance: Literal["cosine", "euclidean"] = "cosine",
) -> dict[str, float]:
    """Top-k identity retrieval: the share of swaps whose true source is among the k nearest identities.

    ``swap_emb`` (N, D) are the swaps' embeddings and ``true_labels`` (N,) their sources' labels;
    ``gallery_emb`` (G, D) holds one or more embeddings per identity, labelled by
    ``gallery_labels`` (G,), any hashable values (names or ids). Each identity is represented by
    the mean of its gallery embeddings, so identities with many photos do not win by numbers;
    with ``distance="cosine"`` the embeddings are scaled to unit length before averaging (every
    photo weighs the same) and identities are ranked by cosine similarity, with
    ``"euclidean"`` the raw embeddings are averaged and ranked by Euclidean distance (dlib's own
    comparison). An identity that ties with the true one counts as nearer (a pessimistic rank).

    Returns ``{"top1": a, "top5": b, ...}``, each in [0, 1]; higher means the swaps carry their
    source's identity. Chance level for top-k is k / (number of identities). Every true label must
    be in the gallery, and every k at most the number of identities (else top-k is trivially 1).
    """
    queries = as_float_array(swap_emb, "swap_emb", 2)
    gallery = as_float_array(gallery_emb, "gallery_emb", 2)
    gallery_labels = np.asarray(gallery_labels)
    true_labels = np.asarray(true_labels)
    if gallery_labels.shape != (len(gallery),) or true_labels.shape != (len(queries),):
        raise ValueError(
            f"need one label per embedding: gallery {gallery.shape} with {gallery_labels.shape} labels, "
            f"swaps {queries.shape} with {true_labels.shape} labels"
        )
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"swap embeddings are {queries.shape[1]}-d, gallery embeddings {gallery.shape[1]}-d")
    identities, member_of = np.unique(gallery_labels, return_inverse=True)
    if max(k) > len(identities) or min(k) < 1:
        raise ValueError(f"k={tuple(k)} must lie in 1..{len(identities)} (the gallery's identities)")
    position = {label: index for index, label in enumerate(identities.tolist())}
    missing = sorted({str(label) for label in true_labels.tolist() if label not in position})
    if missing:
        raise ValueError(f"true labels not in the gallery: {', '.join(missing[:5])}")
    truth = np.array([position[label] for label in true_labels.tolist()], dtype=np.int64)

    members = _unit_rows(gallery) if distance == "cosine" else gallery
    counts = np.bincount(member_of, minlength=len(identities)).astype(np.float64)
    centroids = np.zeros((len(identities), gallery.shape[1]))
    np.add.at(centroids, member_of, members)
    centroids /= counts[:, None]
    if distance == "cosine":
        closeness = _unit_rows(queries) @ _unit_rows(centroids).T
    elif distance == "euclidean":
        # |q - c|^2 expanded, so that N x M x D differences are never held in memory.
        squared = (queries**2).sum(1)[:, None] + (centroids**2).sum(1)[None, :] - 2.0 * queries @ centroids.T
        closeness = -np.sqrt(squared.clip(min=0.0))
    else:
        raise ValueError(f"distance must be 'cosine' or 'euclidean', got {distance!r}")
    true_closeness = closeness[np.arange(len(queries)), truth]
    # 0-based rank of the true identity: how many other identities are at least as close.
    rank = (closeness >= true_closeness[:, None]).sum(1) - 1
    return {f"top{kk}": float((rank < kk).mean()) for kk in k}
