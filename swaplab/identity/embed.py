"""Running identity networks on faces, and comparing what they return.

``embed_faces`` is the one path from photos to identity vectors that the evaluator, the swap
stage (a source person's identity) and the identity network's own verification share: it cuts
each network's chip from the face's 5 landmarks and runs the network without autograd.
Distances and similarities between embeddings are here too. It detects nothing and trains nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swaplab.identity.chips import DLIB_CHIP_PADDING, DLIB_CHIP_SIZE, chip_from_landmarks

__all__ = [
    "FIXED_BATCH",
    "cosine_distance",
    "cosine_similarity",
    "embed_chips",
    "embed_faces",
    "identity_distance",
    "identity_features",
    "same_person",
]

#: Every batch ``embed_faces`` runs holds exactly this many chips (see there).
FIXED_BATCH = 16
#: dlib's same-person threshold on the Euclidean distance between its descriptors.
DLIB_SAME_PERSON_THRESHOLD = 0.6

Layer = Literal["features", "embedding"]


@functools.cache
def _default_encoder() -> nn.Module:
    from swaplab.identity.registry import IDENTITY_ENCODERS

    return IDENTITY_ENCODERS.create("dlib-resnet")


def _run(net: nn.Module, chips: torch.Tensor, layer: Layer, batch_size: int) -> np.ndarray:
    """``net`` (or its ``features``) on float chips in [0, 1], in batches, on the net's device and dtype."""
    if layer not in ("features", "embedding"):
        raise ValueError(f"layer must be 'features' or 'embedding', got {layer!r}")
    parameter = next(net.parameters())
    run = net.features if layer == "features" else net.forward  # type: ignore[operator]
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(chips), batch_size):
            batch = chips[start : start + batch_size].to(parameter.device, parameter.dtype)
            outputs.append(run(batch.contiguous()).float().cpu())
    if not outputs:
        width = getattr(net, "feature_dim" if layer == "features" else "embedding_dim", 0)
        return np.zeros((0, width), np.float32)
    return torch.cat(outputs).numpy()


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 H x W x 3 -> float32 1 x 3 x H x W in [0, 1], contiguous."""
    writable = np.require(image, np.uint8, requirements=["C", "W"])  # decoded images may be read-only
    return torch.from_numpy(writable).permute(2, 0, 1)[None].float().div(255.0).contiguous()


def embed_faces(
    images: Sequence[np.ndarray],
    landmarks5: Sequence[np.ndarray],
    encoder: nn.Module,
    layer: Layer = "embedding",
) -> np.ndarray:
    """Identity vectors (N, D) float32 of one face per image (RGB uint8, any sizes), cut at its 5 landmarks.

    Each network gets dlib's face chip (``chip_from_landmarks``) of its own ``chip_size`` (default
    150) and ``chip_padding`` (default 0.25); ``layer="features"`` runs its ``features`` (dlib's
    256-d penultimate layer, for distribution distances), ``"embedding"`` the network itself.
    """
    size = int(getattr(encoder, "chip_size", DLIB_CHIP_SIZE))
    padding = float(getattr(encoder, "chip_padding", DLIB_CHIP_PADDING))
    if not len(images):
        return np.zeros((0, 0), np.float32)
    chips = torch.cat(
        [
            chip_from_landmarks(_to_tensor(image), torch.as_tensor(np.asarray(points, np.float64))[None], size, padding)
            for image, points in zip(images, landmarks5)
        ]
    )
    # oneDNN picks its kernels by batch size, and kernels round differently (by 1e-7, seen here for
    # batches under 16 on an AMX Xeon, under 4 on an EPYC): every batch is padded to exactly
    # FIXED_BATCH chips, so a face's vector never depends on how many faces came with it.
    count = len(chips)
    remainder = count % FIXED_BATCH
    if remainder:
        chips = torch.cat([chips, chips[-1:].expand(FIXED_BATCH - remainder, -1, -1, -1)])
    return _run(encoder, chips, layer, FIXED_BATCH)[:count]


def identity_features(
    images_or_chips: np.ndarray | torch.Tensor,
    landmarks5: np.ndarray | torch.Tensor | None = None,
    encoder: nn.Module | None = None,
    layer: Layer = "features",
    batch_size: int = 64,
) -> np.ndarray:
    """Identity features of faces, (N, 256) float32 (``layer="features"``) or (N, 128) descriptors.

    ``images_or_chips``: uint8 RGB numpy arrays N x H x W x 3, or float tensors N x 3 x H x W in
    [0, 1]. With ``landmarks5`` ((N, 5, 2) dlib 5-point landmarks in those images' pixels) the
    150 x 150 identity chips are cut here; without, the inputs must already be such chips.
    ``encoder`` defaults to dlib's ResNet (loaded once per process); ``layer="features"`` gives
    its 256-d pooled penultimate features, the ones swaplab's distribution distances use (an FID
    analogue on a face-recognition network instead of Inception), and ``"embedding"`` the 128-d
    descriptors for similarity and retrieval. On one CPU thread batch 16 and 64 both cost about
    7 ms per face (benchmarks/bench_metrics.py).
    """
    net = encoder if encoder is not None else _default_encoder()
    images = _as_nchw(images_or_chips)
    if landmarks5 is None and tuple(images.shape[2:]) != (DLIB_CHIP_SIZE, DLIB_CHIP_SIZE):
        raise ValueError(
            f"inputs of {tuple(images.shape[2:])} px are not {DLIB_CHIP_SIZE} px identity chips: "
            "pass landmarks5 to cut chips from them"
        )
    floats = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if landmarks5 is not None:
        points = torch.as_tensor(np.asarray(landmarks5, dtype=np.float64))
        if points.shape != (len(images), 5, 2):
            raise ValueError(f"expected ({len(images)}, 5, 2) landmarks, got {tuple(points.shape)}")
        floats = (
            torch.cat(
                [
                    chip_from_landmarks(floats[i : i + batch_size], points[i : i + batch_size])
                    for i in range(0, len(floats), batch_size)
                ]
            )
            if len(floats)
            else floats
        )
    return _run(net, floats, layer, batch_size)


def _as_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x 3 arrays -> a uint8 N x 3 x H x W view; N x 3 x H x W tensors pass through."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"numpy input must be uint8 N x H x W x 3 RGB, got {images.dtype} {images.shape}")
        return torch.from_numpy(images).permute(0, 3, 1, 2)
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 3:
        return images
    raise ValueError("expected uint8 N x H x W x 3 RGB arrays or float N x 3 x H x W tensors in [0, 1]")


def embed_chips(encoder: nn.Module, chips: np.ndarray | Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Descriptors (N x D float32) of uint8 RGB chips (N x S x S x 3, S the network's chip size)."""
    stacked = np.ascontiguousarray(np.stack(list(chips)) if not isinstance(chips, np.ndarray) else chips)
    if stacked.ndim != 4 or stacked.shape[-1] != 3 or stacked.dtype != np.uint8:
        raise ValueError(f"expected uint8 chips of shape (N, H, W, 3), got {stacked.dtype} {stacked.shape}")
    floats = torch.from_numpy(stacked).permute(0, 3, 1, 2).float().div_(255.0)
    return _run(encoder, floats, "embedding", batch_size)


# -- distances --------------------------------------------------------------------------------
def identity_distance(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Euclidean distance between descriptors along the last axis (dlib's convention).

    Broadcasts; returns numpy for numpy inputs, a tensor otherwise. With dlib's ResNet, a
    distance below ``DLIB_SAME_PERSON_THRESHOLD`` (0.6) means the same person.
    """
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.linalg.norm(a - b, axis=-1)
    return torch.linalg.vector_norm(torch.as_tensor(a) - torch.as_tensor(b), dim=-1)


def same_person(
    a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, threshold: float = DLIB_SAME_PERSON_THRESHOLD
) -> torch.Tensor | np.ndarray:
    """True where the descriptors are closer than ``threshold`` (dlib's verification rule)."""
    return identity_distance(a, b) < threshold


def cosine_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of descriptors along the last axis, in [-1, 1] (broadcasts)."""
    return F.cosine_similarity(a, b, dim=-1, eps=eps)


def cosine_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - cosine_similarity``: the usual identity loss (0 for the same direction, up to 2).

    Scale-free, unlike :func:`identity_distance`; dlib's descriptors have norms near 1 but the
    0.6 threshold applies to the Euclidean distance only.
    """
    return 1.0 - cosine_similarity(a, b, eps)
