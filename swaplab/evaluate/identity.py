"""Identity metrics: how much a swap looks like its source (similarity, retrieval), and the features.

Pure functions of embeddings (numpy or torch, N x D), plus ``identity_features``, the one place that
runs an identity network for the evaluator. It must not detect faces or train anything.
The default network is dlib's face-recognition ResNet (``swaplab.faces.identity``): its 128-d
descriptors for similarity and retrieval, its 256-d penultimate features for distribution distances.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from swaplab.evaluate.registry import PerItem, per_item, register_metric
from swaplab.faces.identity import DLIB_CHIP_SIZE, chip_from_landmarks, load_dlib_identity

__all__ = ["as_float_array", "identity_features", "identity_retrieval", "identity_similarity"]


def as_float_array(values: np.ndarray | torch.Tensor | Sequence, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """``values`` as a float64 numpy array of ``ndim`` dimensions (tensors are detached, moved to CPU)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {array.shape}")
    return array


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


@functools.cache
def _default_encoder() -> nn.Module:
    return load_dlib_identity()


def identity_features(
    images_or_chips: np.ndarray | torch.Tensor,
    landmarks5: np.ndarray | torch.Tensor | None = None,
    encoder: nn.Module | None = None,
    layer: Literal["features", "embedding"] = "features",
    batch_size: int = 64,
) -> np.ndarray:
    """Identity features of faces, (N, 256) float32 (``layer="features"``) or (N, 128) descriptors.

    ``images_or_chips``: uint8 RGB numpy arrays N x H x W x 3, or float tensors N x 3 x H x W in
    [0, 1]. With ``landmarks5`` ((N, 5, 2) dlib 5-point landmarks in those images' pixels) the
    150 x 150 identity chips are cut here (``chip_from_landmarks``); without, the inputs must
    already be such chips. ``encoder`` defaults to dlib's ResNet (loaded once per process);
    ``layer="features"`` gives its 256-d pooled penultimate features, the ones swaplab's distribution
    distances use (an FID analogue on a face-recognition network instead of Inception), and
    ``"embedding"`` the 128-d descriptors for similarity and retrieval. Runs without autograd, in
    batches of ``batch_size`` (on one CPU thread batch 16 and 64 both cost about 7 ms per face:
    benchmarks/bench_metrics.py).
    """
    if layer not in ("features", "embedding"):
        raise ValueError(f"layer must be 'features' or 'embedding', got {layer!r}")
    net = encoder if encoder is not None else _default_encoder()
    images = _as_nchw(images_or_chips)
    if landmarks5 is None and tuple(images.shape[2:]) != (DLIB_CHIP_SIZE, DLIB_CHIP_SIZE):
        raise ValueError(
            f"inputs of {tuple(images.shape[2:])} px are not {DLIB_CHIP_SIZE} px identity chips: "
            "pass landmarks5 to cut chips from them"
        )
    points = None if landmarks5 is None else torch.as_tensor(np.asarray(landmarks5, dtype=np.float64))
    if points is not None and points.shape != (len(images), 5, 2):
        raise ValueError(f"expected ({len(images)}, 5, 2) landmarks, got {tuple(points.shape)}")
    parameter = next(net.parameters())
    run = net.features if layer == "features" else net.forward
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(parameter.device)
            batch = (batch.float() / 255.0 if batch.dtype == torch.uint8 else batch).to(parameter.dtype)
            if points is not None:
                batch = chip_from_landmarks(batch, points[start : start + batch_size])
            outputs.append(run(batch.contiguous()).float().cpu())
    if not outputs:
        width = getattr(net, "feature_dim" if layer == "features" else "embedding_dim", 0)
        return np.zeros((0, width), np.float32)
    return torch.cat(outputs).numpy()


def _as_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x 3 arrays -> a uint8 N x 3 x H x W view; N x 3 x H x W tensors pass through."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"numpy input must be uint8 N x H x W x 3 RGB, got {images.dtype} {images.shape}")
        return torch.from_numpy(images).permute(0, 3, 1, 2)
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 3:
        return images
    raise ValueError("expected uint8 N x H x W x 3 RGB arrays or float N x 3 x H x W tensors in [0, 1]")
