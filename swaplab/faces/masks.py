"""Masks from 68 landmarks: the face hull with forehead, eyes, brows and mouth, eroded and feathered.

Rasterises polygons only; it does not learn masks, blend images or align faces. Coordinates:
landmarks are (68, 2) (x, y) pixels of the image the mask is for, pixel centres at integers; masks
are float32 H x W in [0, 1] (numpy), or float32 tensors N x 1 x H x W for the batched version.
"""

from __future__ import annotations

import functools
from typing import Literal

import cv2
import numpy as np
import torch

from swaplab.faces.landmarks import LANDMARKS_68, inter_ocular_distance
from swaplab.registry import Registry

MASKS: Registry = Registry("mask")

Region = Literal["face", "eyes", "mouth", "brows", "eyes_mouth"]
REGIONS: tuple[str, ...] = ("face", "eyes", "mouth", "brows", "eyes_mouth")

#: Growth of the small regions beyond their landmark hull, as a fraction of the outer-eye-corner
#: distance: the eye hull runs along the lid margins and the brow hull is nearly a line, so
#: without a margin the masks miss the lids, lashes and brow hair that a loss should weight.
REGION_MARGIN: dict[str, float] = {"eyes": 0.08, "brows": 0.06, "mouth": 0.05}

#: For each brow point (17-26), the eye point it is pushed away from to reach the forehead.
_BROW_ANCHORS = np.array([36, 36, 37, 38, 39, 42, 43, 44, 45, 45])

# Sub-pixel precision of cv2's polygon filler: coordinates are fixed point with this many bits.
_SHIFT = 4


def forehead_points(points68: np.ndarray, forehead: float = 0.8) -> np.ndarray:
    """The brows moved up by ``forehead`` times their distance from the eyes: (..., 10, 2).

    DeepFaceLab's hull masks reach the forehead the same way with 0.5, which stops just above
    the brows; the default 0.8 was chosen by eye on LFW and HDTF faces to cover the lower
    forehead without reaching a fringe of hair; 1.0 reaches about halfway up a typical forehead.
    """
    points68 = np.asarray(points68, dtype=np.float64)
    brows = points68[..., LANDMARKS_68["brows"], :]
    return brows + forehead * (brows - points68[..., _BROW_ANCHORS, :])


def face_hull_polygon(points68: np.ndarray, forehead: float = 0.8) -> np.ndarray:
    """Convex hull of the jaw, the brows and the brows pushed up to the forehead: (M, 2) float32."""
    points68 = np.asarray(points68, dtype=np.float32)
    outline = np.concatenate(
        [points68[LANDMARKS_68["jaw"]], points68[LANDMARKS_68["brows"]], forehead_points(points68, forehead)]
    ).astype(np.float32)
    return cv2.convexHull(outline)[:, 0, :]


def region_polygons(points68: np.ndarray, region: str, forehead: float = 0.8) -> list[tuple[np.ndarray, float]]:
    """The convex polygons of ``region`` with each one's margin in pixels (before erode/blur)."""
    points68 = np.asarray(points68, dtype=np.float32)
    if points68.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {points68.shape}")
    if region == "face":
        return [(face_hull_polygon(points68, forehead), 0.0)]
    if region == "eyes_mouth":
        return region_polygons(points68, "eyes") + region_polygons(points68, "mouth")
    parts = {
        "eyes": ("right_eye", "left_eye"),
        "brows": ("right_brow", "left_brow"),
        "mouth": ("outer_lips",),
    }
    if region not in parts:
        raise ValueError(f"unknown mask region {region!r}; choose from {', '.join(REGIONS)}")
    margin = REGION_MARGIN[region] * float(inter_ocular_distance(points68))
    return [(cv2.convexHull(points68[LANDMARKS_68[part]])[:, 0, :], margin) for part in parts[region]]


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def landmark_mask(
    points68: np.ndarray,
    size_hw: tuple[int, int] | int,
    region: Region = "face",
    erode: int = 0,
    blur: int = 0,
    forehead: float = 0.8,
) -> np.ndarray:
    """A float32 H x W mask in [0, 1] of ``region`` (see REGIONS) drawn from 68 landmarks.

    ``erode``: pixels to shrink the mask by (negative grows it). ``blur``: feather radius in
    pixels (a Gaussian of sigma blur/2 over a 2*blur+1 window, so the edge ramps over about
    2*blur pixels, centred on the hard edge). ``forehead``: how far the face hull reaches above
    the brows (see ``forehead_points``). Edges are anti-aliased at 1/16 pixel precision.
    """
    height, width = (size_hw, size_hw) if isinstance(size_hw, int) else size_hw
    mask = np.zeros((height, width), np.uint8)
    for polygon, margin in region_polygons(points68, region, forehead):
        layer = np.zeros_like(mask)
        fixed = np.round(polygon * (1 << _SHIFT)).astype(np.int32)
        cv2.fillConvexPoly(layer, fixed, 255, lineType=cv2.LINE_AA, shift=_SHIFT)
        if round(margin) > 0:
            layer = cv2.dilate(layer, _disk(round(margin)))
        np.maximum(mask, layer, out=mask)
    if erode > 0:
        mask = cv2.erode(mask, _disk(int(erode)))
    elif erode < 0:
        mask = cv2.dilate(mask, _disk(int(-erode)))
    out = mask.astype(np.float32) / 255.0
    if blur > 0:
        out = cv2.GaussianBlur(out, (2 * int(blur) + 1, 2 * int(blur) + 1), sigmaX=blur / 2.0)
    return np.clip(out, 0.0, 1.0)


def landmark_masks_torch(
    points: torch.Tensor | np.ndarray,
    size: tuple[int, int] | int,
    region: Region = "face",
    erode: int = 0,
    blur: int = 0,
    forehead: float = 0.8,
) -> torch.Tensor:
    """Batched ``landmark_mask`` for training: (N, 68, 2) points -> (N, 1, H, W) float32.

    Polygons are rasterised on the CPU one item at a time (cv2 is fast at this, about 0.1 ms per
    256 px mask); the result lands on the device of ``points`` when it is a tensor.
    """
    device = points.device if isinstance(points, torch.Tensor) else torch.device("cpu")
    array = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    if array.ndim != 3 or array.shape[1:] != (68, 2):
        raise ValueError(f"expected (N, 68, 2) landmarks, got {tuple(array.shape)}")
    height, width = (size, size) if isinstance(size, int) else size
    masks = np.empty((len(array), 1, height, width), np.float32)
    for i, item in enumerate(array):
        masks[i, 0] = landmark_mask(item, (height, width), region, erode, blur, forehead)
    return torch.from_numpy(masks).to(device)


for _region in REGIONS:
    MASKS.register(_region)(functools.partial(landmark_mask, region=_region))
