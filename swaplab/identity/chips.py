"""dlib's face chips: the geometry of ``dlib.get_face_chip`` from 5 landmarks, differentiable and batched.

Every identity network in swaplab reads faces as such chips (each at its own size and padding), so
this module is the one place that cuts them. It detects nothing (callers pass 5-point landmarks)
and runs no network.

Conventions: chips are float32 tensors N x 3 x S x S, RGB, values in [0, 1]; images at the
boundary are uint8 H x W x 3 RGB numpy arrays; landmarks are (5, 2) float (x, y) pixel
coordinates in the order of dlib's 5-point predictor (see ``DLIB_FACE_TEMPLATE_5``).
"""

from __future__ import annotations

import numpy as np
import torch
from kornia.geometry.transform import warp_affine

__all__ = [
    "DLIB_CHIP_PADDING",
    "DLIB_CHIP_SIZE",
    "DLIB_FACE_TEMPLATE_5",
    "chip_from_landmarks",
    "dlib_chip",
    "face_chip_matrix",
]

DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25

# dlib's 5-point face template (``get_face_chip_details`` in dlib/image_transforms/interpolation.h)
# on the unit square, before padding, in the 5-point predictor's part order. "Left"/"right" are as
# seen in the image: parts 0-1 are the outer and inner corner of the eye on the image's right (the
# subject's left eye), parts 2-3 the outer and inner corner of the other eye, part 4 is the base of
# the nose. A chip of ``size`` and ``padding`` places point p at (padding + p) / (2 padding + 1) * size.
DLIB_FACE_TEMPLATE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ],
    dtype=np.float64,
)


# -- face chips -----------------------------------------------------------------------------
def _as_landmark_batch(landmarks5: torch.Tensor | np.ndarray) -> torch.Tensor:
    points = torch.as_tensor(landmarks5)
    if points.ndim == 2:
        points = points.unsqueeze(0)
    if points.ndim != 3 or points.shape[1:] != (5, 2):
        raise ValueError(f"expected 5-point landmarks of shape (5, 2) or (N, 5, 2), got {tuple(points.shape)}")
    return points


def face_chip_matrix(
    landmarks5: torch.Tensor | np.ndarray, size: int = DLIB_CHIP_SIZE, padding: float = DLIB_CHIP_PADDING
) -> torch.Tensor:
    """N x 2 x 3 float64 matrices mapping image (x, y, 1) to dlib's face-chip pixels (cv2 convention).

    Reproduces ``dlib.get_face_chip_details`` + ``extract_image_chip`` geometry:

    1. the least-squares similarity ``img = M chip + t`` (``find_similarity_transform``) from the
       padded template points to the landmarks; ``M = s R(angle)``;
    2. dlib keeps only the angle, the scale ``s`` and the image point ``c = M (size/2, size/2) + t``,
       as a rectangle centred on ``c`` of span ``size * s - 1`` (``centered_drect`` subtracts 1);
    3. chip pixel (0, 0) goes to the rectangle's rotated top-left corner and (size-1, size-1) to
       its bottom-right, so chip pixel u maps to ``c + R(angle) (u - (size-1)/2) * step`` with
       ``step = (size * s - 1) / (size - 1)``, a hair larger than ``s``.

    Differentiable with respect to the landmarks; ``landmarks5`` is (5, 2) or (N, 5, 2) pixels.
    """
    points = _as_landmark_batch(landmarks5).to(torch.float64)
    template = torch.as_tensor((padding + DLIB_FACE_TEMPLATE_5) / (2 * padding + 1) * size, device=points.device)
    template_centred = template - template.mean(0)
    points_mean = points.mean(1, keepdim=True)
    points_centred = points - points_mean
    # Closed-form least squares for M = [[a, -b], [b, a]]; equals Umeyama's for a proper rotation.
    norm = (template_centred**2).sum()
    a = (template_centred * points_centred).sum((1, 2)) / norm
    b = (template_centred[:, 0] * points_centred[..., 1] - template_centred[:, 1] * points_centred[..., 0]).sum(
        1
    ) / norm
    scale = torch.sqrt(a * a + b * b)
    chip_centre = torch.full((2,), size / 2.0, dtype=torch.float64, device=points.device)
    rotation_scale = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # N x 2 x 2
    translation = points_mean.squeeze(1) - rotation_scale @ template.mean(0)
    centre = rotation_scale @ chip_centre + translation  # image point at the chip's centre
    step = (size * scale - 1.0) / (size - 1)
    # Invert chip -> image (c + (step / s) M (u - h)) analytically: u = h + (s / step) M^-1 (img - c),
    # with M^-1 = M^T / s^2.
    inverse = rotation_scale.transpose(1, 2) / (scale * step).view(-1, 1, 1)
    half = (size - 1) / 2.0
    offset = half - inverse @ centre.unsqueeze(-1)
    return torch.cat([inverse, offset], dim=-1)


