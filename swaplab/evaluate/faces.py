"""Faces of the images an evaluation reads: found once, cut at one fixed scale, embedded once per network.

``FaceCache`` analyses each target, source and gallery photo once (dlib HOG and landmarks) and
keeps each identity network's embedding of its central face, so several models scored on one
protocol share that work. ``face_crop`` is the evaluator's aligned crop (``whole_face``,
``EVAL_CROP`` px) on which sharpness, flicker and detectability are measured, one scale for every
model whatever its own resolution. It makes no swaps and computes no metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from swaplab.faces.detect import box_iou
from swaplab.identity.embed import embed_faces
from swaplab.io.images import read_image

__all__ = ["EVAL_CROP", "FaceCache", "FaceInfo", "central_face", "face_crop", "matching_face"]

#: Side of the aligned crops (``whole_face`` template) on which sharpness, flicker and detectability
#: are measured.
EVAL_CROP = 128


@dataclass(frozen=True)
class FaceInfo:
    """A face found in an image: box (x0, y0, x1, y1), 68- and 5-point landmarks, the alignment
    matrix to the ``EVAL_CROP`` px ``whole_face`` crop, all in that image's pixels."""

    box: tuple[float, float, float, float]
    landmarks68: np.ndarray
    landmarks5: np.ndarray
    matrix: np.ndarray


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    return float(box_iou(np.asarray(a), np.asarray(b))[0, 0])


def central_face(faces: Sequence[FaceInfo], shape: tuple[int, ...]) -> FaceInfo | None:
    """The face whose box centre is nearest the image centre (LFW's labelled face), else None."""
    if not faces:
        return None
    cy, cx = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0

    def distance(face: FaceInfo) -> tuple[float, float]:
        x0, y0, x1, y1 = face.box
        return (math.hypot((x0 + x1) / 2 - cx, (y0 + y1) / 2 - cy), -(x1 - x0) * (y1 - y0))

    return min(faces, key=distance)


def matching_face(faces: Sequence[FaceInfo], box: Sequence[float], min_iou: float = 0.3) -> FaceInfo | None:
    """The face overlapping ``box`` most (IoU >= ``min_iou``): the swap's face at the target's place."""
    best = max(faces, key=lambda f: _iou(f.box, box), default=None)
    return best if best is not None and _iou(best.box, box) >= min_iou else None


class FaceCache:
    """Faces and identity embeddings of image files, computed once and shared by every model scored.

    Faces come from ``FaceAnalyzer`` (dlib HOG, upsampled on photos up to 1000 px; dlib's 68- and
    5-point landmarks). Embeddings are keyed by (file, encoder, layer) and belong to the file's
    ``central_face``. Files are identified by path, size and modification time.
    """

    def __init__(self) -> None:
        self._faces: dict[tuple, tuple[tuple[int, ...], list[FaceInfo]]] = {}
        self._embeddings: dict[tuple, np.ndarray | None] = {}
        self._analyzer = None

    @property
    def analyzer(self):  # -> FaceAnalyzer
        if self._analyzer is None:
            from swaplab.faces.analyze import FaceAnalyzer, FaceAnalyzerConfig

            self._analyzer = FaceAnalyzer(FaceAnalyzerConfig(embed=False), template="whole_face", size=EVAL_CROP)
        return self._analyzer

    def find_faces(self, image: np.ndarray) -> list[FaceInfo]:
        """Every face of an RGB uint8 image (not cached: swaps change from model to model)."""
        return [
            FaceInfo(
                box=(f.box.x0, f.box.y0, f.box.x1, f.box.y1),
                landmarks68=np.asarray(f.landmarks_source, np.float32),
                landmarks5=np.asarray(f.landmarks5_source, np.float32),
                matrix=f.matrix,
            )
            for f in self.analyzer.analyze(image, embed=False)
        ]

    def faces(self, path: Path) -> tuple[tuple[int, ...], list[FaceInfo]]:
        """(image shape, faces) of an image file, cached."""
        key = _file_key(path)
        if key not in self._faces:
            image = read_image(path)[0]
            self._faces[key] = (image.shape, self.find_faces(image))
        return self._faces[key]

    def face(self, path: Path) -> FaceInfo | None:
        shape, faces = self.faces(path)
        return central_face(faces, shape)

    def embeddings(self, paths: Sequence[Path], encoder_name: str, encoder: nn.Module, layer: str) -> np.ndarray:
        """(N, D) embeddings of the central face of each file; rows of files without a face are NaN."""
        missing = [p for p in dict.fromkeys(paths) if (_file_key(p), encoder_name, layer) not in self._embeddings]
        with_face = [p for p in missing if self.face(p) is not None]
        for p in missing:
            self._embeddings[(_file_key(p), encoder_name, layer)] = None
        for start in range(0, len(with_face), 64):
            chunk = with_face[start : start + 64]
            images = [read_image(p)[0] for p in chunk]
            points = [self.face(p).landmarks5 for p in chunk]  # type: ignore[union-attr]
            for p, row in zip(chunk, embed_faces(images, points, encoder, layer)):
                self._embeddings[(_file_key(p), encoder_name, layer)] = row
        rows = [self._embeddings[(_file_key(p), encoder_name, layer)] for p in paths]
        width = next((r.shape[0] for r in rows if r is not None), 1)
        return (
            np.stack([r if r is not None else np.full(width, np.nan, np.float32) for r in rows])
            if rows
            else (np.zeros((0, width), np.float32))
        )


def _file_key(path: Path) -> tuple:
    stat = Path(path).stat()
    return (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def face_crop(image: np.ndarray, face: FaceInfo) -> np.ndarray:
    """The evaluator's aligned crop (whole-face template, EVAL_CROP px) of ``image`` at ``face``."""
    import cv2

    return cv2.warpAffine(image, face.matrix, (EVAL_CROP, EVAL_CROP), flags=cv2.INTER_AREA)
