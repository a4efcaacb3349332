"""The swap stage's blend mask: the model's learned mask, the landmark face hull, the face segmenter's
face class, or combinations; eroded and feathered.

``MASK_MODES`` maps ``swap mask=NAME`` to a function ``(learned, landmarks, size, crop=None) -> mask``;
the hull comes from ``swaplab.faces.masks.MASKS``, ``segment`` from the built face segmenter
(``swaplab.models.segmentation``), which needs the target crop (R, R, 3) uint8. ``finish_mask`` erodes
(or dilates) and feathers inward.
Masks are float32 R x R in [0, 1] in the aligned crop's frame; nothing here blends or warps.
"""

from __future__ import annotations

import cv2
import numpy as np

from swaplab.faces.landmarks import LANDMARKS_68
from swaplab.faces.masks import MASKS
from swaplab.registry import Registry

__all__ = ["MASK_MODES", "finish_mask", "mouth_interior", "without_mouth_interior"]

#: Mode name -> ``fn(learned (R, R), landmarks (68, 2) in crop pixels, size R, crop=None) -> mask (R, R)``.
MASK_MODES: Registry = Registry("swap mask mode")


def _hull(landmarks: np.ndarray, size: int) -> np.ndarray:
    return MASKS.create("face", landmarks, (size, size))


@MASK_MODES.register("learned")
def learned_mask(learned: np.ndarray, landmarks: np.ndarray, size: int, crop: np.ndarray | None = None) -> np.ndarray:
    """What the model drew (all ones for models that draw none)."""
    return learned


@MASK_MODES.register("hull")
def hull_mask(learned: np.ndarray, landmarks: np.ndarray, size: int, crop: np.ndarray | None = None) -> np.ndarray:
    """The landmark face hull, up to the forehead."""
    return _hull(landmarks, size)


@MASK_MODES.register("intersection")
def intersection_mask(
    learned: np.ndarray, landmarks: np.ndarray, size: int, crop: np.ndarray | None = None
) -> np.ndarray:
    """Inside both: the hull's shape, minus what the model says is not face (hair, hands)."""
    return np.minimum(learned, _hull(landmarks, size))


@MASK_MODES.register("union")
def union_mask(learned: np.ndarray, landmarks: np.ndarray, size: int, crop: np.ndarray | None = None) -> np.ndarray:
    return np.maximum(learned, _hull(landmarks, size))


def _segmented_face(crop: np.ndarray | None, size: int) -> np.ndarray:
    from swaplab.models.segmentation import FACE, segment_faces

    if crop is None:
        raise ValueError("mask=segment needs the target crop: call the mask mode with crop=")
    probabilities = segment_faces(crop)[0, FACE]
    if probabilities.shape != (size, size):
        probabilities = cv2.resize(probabilities, (size, size), interpolation=cv2.INTER_LINEAR)
    return probabilities.astype(np.float32)


@MASK_MODES.register("segment")
def segment_mask(learned: np.ndarray, landmarks: np.ndarray, size: int, crop: np.ndarray | None = None) -> np.ndarray:
    """The face segmenter's probability of face: skin and features, without hair, hands or glasses."""
    return _segmented_face(crop, size)


@MASK_MODES.register("segment+hull")
def segment_hull_mask(
    learned: np.ndarray, landmarks: np.ndarray, size: int, crop: np.ndarray | None = None
) -> np.ndarray:
    """Inside the hull and segmented as face: the hull's reliable outline, minus what covers the face."""
    return np.minimum(_segmented_face(crop, size), _hull(landmarks, size))


def finish_mask(mask: np.ndarray, erode: int, blur: int) -> np.ndarray:
    """Erode by ``erode`` pixels (negative dilates), then feather inward by ``blur`` pixels."""
    mask = mask.astype(np.float32)
    if erode:
        k = abs(erode) * 2 + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        mask = cv2.erode(mask, kernel) if erode > 0 else cv2.dilate(mask, kernel)
    if blur:
        # Feathering inward (erode by the blur radius first) keeps the seam inside the face.
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (blur + 1, blur + 1))
        mask = cv2.erode(mask, kernel)
        k = blur * 2 + 1
        mask = cv2.GaussianBlur(mask, (k, k), 0)
    return np.clip(mask, 0.0, 1.0)


def mouth_interior(landmarks: np.ndarray, size: int, feather: int = 1) -> np.ndarray:
    """(size, size) float32 in [0, 1]: the inside of the inner lips (teeth, tongue, the dark of an
    open mouth), its edge softened by ``feather`` pixels; all 0 for a closed mouth."""
    interior = np.zeros((size, size), np.float32)
    polygon = np.asarray(landmarks, np.float64)[LANDMARKS_68["inner_lips"]]
    if cv2.contourArea(polygon.astype(np.float32)) < 1.0:
        return interior  # shut: drawn, its anti-aliased outline alone would cut a line through the lips
    cv2.fillPoly(interior, [np.round(polygon * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    if feather > 0:
        interior = cv2.GaussianBlur(interior, (2 * feather + 1, 2 * feather + 1), feather / 2.0)
    return np.clip(interior, 0.0, 1.0)


def without_mouth_interior(
    mask: np.ndarray, landmarks: np.ndarray, feather: int = 1, interior: np.ndarray | None = None
) -> np.ndarray:
    """``mask`` with the inside of the inner lips cut out (``mouth_interior``, or ``interior`` when
    given, e.g. smoothed over a track), so the target's own teeth and tongue show through. A closed
    mouth has an empty interior and leaves the mask as it was."""
    if interior is None:
        interior = mouth_interior(landmarks, mask.shape[0], feather)
    return (mask * (1.0 - interior)).astype(np.float32)
