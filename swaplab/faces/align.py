"""Face alignment: similarity transforms from landmarks to a fixed template, warps and paste-back.

Pure geometry on numpy arrays and OpenCV warps; it neither finds faces nor builds masks.
Conventions: landmarks are (..., K, 2) (x, y) pixel coordinates with pixel centres at integers;
affine matrices are (2, 3) float64 arrays mapping source-frame (x, y, 1) to crop (x, y), as
``cv2.warpAffine`` takes them (batched variants carry leading dimensions: (N, 2, 3)). A template's
unit square [0, 1]^2 maps onto the crop's pixel area: unit (0, 0) is the outer corner of the crop's
top-left pixel, crop pixel coordinate -0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from swaplab.faces.landmarks import FIVE_FROM_68_INDICES, five_from_68
from swaplab.registry import Registry

# ---------------------------------------------------------------- similarity fit (Umeyama 1991)


def umeyama(src: np.ndarray, dst: np.ndarray, estimate_scale: bool = True) -> np.ndarray:
    """Least-squares similarity transform taking ``src`` points onto ``dst`` points.

    S. Umeyama, "Least-squares estimation of transformation parameters between two point
    patterns", IEEE TPAMI 13(4), 1991. ``src`` and ``dst`` are (..., K, D); the result is the
    homogeneous (..., D+1, D+1) matrix T minimising sum_k |dst_k - T src_k|^2 over rotations,
    translations and (when ``estimate_scale``) one uniform scale. Reflections are excluded.
    Batched over leading dimensions with one SVD call.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim < 2:
        raise ValueError(f"src and dst must have the same (..., K, D) shape, got {src.shape} and {dst.shape}")
    num, dim = src.shape[-2:]
    mean_src = src.mean(axis=-2, keepdims=True)
    mean_dst = dst.mean(axis=-2, keepdims=True)
    src_c = src - mean_src
    dst_c = dst - mean_dst
    covariance = np.swapaxes(dst_c, -1, -2) @ src_c / num  # (..., D, D)
    u, sigma, vt = np.linalg.svd(covariance)
    # Flip the weakest axis when the best orthogonal fit would be a reflection (Umeyama eq. 39).
    sign = np.ones(sigma.shape)
    sign[..., -1] = np.where(np.linalg.det(u) * np.linalg.det(vt) < 0, -1.0, 1.0)
    rotation = (u * sign[..., None, :]) @ vt
    if estimate_scale:
        variance = (src_c**2).sum(axis=(-1, -2)) / num
        if np.any(variance <= 1e-12):
            raise ValueError("umeyama: the source points are all identical; no scale can be fitted")
        scale = (sigma * sign).sum(axis=-1) / variance
    else:
        scale = np.ones(sigma.shape[:-1])
    linear = scale[..., None, None] * rotation
    translation = mean_dst[..., 0, :] - (linear @ mean_src[..., 0, :, None])[..., 0]
    out = np.zeros((*src.shape[:-2], dim + 1, dim + 1))
    out[..., :dim, :dim] = linear
    out[..., :dim, dim] = translation
    out[..., dim, dim] = 1.0
    return out


# ---------------------------------------------------------------- affine helpers (batched)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply (..., 2, 3) affine ``matrix`` to (..., K, 2) ``points``; float32 in, float32 out."""
    points = np.asarray(points)
    matrix = np.asarray(matrix, dtype=np.float64)
    out = points.astype(np.float64) @ np.swapaxes(matrix[..., :, :2], -1, -2) + matrix[..., None, :, 2]
    return out.astype(points.dtype if np.issubdtype(points.dtype, np.floating) else np.float64)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (..., 2, 3) affine matrix (crop -> frame for an alignment matrix)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    linear_inv = np.linalg.inv(matrix[..., :, :2])
    translation = -(linear_inv @ matrix[..., :, 2:])
    return np.concatenate([linear_inv, translation], axis=-1)


def affine_scale(matrix: np.ndarray) -> np.ndarray:
    """Uniform scale of a (..., 2, 3) similarity (sqrt of |det| of its linear part)."""
    return np.sqrt(np.abs(np.linalg.det(np.asarray(matrix, dtype=np.float64)[..., :, :2])))


# ---------------------------------------------------------------- templates

#: dlib's mean face shape (``get_face_chip_details`` in dlib/image_transforms/interpolation.h), points
#: 17-67 of the 68-point layout in a unit square; dlib gives no mean for the jaw (0-16: NaN here).
_DLIB_MEAN_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991,
    0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217,
    0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428,
    0.793132, 0.858516, 0.79751, 0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395,
    0.639268, 0.726104, 0.642159, 0.556721, 0.490127, 0.423532, 0.338094, 0.290379, 0.428096,
    0.490127, 0.552157, 0.689874, 0.553364, 0.490127, 0.42689,
)  # fmt: skip
_DLIB_MEAN_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482,
    0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106,
    0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733,
    0.179852, 0.178758, 0.216423, 0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578,
    0.727388, 0.745405, 0.780233, 0.864805, 0.902192, 0.909281, 0.902192, 0.864805, 0.784792,
    0.778746, 0.785343, 0.778746, 0.784792, 0.824182, 0.831803, 0.824182,
)  # fmt: skip
DLIB_MEAN_FACE_68: np.ndarray = np.full((68, 2), np.nan)
DLIB_MEAN_FACE_68[17:] = np.stack([_DLIB_MEAN_X, _DLIB_MEAN_Y], axis=1)
DLIB_MEAN_FACE_68.flags.writeable = False

