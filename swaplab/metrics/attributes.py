"""Attribute metrics: how well a swap keeps the target's head pose and expression.

Pure functions of 68-point landmarks (float (N, 68, 2) or (68, 2), (x, y) pixels, iBUG layout)
found on the target and on the swap in the same frame; they do not locate landmarks themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from swaplab.faces import pose as head_pose_model
from swaplab.faces.align import umeyama
from swaplab.faces.landmarks import LANDMARKS_68, inter_ocular_distance
from swaplab.metrics.registry import PerItem, as_float_array, per_item, register_metric

__all__ = ["EXPRESSION_ALIGN_68", "EXPRESSION_POINTS_68", "expression_error", "pose_error"]


def _indices(*regions: str) -> tuple[int, ...]:
    return tuple(i for region in regions for i in range(68)[LANDMARKS_68[region]])


#: Points the swap is aligned to the target on: the nose (27-35) and the four eye corners. They
#: hardly move with expression. Fitting on all 68 would let an opened mouth or raised brows pull
#: the fit, so that points which did not move show an error too and the error no longer says
#: which region changed (the jaw, moreover, moves with the mouth).
EXPRESSION_ALIGN_68: tuple[int, ...] = _indices("nose") + (36, 39, 42, 45)

#: Points whose aligned distance is the expression error: brows, eyes and mouth (42 points).
EXPRESSION_POINTS_68: tuple[int, ...] = _indices("brows", "eyes", "mouth")


def _landmark_batches(target: np.ndarray, swap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    target = as_float_array(target, "target_landmarks68", (2, 3))
    swap = as_float_array(swap, "swap_landmarks68", (2, 3))
    target, swap = target.reshape(-1, *target.shape[-2:]), swap.reshape(-1, *swap.shape[-2:])
    if target.shape != swap.shape or target.shape[1:] != (68, 2):
        raise ValueError(f"expected two (N, 68, 2) landmark sets, got {target.shape} and {swap.shape}")
    return target, swap


@register_metric("pose_error", better="lower")
def pose_error(
    target_landmarks68: np.ndarray | torch.Tensor,
    swap_landmarks68: np.ndarray | torch.Tensor,
    image_size: tuple[int, int],
) -> PerItem:
    """Head-pose error: L2 distance in degrees between the target's and the swap's (yaw, pitch, roll).

    Poses are solved from the 68 landmarks by ``swaplab.faces.pose.head_pose`` (PnP against a
    generic 3D face; ``image_size`` = (height, width) of the frame both landmark sets refer to, which
    fixes the camera). Returns N values >= 0 and their mean; lower is better, 0 means the same
    pose. This is the swap papers' "pose error" (SimSwap reports 1.53 with its own pose network).
    """
    target, swap = _landmark_batches(target_landmarks68, swap_landmarks68)
    target_pose = head_pose_model.head_poses(target, image_size)
    swap_pose = head_pose_model.head_poses(swap, image_size)
    return per_item(head_pose_model.pose_error(target_pose, swap_pose))


@register_metric("expression_error", better="lower")
def expression_error(
    target_landmarks68: np.ndarray | torch.Tensor,
    swap_landmarks68: np.ndarray | torch.Tensor,
    align_indices: Sequence[int] = EXPRESSION_ALIGN_68,
    measure_indices: Sequence[int] = EXPRESSION_POINTS_68,
) -> PerItem:
    """Expression error: aligned distance of brows, eyes and mouth, in target inter-ocular distances.

    The swap's landmarks are mapped onto the target's by the least-squares similarity transform
    (Umeyama) fitted on ``align_indices`` (the nose and eye corners, see ``EXPRESSION_ALIGN_68``),
    so position, size and in-plane rotation do not count; then the mean Euclidean distance over
    ``measure_indices`` (brows, eyes, mouth) is divided by the target's outer-eye-corner distance.
    Returns N values >= 0 and their mean; lower is better, 0 is the same expression, 0.1 is a mean
    shift of a tenth of the eye span over the 42 points. Head turns
    (out-of-plane) are not removed by a 2D similarity and show up here too: read it beside the pose
    error.
    """
    target, swap = _landmark_batches(target_landmarks68, swap_landmarks68)
    align = list(align_indices)
    transform = umeyama(swap[:, align], target[:, align])  # (N, 3, 3), swap -> target
    aligned = swap @ np.swapaxes(transform[:, :2, :2], 1, 2) + transform[:, None, :2, 2]
    measure = list(measure_indices)
    distances = np.linalg.norm(aligned[:, measure] - target[:, measure], axis=-1).mean(-1)
    return per_item(distances / inter_ocular_distance(target))
