"""Temporal-stability metrics of one swapped video: landmark jitter, identity drift, flicker.

Pure functions of per-frame landmarks (T, 68, 2), embeddings (T, D) or frames (T, 3, H, W) in
[0, 1], each optionally relative to the target video's own value (a swap should move and change
as much as the face it replaces, no more). They read no video and find no landmarks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from swaplab.faces.landmarks import inter_ocular_distance
from swaplab.metrics.reconstruction import masked_mean
from swaplab.metrics.registry import as_float_array, register_metric
from swaplab.system import full_precision

__all__ = ["IdentityDrift", "flicker", "identity_drift", "landmark_jitter"]

Tensor = torch.Tensor


class IdentityDrift(NamedTuple):
    """Spread of per-frame identity embeddings around their mean (Euclidean, embedding units)."""

    mean_distance: float  # mean over frames of |e_t - mean|
    variance: float  # mean over frames of |e_t - mean|^2 (the total variance)


def _relative(value: float, reference: float) -> float:
    """``value / reference``; a static reference gives 1 for a static swap and inf otherwise."""
    if reference == 0.0:
        return 1.0 if value == 0.0 else float("inf")
    return value / reference


@register_metric("landmark_jitter", better="lower")
def landmark_jitter(
    landmarks_over_time: np.ndarray | Tensor,
    reference: np.ndarray | Tensor | None = None,
    order: int = 1,
) -> float:
    """Mean frame-to-frame landmark displacement, in inter-ocular distances per frame.

    ``landmarks_over_time``: (T, 68, 2) landmarks found on the swapped frames, T >= order + 1.
    The displacement of each point between consecutive frames (``order=1``; ``order=2`` uses the
    second difference, the change of velocity, which ignores steady head motion and keeps only
    jitter) is averaged over points and frames and divided by the mean outer-eye-corner distance.
    A static face gives 0; i.i.d. noise of sigma px per coordinate gives about
    ``sqrt(pi) * sigma / iod`` at order 1.

    With ``reference`` ((T, 68, 2) landmarks of the target video, frame for frame), the result is
    the swap's value over the target's, both scaled by the target's eye distance: 1 means the swap
    moves exactly as much as the target, above 1 it jitters more. (The ratio is 1 for a static
    swap of a static target, inf for a moving swap of a static target.) Lower is better.
    """
    points = as_float_array(landmarks_over_time, "landmarks_over_time", 3)
    if points.shape[1:] != (68, 2) or len(points) < order + 1 or order < 1:
        raise ValueError(f"need (T, 68, 2) landmarks with T > order = {order}, got {points.shape}")
    ref = None if reference is None else as_float_array(reference, "reference", 3)
    if ref is not None and ref.shape != points.shape:
        raise ValueError(f"reference landmarks {ref.shape} do not match the swap's {points.shape}")
    scale = float(inter_ocular_distance(points if ref is None else ref).mean())

    def motion(sequence: np.ndarray) -> float:
        return float(np.linalg.norm(np.diff(sequence, n=order, axis=0), axis=-1).mean()) / scale

    return motion(points) if ref is None else _relative(motion(points), motion(ref))


@register_metric("identity_drift", better="lower")
def identity_drift(embeddings: np.ndarray | Tensor) -> IdentityDrift:
    """How far the per-frame identity embeddings (T, D) stray from their mean over the video.

    Returns the mean Euclidean distance to the mean embedding and the mean squared distance (the
    total variance, ddof 0), in embedding units (dlib's descriptors: photos of one person lie
    0.34-0.53 apart in tests/test_identity.py; the same-person threshold is 0.6). 0 for a constant
    identity; lower is better. Both scale with the noise: doubling per-frame noise doubles the
    first and quadruples the second.
    """
    vectors = as_float_array(embeddings, "embeddings", 2)
    if len(vectors) < 1:
        raise ValueError("identity_drift needs at least one frame")
    distances = np.linalg.norm(vectors - vectors.mean(0), axis=-1)
    return IdentityDrift(float(distances.mean()), float(np.square(distances).mean()))


@register_metric("flicker", better="lower")
def flicker(
    frames: Tensor,
    masks: Tensor | None = None,
    reference_frames: Tensor | None = None,
) -> float:
    """Temporal difference energy inside the face mask, as an RMS value on the [0, 1] pixel scale.

    ``frames``: (T, 3, H, W) swapped frames (or aligned crops) in [0, 1], T >= 2; ``masks``:
    (T, 1, H, W) in [0, 1] or None (whole frame). For each pair of consecutive frames, the squared
    difference is averaged over the pixels inside both frames' masks (weights multiplied) and the
    channels; the result is the square root of the mean over pairs. A static video gives 0;
    i.i.d. per-frame noise of sigma gives ``sqrt(2) * sigma``, in proportion to sigma.

    With ``reference_frames`` (the target video's frames, same shape; the same masks apply), the
    result is the swap's value over the target's: 1 means no more temporal change than the target
    has, above 1 the swap flickers. Lower is better.
    """

    def energy_rms(video: Tensor) -> float:
        if video.ndim != 4 or video.shape[0] < 2:
            raise ValueError(f"need T x C x H x W frames with T >= 2, got {tuple(video.shape)}")
        with full_precision(video):
            video = video.float()
            pair_masks = None if masks is None else masks[1:].float() * masks[:-1].float()
            if pair_masks is not None and pair_masks.shape != (len(video) - 1, 1, *video.shape[2:]):
                raise ValueError(f"masks {tuple(masks.shape)} do not match frames {tuple(video.shape)}")
            energy = masked_mean((video[1:] - video[:-1]).square(), pair_masks)
            return float(energy.double().mean().sqrt())

    value = energy_rms(frames)
    if reference_frames is None:
        return value
    if reference_frames.shape != frames.shape:
        raise ValueError(f"reference frames {tuple(reference_frames.shape)} do not match {tuple(frames.shape)}")
    return _relative(value, energy_rms(reference_frames))