#: dlib's 5-point chip reference (same source), in its 5-point order (see FIVE_FROM_68_INDICES).
DLIB_MEAN_FACE_5: np.ndarray = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
DLIB_MEAN_FACE_5.flags.writeable = False

#: The 68 points dlib fits its chips to: nose, eyes, the mouth corners and upper lip. Brows, jaw
#: and lower lip are left out because they move with expression and pose.
STABLE_68_INDICES: tuple[int, ...] = tuple(range(27, 55)) + tuple(range(60, 65))


def _as_points(values: np.ndarray) -> tuple[tuple[float, float], ...]:
    return tuple((float(x), float(y)) for x, y in np.asarray(values))


@dataclass(frozen=True)
class AlignmentTemplate:
    """Where landmarks go in an aligned crop.

    ``reference68`` gives, for the 68-point indices ``indices68``, their target positions in a
    unit square; ``reference5`` the same for dlib's 5-point layout, so either landmark set can
    drive the fit. The crop shows the unit square grown by ``padding`` on every side (crop side
    = (1 + 2 padding) unit sides, dlib's convention) and moved by ``shift`` (in unit sides;
    negative y moves the crop up, towards the forehead).
    """

    name: str
    indices68: tuple[int, ...]
    reference68: tuple[tuple[float, float], ...]
    reference5: tuple[tuple[float, float], ...]
    padding: float
    shift: tuple[float, float] = (0.0, 0.0)
    description: str = ""

    def crop_positions(self, num_points: int, size: int) -> tuple[tuple[int, ...] | None, np.ndarray]:
        """Indices of the landmarks to fit (None = all) and their target crop pixel positions."""
        if num_points == 68:
            indices, unit = self.indices68, np.asarray(self.reference68)
        elif num_points == 5:
            indices, unit = None, np.asarray(self.reference5)
        else:
            raise ValueError(f"template {self.name!r} aligns 68 or 5 landmarks, got {num_points}")
        grown = (unit - 0.5 - np.asarray(self.shift)) / (1.0 + 2.0 * self.padding) + 0.5
        return indices, grown * size - 0.5


TEMPLATES: Registry = Registry("alignment template")
"""Alignment templates by name. Templates are values: ``TEMPLATES.get("whole_face")``."""


def _mean_face_template(name: str, padding: float, shift: tuple[float, float], description: str):
    return AlignmentTemplate(
        name=name,
        indices68=STABLE_68_INDICES,
        reference68=_as_points(DLIB_MEAN_FACE_68[list(STABLE_68_INDICES)]),
        reference5=_as_points(five_from_68(DLIB_MEAN_FACE_68)),
        padding=padding,
        shift=shift,
        description=description,
    )


# DeepFaceLab grows its mean face by ``padding * sqrt(2) + 0.5`` half-diagonals: its 'full face'
# (0.2109375) and 'whole face' (0.40, centre moved up by 0.07) are crop sides of 1.60 and 2.13
# mean-face units, i.e. padding 0.298 and 0.566 in dlib's convention used here.
TEMPLATES.register("whole_face")(
    _mean_face_template(
        "whole_face",
        padding=0.566,
        shift=(0.0, -0.07),
        description="forehead to chin and ear to ear (DeepFaceLab's 'whole face'); for swapping",
    )
)
TEMPLATES.register("face")(
    _mean_face_template(
        "face",
        padding=0.298,
        shift=(0.0, 0.0),
        description="brows to chin, cheek to cheek (DeepFaceLab's 'full face')",
    )
)
TEMPLATES.register("dlib_5")(
    AlignmentTemplate(
        name="dlib_5",
        indices68=FIVE_FROM_68_INDICES,
        reference68=_as_points(DLIB_MEAN_FACE_5),
        reference5=_as_points(DLIB_MEAN_FACE_5),
        padding=0.25,
        description="dlib's 5-point face chip (get_face_chip_details(shape, size, 0.25)); for identity",
    )
)


def _template(template: AlignmentTemplate | str) -> AlignmentTemplate:
    return TEMPLATES.get(template) if isinstance(template, str) else template