def chip_from_landmarks(
    images: torch.Tensor,
    landmarks5: torch.Tensor | np.ndarray,
    size: int = DLIB_CHIP_SIZE,
    padding: float = DLIB_CHIP_PADDING,
) -> torch.Tensor:
    """Differentiable, batched dlib face chips: N x 3 x H x W in [0, 1] -> N x 3 x size x size.

    Same geometry as ``dlib.get_face_chip`` (:func:`face_chip_matrix`), warped bilinearly with
    ``kornia.geometry.transform.warp_affine``; gradients reach the images and the landmarks.
    Differences from dlib, all small on faces (measured in tests/test_identity.py): dlib
    truncates its interpolated values to uint8 (its chips are 0.5/255 darker on average; flooring
    ``255 * chip`` reproduces them to about 0.001 grey levels); it blacks out any sample whose
    2x2 neighbourhood leaves the image (kornia blends with zeros); and when the face is more than
    about twice the chip's size it samples from an image pyramid, where this function aliases
    (downscale such images first).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected N x 3 x H x W images, got {tuple(images.shape)}")
    matrices = face_chip_matrix(landmarks5, size, padding).to(device=images.device)
    if matrices.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {matrices.shape[0]} landmark sets")
    return warp_affine(
        images.contiguous(),
        matrices.to(images.dtype),
        dsize=(size, size),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )


def _full_object_detection(points: np.ndarray):  # -> dlib.full_object_detection
    import dlib

    rounded = np.rint(np.asarray(points, dtype=np.float64)).astype(np.int64)
    left, top = rounded.min(0)
    right, bottom = rounded.max(0)
    parts = [dlib.point(int(x), int(y)) for x, y in rounded]
    return dlib.full_object_detection(dlib.rectangle(int(left), int(top), int(right), int(bottom)), parts)


def dlib_chip(
    image_rgb_uint8: np.ndarray,
    shape5_points: np.ndarray,
    size: int = DLIB_CHIP_SIZE,
    padding: float = DLIB_CHIP_PADDING,
) -> np.ndarray:
    """dlib's own face chip (``dlib.get_face_chip``): size x size x 3 uint8 RGB.

    ``shape5_points`` is (5, 2) float (x, y) from dlib's 5-point predictor, or a
    ``dlib.full_object_detection``. dlib stores landmarks as integer points, so float landmarks
    are rounded here (dlib's predictor already returns integers); use
    :func:`chip_from_landmarks` for sub-pixel landmarks.
    """
    import dlib

    if image_rgb_uint8.dtype != np.uint8 or image_rgb_uint8.ndim != 3 or image_rgb_uint8.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image_rgb_uint8.dtype} {image_rgb_uint8.shape}")
    if isinstance(shape5_points, dlib.full_object_detection):
        detection = shape5_points
    else:
        points = np.asarray(shape5_points)
        if points.shape != (5, 2):
            raise ValueError(f"expected 5-point landmarks of shape (5, 2), got {points.shape}")
        detection = _full_object_detection(points)
    return dlib.get_face_chip(np.ascontiguousarray(image_rgb_uint8), detection, size=size, padding=padding)
