"""One frame in, aligned faces out: detection (or tracking), landmarks, alignment, identity.

``FaceAnalyzer`` is the single place that composes the face parts, used by extraction and by the
swap stage alike, so both see faces the same way. It does not read or write files.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from swaplab.config import choice_field
from swaplab.faces.align import TEMPLATES, alignment_matrix, transform_points, warp_face
from swaplab.faces.detect import DETECTORS, FaceBox
from swaplab.faces.landmarks import LANDMARKERS
from swaplab.faces.masks import face_hull_polygon
from swaplab.faces.pose import head_pose
from swaplab.faces.track import FaceTracker
from swaplab.identity.chips import dlib_chip
from swaplab.identity.dlib_resnet import load_dlib_identity


@dataclass
class FaceAnalyzerConfig:
    detector: str = choice_field("dlib-hog", DETECTORS)
    # Detector upsampling: 1 finds faces down to ~40 px, 0 (faces from ~80 px) is 4x faster.
    # -1 = auto: 1 for photos up to 1000 px on their long side, 0 for larger photos and for video
    # frames, where the detector runs every frame it is asked to and faces are usually large.
    upsample: int = -1
    min_score: float | None = None  # detector score floor (None: the detector's default)
    min_size: int = 32  # drop faces whose box is smaller than this many pixels
    max_faces: int = 0  # keep at most this many faces per frame, largest first (0 = all)
    max_side: int = 1280  # detect on a copy downscaled to this side (boxes mapped back)
    detect_every: int = 5  # videos: run the detector every N frames, track in between
    embed: bool = True  # compute the 128-d identity descriptor of every face


@dataclass
class AlignedFace:
    """A face found in a frame, aligned to the template. Coordinates are pixels, (x, y)."""

    box: FaceBox
    landmarks_source: np.ndarray  # (68, 2) in the frame
    landmarks5_source: np.ndarray  # (5, 2) in the frame, dlib's 5-point layout
    matrix: np.ndarray  # (2, 3) frame -> crop
    crop: np.ndarray  # RGB uint8 size x size
    landmarks: np.ndarray  # (68, 2) in the crop
    face_index: int
    track_id: int
    tracked: bool = False
    identity: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    blur: float = 0.0
    pose: tuple[float, float, float] = (0.0, 0.0, 0.0)
    mask_polygon: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    chip: np.ndarray | None = None  # dlib's 150x150 identity chip, kept until embedded


class FaceAnalyzer:
    """Finds, aligns and describes faces; ``rejected`` counts faces dropped and why."""

    def __init__(self, config: FaceAnalyzerConfig | None = None, template: str = "whole_face", size: int = 256):
        self.config = cfg = config or FaceAnalyzerConfig()
        self.template = TEMPLATES.get(template)
        self.template_name = template
        self.size = size
        self._detectors: dict[int, object] = {}
        self.detector = self._detector(0 if cfg.upsample < 0 else cfg.upsample)
        self.landmarker = LANDMARKERS.create("dlib-68")
        self.landmarker5 = LANDMARKERS.create("dlib-5")
        self.identity_net = load_dlib_identity() if cfg.embed else None
        self.rejected: Counter = Counter()

    # ------------------------------------------------------------------ stills

    def analyze(self, image: np.ndarray, embed: bool = True) -> list[AlignedFace]:
        """All usable faces of a still image, largest first."""
        upsample = self.config.upsample
        if upsample < 0:
            upsample = 1 if max(image.shape[:2]) <= 1000 else 0
        boxes = self._keep_boxes(self._detector(upsample).detect(image), image.shape)
        faces = []
        for rank, box in enumerate(boxes):
            points68 = self.landmarker.landmarks(image, box)
            faces.append(self._align(image, box, points68, rank, rank, tracked=False))
        self._describe(image, faces)
        if embed:
            self.embed(faces)
        return faces

    def from_landmarks(
        self, image: np.ndarray, landmarks: list[np.ndarray], track_ids: list[int] | None = None, embed: bool = True
    ) -> list[AlignedFace]:
        """Faces at known 68-point landmarks (e.g. a faceset's records): no detection is run."""
        from swaplab.faces.track import box_from_landmarks

        faces = []
        for rank, points in enumerate(landmarks):
            points = np.asarray(points, dtype=np.float32)
            track_id = track_ids[rank] if track_ids else rank
            faces.append(self._align(image, box_from_landmarks(points, score=1.0), points, rank, track_id, False))
        self._describe(image, faces)
        if embed:
            self.embed(faces)
        return faces

    def tracker(self) -> _TrackingSession:
        """A per-video session: detection every ``detect_every`` frames, tracking in between."""
        return _TrackingSession(self)

    # ------------------------------------------------------------------ internals

    def _detector(self, upsample: int):
        if upsample not in self._detectors:
            cfg = self.config
            kwargs: dict = {}
            if cfg.detector == "dlib-hog":
                kwargs = {"upsample": upsample, "max_side": cfg.max_side}
            elif cfg.detector == "dlib-cnn":
                kwargs = {"upsample": upsample}
            if cfg.min_score is not None:
                kwargs["min_score"] = cfg.min_score
            self._detectors[upsample] = DETECTORS.create(cfg.detector, **kwargs)
        return self._detectors[upsample]

    def _keep_boxes(self, boxes: list[FaceBox], shape: tuple[int, ...]) -> list[FaceBox]:
        kept = []
        for box in boxes:
            if min(box.width, box.height) < self.config.min_size:
                self.rejected[f"smaller than min_size={self.config.min_size} px"] += 1
                continue
            kept.append(box)
        kept.sort(key=lambda b: b.area, reverse=True)
        if self.config.max_faces and len(kept) > self.config.max_faces:
            self.rejected[f"beyond max_faces={self.config.max_faces}"] += len(kept) - self.config.max_faces
            kept = kept[: self.config.max_faces]
        return kept

    def _align(
        self, image: np.ndarray, box: FaceBox, points68: np.ndarray, rank: int, track_id: int, tracked: bool
    ) -> AlignedFace:
        points5 = self.landmarker5.landmarks(image, box)
        matrix = alignment_matrix(points68, self.template, self.size)
        crop = warp_face(image, matrix, self.size)
        crop_points = transform_points(points68, matrix)
        return AlignedFace(
            box=box,
            landmarks_source=points68.astype(np.float32),
            landmarks5_source=points5.astype(np.float32),
            matrix=matrix,
            crop=crop,
            landmarks=crop_points.astype(np.float32),
            face_index=rank,
            track_id=track_id,
            tracked=tracked,
            mask_polygon=face_hull_polygon(crop_points),
        )

    def embed(self, faces: list[AlignedFace], batch_size: int = 16) -> None:
        """Fill in ``identity`` for faces whose chip is waiting, in batches.

        Batching across frames matters: the ResNet costs about 11 ms per face at batch 1 and
        about 5 ms at batch 16 on this CPU (benchmarks/bench_identity.py).
        """
        waiting = [f for f in faces if f.chip is not None]
        if self.identity_net is None or not waiting:
            return
        for start in range(0, len(waiting), batch_size):
            group = waiting[start : start + batch_size]
            chips = torch.from_numpy(np.stack([f.chip for f in group]))
            batch = chips.permute(0, 3, 1, 2).float().div_(255.0).contiguous()
            with torch.inference_mode():
                descriptors = self.identity_net(batch).numpy()
            for face, descriptor in zip(group, descriptors):
                face.identity = descriptor.astype(np.float32)
                face.chip = None

    def _describe(self, image: np.ndarray, faces: list[AlignedFace]) -> None:
        """Sharpness, head pose and the identity chip of each face (embedding comes later)."""
        for face in faces:
            face.blur = sharpness(face.crop, face.mask_polygon)
            face.pose = head_pose(face.landmarks_source, image.shape[:2])
            if self.identity_net is not None:
                face.chip = dlib_chip(image, face.landmarks5_source)


class _TrackingSession:
    """Adapts ``FaceTracker`` (detect every N frames, landmarks tracked between) to AlignedFace."""

    def __init__(self, analyzer: FaceAnalyzer) -> None:
        self.analyzer = analyzer
        self.tracker = FaceTracker(
            analyzer.detector,
            analyzer.landmarker,
            detect_every=analyzer.config.detect_every,
            box_filter=lambda boxes, shape: analyzer._keep_boxes(boxes, shape),
        )

    def update(self, frame: np.ndarray, embed: bool = True) -> list[AlignedFace]:
        """Faces of the next frame; with ``embed=False`` identities wait for ``analyzer.embed``."""
        tracks = self.tracker.update(frame)
        faces = [
            self.analyzer._align(frame, t.box, t.landmarks, rank, t.track_id, tracked=t.tracked)
            for rank, t in enumerate(tracks)
        ]
        self.analyzer._describe(frame, faces)
        if embed:
            self.analyzer.embed(faces)
        return faces


def sharpness(crop: np.ndarray, polygon: np.ndarray | None = None) -> float:
    """Variance of the Laplacian of the grey crop, inside the face polygon when given.

    The usual blur score of DeepFaceLab's and faceswap's sorters: blurred faces score low.
    """
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(grey, cv2.CV_64F)
    if polygon is not None and len(polygon) >= 3:
        mask = np.zeros(grey.shape, np.uint8)
        cv2.fillConvexPoly(mask, np.round(polygon).astype(np.int32), 1)
        values = lap[mask > 0]
        if values.size > 16:
            return float(values.var())
    return float(lap.var())