def alignment_matrix(landmarks: np.ndarray, template: AlignmentTemplate | str, size: int) -> np.ndarray:
    """Similarity matrix source -> crop that puts (..., K, 2) landmarks (K = 68 or 5) on the template.

    Returns (2, 3), or (..., 2, 3) for batched landmarks. ``size`` is the square crop's side.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    indices, target = _template(template).crop_positions(landmarks.shape[-2], size)
    source = landmarks if indices is None else landmarks[..., list(indices), :]
    target = np.broadcast_to(target, source.shape)
    return umeyama(source, target)[..., :2, :]


# ---------------------------------------------------------------- warps


def warp_face(image: np.ndarray, matrix: np.ndarray, size: int, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Crop ``size`` x ``size`` pixels of ``image`` (H x W [x C], any dtype cv2 warps) through ``matrix``.

    Bilinear sampling; when the crop shrinks the face by more than 2x, the face's footprint is
    first reduced with area averaging so the crop does not alias (``warpAffine`` has no area mode).
    The crop stays bilinear although bicubic keeps more detail (a crop pasted back at about 1:1
    kept 0.58 of the face's Laplacian variance, 0.86 with a bicubic crop): every faceset, model and
    reconstruction score so far was made on bilinear crops, and a sharper crop would change them all.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    scale = float(affine_scale(matrix))
    if scale < 0.5:
        image, matrix = _prefilter(image, matrix, size, scale)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def _prefilter(image: np.ndarray, matrix: np.ndarray, size: int, scale: float):
    """Area-downscale the crop's footprint so the remaining warp scale is about 1; adjust the matrix."""
    height, width = image.shape[:2]
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5]])
    footprint = transform_points(corners, invert_affine(matrix))
    x0, y0 = np.clip(np.floor(footprint.min(axis=0)).astype(int) - 2, 0, [width, height])
    x1, y1 = np.clip(np.ceil(footprint.max(axis=0)).astype(int) + 3, 0, [width, height])
    if x1 - x0 < 2 or y1 - y0 < 2:  # the crop lies outside the image: nothing to prefilter
        return image, matrix
    roi = image[y0:y1, x0:x1]
    new_w, new_h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    small = cv2.resize(roi, (new_w, new_h), interpolation=cv2.INTER_AREA)
    fx, fy = new_w / (x1 - x0), new_h / (y1 - y0)
    # Pixel-centre convention of cv2.resize: u = (x - x0 + 0.5) * fx - 0.5.
    to_small = np.array([[fx, 0.0, (0.5 - x0) * fx - 0.5], [0.0, fy, (0.5 - y0) * fy - 0.5]])
    return small, compose_affine(matrix, invert_affine(to_small))


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The affine ``outer(inner(p))`` of two (..., 2, 3) matrices."""
    outer = np.asarray(outer, dtype=np.float64)
    inner = np.asarray(inner, dtype=np.float64)
    linear = outer[..., :, :2] @ inner[..., :, :2]
    translation = outer[..., :, :2] @ inner[..., :, 2:] + outer[..., :, 2:]
    return np.concatenate([linear, translation], axis=-1)


def paste_back(frame: np.ndarray, crop: np.ndarray, matrix: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Warp ``crop`` back into ``frame`` through the inverse of ``matrix`` and alpha-composite it.

    ``frame``: uint8 H x W x 3. ``crop``: S x S x 3, uint8 (0-255) or float (0-1). ``mask``: S x S
    float in [0, 1] (the crop's alpha; None = the whole crop). Only the crop's footprint in the
    frame is warped, so the cost does not grow with the frame size. Returns a new uint8 frame.
    """
    if frame.dtype != np.uint8 or frame.ndim != 3:
        raise ValueError(f"frame must be uint8 H x W x C, got {frame.dtype} {frame.shape}")
    crop_f = crop.astype(np.float32) if crop.dtype == np.uint8 else crop.astype(np.float32) * 255.0
    size_h, size_w = crop.shape[:2]
    alpha = np.ones((size_h, size_w), np.float32) if mask is None else np.asarray(mask, np.float32)
    if alpha.shape != (size_h, size_w):
        raise ValueError(f"mask shape {alpha.shape} does not match the crop's {(size_h, size_w)}")
    height, width = frame.shape[:2]
    to_frame = invert_affine(matrix)
    corners = np.array([[-0.5, -0.5], [size_w - 0.5, -0.5], [size_w - 0.5, size_h - 0.5], [-0.5, size_h - 0.5]])
    footprint = transform_points(corners, to_frame)
    x0, y0 = np.clip(np.floor(footprint.min(axis=0)).astype(int) - 1, 0, [width, height])
    x1, y1 = np.clip(np.ceil(footprint.max(axis=0)).astype(int) + 2, 0, [width, height])
    out = frame.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    to_roi = to_frame.copy()
    to_roi[:, 2] -= (x0, y0)
    roi_size = (int(x1 - x0), int(y1 - y0))
    # Bicubic for the face (it keeps the detail bilinear blurs away), bilinear for the alpha (no ringing).
    face = cv2.warpAffine(crop_f, to_roi, roi_size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    weight = cv2.warpAffine(alpha, to_roi, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    weight = np.clip(weight, 0.0, 1.0)[:, :, None]
    roi = out[y0:y1, x0:x1].astype(np.float32)
    blended = roi + weight * (face.reshape(roi.shape) - roi)
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
