"""Temporal-stability metrics of one swapped video: landmark jitter, identity drift, flicker (raw and
with the target's motion taken out).

Pure functions of per-frame landmarks (T, 68, 2), embeddings (T, D) or frames (T, 3, H, W) in
[0, 1], each optionally relative to the target video's own value (a swap should move and change
as much as the face it replaces, no more). They read no video and find no landmarks.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from swaplab.faces.landmarks import inter_ocular_distance
from swaplab.metrics.reconstruction import masked_mean
from swaplab.metrics.registry import as_float_array, register_metric
from swaplab.system import full_precision

__all__ = ["IdentityDrift", "flicker", "identity_drift", "landmark_jitter", "warped_flicker"]

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


def _flow_and_trust(
    previous: np.ndarray, current: np.ndarray, dis: Any, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel of ``current`` came from in ``previous`` (a backward flow, H x W x 2 px, by
    ``dis``, OpenCV's DIS optical flow, on grey uint8 images; ``grid`` holds each pixel's (x, y))
    and where that is to be trusted: the forward flow carries it back to where it started
    (Sundaram et al.'s check; fails at occlusions)."""
    import cv2

    backward = dis.calc(current, previous, None)
    forward = dis.calc(previous, current, None)
    height, width = current.shape
    where = grid + backward
    forward_there = cv2.remap(forward, where[..., 0], where[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    loop = backward + forward_there
    bound = 0.01 * (np.square(backward).sum(-1) + np.square(forward_there).sum(-1)) + 0.5
    inside = (where[..., 0] >= 0) & (where[..., 0] <= width - 1) & (where[..., 1] >= 0) & (where[..., 1] <= height - 1)
    return where, (np.square(loop).sum(-1) < bound) & inside


@register_metric("warped_flicker", better="lower")
def warped_flicker(frames: Tensor, reference_frames: Tensor, masks: Tensor | None = None) -> float:
    """Flicker once the target's motion is taken out: the swap's change between frames that the
    target video's optical flow does not explain, over the target's own such change.

    ``flicker`` compares raw frame differences, and a face that moves by a fraction of a pixel
    changes in proportion to its detail: a sharp face that moves exactly as the target does scores
    more than a blurred one that flickers. Here each swapped frame t-1 is warped by the target's flow
    (t-1 -> t, found on the target's frames, trusted where the forward and backward flows agree)
    before the difference is taken, so what remains is change the face's motion does not explain:
    detail drawn anew each frame, lighting that jumps. Masks, shapes and the RMS are as ``flicker``'s;
    the target's own residual (flow error, real lighting change) is the denominator: 1 means no more
    unexplained change than the target has, above 1 the swap flickers. Lower is better.
    """
    import cv2

    if frames.ndim != 4 or frames.shape[0] < 2 or reference_frames.shape != frames.shape:
        raise ValueError(
            f"need T x C x H x W frames with T >= 2 and reference frames alike, got {tuple(frames.shape)} "
            f"and {tuple(reference_frames.shape)}"
        )
    if masks is not None and masks.shape != (frames.shape[0], 1, *frames.shape[2:]):
        raise ValueError(f"masks {tuple(masks.shape)} do not match frames {tuple(frames.shape)}")
    with full_precision(frames):
        swap = frames.detach().float().cpu().permute(0, 2, 3, 1).contiguous().numpy()
        target = reference_frames.detach().float().cpu().permute(0, 2, 3, 1).contiguous().numpy()
    grey = [cv2.cvtColor(np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY) for f in target]
    weights = None if masks is None else masks.detach().float().cpu()[:, 0].numpy()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    height, width = grey[0].shape
    grid = np.stack(np.meshgrid(np.arange(width), np.arange(height)), -1).astype(np.float32)
    energies = {"swap": [], "target": []}
    for t in range(1, len(swap)):
        where, trusted = _flow_and_trust(grey[t - 1], grey[t], dis, grid)
        weight = trusted.astype(np.float64)
        if weights is not None:
            weight = weight * weights[t] * weights[t - 1]
        if weight.sum() == 0:
            continue
        for name, video in (("swap", swap), ("target", target)):
            moved = cv2.remap(video[t - 1], where[..., 0], where[..., 1], cv2.INTER_LINEAR)
            squared = np.square(video[t] - moved).mean(-1)
            energies[name].append(float((squared * weight).sum() / weight.sum()))
    if not energies["swap"]:
        raise ValueError("no pixel inside the masks could be followed from one frame to the next")
    return _relative(float(np.sqrt(np.mean(energies["swap"]))), float(np.sqrt(np.mean(energies["target"]))))
