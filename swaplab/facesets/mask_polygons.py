"""User-corrected masks of aligned faces: polygons in a small JSON file beside the faceset.

Format (``<faceset>/mask_polygons.json`` unless a path is given; coordinates are crop pixels
(x, y) of the faceset's aligned crops, pixel centres at integers)::

    {"format": "swaplab-mask-polygons", "version": 1,
     "faces": {"<face id>": {"face": [[[x, y], ...], ...], "occluder": [[[x, y], ...], ...]}}}

``face`` polygons are filled first, ``occluder`` polygons over them; what neither covers is
background. Training reads these labels instead of the generated ones for the listed faces.
``write_polygon_template`` starts a file from the landmark hulls, for a user to correct.
This module reads and writes the format; it does not train or segment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from swaplab.faces.masks import face_hull_polygon
from swaplab.faces.occlusion import BACKGROUND_LABEL, FACE_LABEL, OCCLUDER_LABEL
from swaplab.io.atomic import atomic_write_json

__all__ = ["POLYGONS_FILE", "FacePolygons", "polygon_labels", "read_mask_polygons", "write_polygon_template"]

POLYGONS_FILE = "mask_polygons.json"
FORMAT_NAME = "swaplab-mask-polygons"
FORMAT_VERSION = 1


@dataclass
class FacePolygons:
    """One face's corrected mask: polygons, each (M, 2) float32 crop pixels."""

    face: list[np.ndarray] = field(default_factory=list)
    occluder: list[np.ndarray] = field(default_factory=list)


def _polygons(value: object, where: str) -> list[np.ndarray]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of polygons")
    out = []
    for index, polygon in enumerate(value):
        array = np.asarray(polygon, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != 2 or len(array) < 3 or not np.isfinite(array).all():
            raise ValueError(f"{where}[{index}]: a polygon is a list of at least 3 finite [x, y] points")
        out.append(array)
    return out


def read_mask_polygons(path: str | Path) -> dict[str, FacePolygons]:
    """Face id -> its polygons, from a polygons file (or a faceset folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / POLYGONS_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable mask polygons file ({err})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: not a {FORMAT_NAME} file (its 'format' must be {FORMAT_NAME!r})")
    if document.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: version {document.get('version')!r}; this swaplab reads version {FORMAT_VERSION}")
    faces = document.get("faces")
    if not isinstance(faces, dict):
        raise ValueError(f"{path}: 'faces' must map face ids to their polygons")
    out = {}
    for face_id, entry in faces.items():
        if not isinstance(entry, dict) or not set(entry) <= {"face", "occluder"}:
            raise ValueError(f"{path}: face {face_id!r} must hold only 'face' and 'occluder' polygon lists")
        out[str(face_id)] = FacePolygons(
            _polygons(entry.get("face", []), f"{path}: {face_id}.face"),
            _polygons(entry.get("occluder", []), f"{path}: {face_id}.occluder"),
        )
    return out


def polygon_labels(polygons: FacePolygons, size: int, scale: float = 1.0) -> np.ndarray:
    """The (size, size) uint8 label map of ``polygons`` (coordinates multiplied by ``scale``)."""
    labels = np.full((size, size), BACKGROUND_LABEL, np.uint8)
    for value, group in ((FACE_LABEL, polygons.face), (OCCLUDER_LABEL, polygons.occluder)):
        for polygon in group:
            points = (polygon.astype(np.float64) + 0.5) * scale - 0.5
            cv2.fillPoly(labels, [np.round(points * 16).astype(np.int32)], value, shift=4)
    return labels


def write_polygon_template(faceset: str | Path, face_ids: list[str], path: str | Path | None = None) -> Path:
    """Start a polygons file for ``face_ids`` of ``faceset``: each face's landmark hull as its face
    polygon and no occluders, for a user to correct in any editor. Returns the file written."""
    from swaplab.facesets.format import Faceset

    faceset = Faceset(faceset)
    by_id = {record.id: record for record in faceset}
    missing = [face_id for face_id in face_ids if face_id not in by_id]
    if missing:
        raise KeyError(f"faceset {faceset.root} has no face(s) {', '.join(missing[:5])}")
    faces = {
        face_id: {
            "face": [np.round(face_hull_polygon(by_id[face_id].landmarks_array), 1).tolist()],
            "occluder": [],
        }
        for face_id in face_ids
    }
    target = Path(path) if path is not None else faceset.root / POLYGONS_FILE
    atomic_write_json(target, {"format": FORMAT_NAME, "version": FORMAT_VERSION, "faces": faces})
    return target


def update_mask_polygons(path: str | Path, face_id: str, polygons: FacePolygons) -> Path:
    """Set one face's polygons in a polygons file (created if missing; the other faces kept), atomically,
    checked as ``read_mask_polygons`` checks them. ``path`` is the file or its faceset folder; returns the file."""
    path = Path(path)
    if path.is_dir():
        path = path / POLYGONS_FILE
    faces = read_mask_polygons(path) if path.is_file() else {}
    where = f"{path}: {face_id}"
    faces[str(face_id)] = FacePolygons(
        _polygons([np.asarray(p).tolist() for p in polygons.face], f"{where}.face"),
        _polygons([np.asarray(p).tolist() for p in polygons.occluder], f"{where}.occluder"),
    )
    document = {
        key: {group: [np.round(p, 1).tolist() for p in getattr(entry, group)] for group in ("face", "occluder")}
        for key, entry in faces.items()
    }
    atomic_write_json(path, {"format": FORMAT_NAME, "version": FORMAT_VERSION, "faces": document})
    return path


__all__ += ["update_mask_polygons"]
