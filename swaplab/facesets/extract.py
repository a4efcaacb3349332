"""Extraction: photos, folders and videos in, a faceset out.

For each frame: detect faces (or track them between detections in a video), locate 68 and
5 landmarks, align each face to the template by a similarity transform, embed its identity with
the dlib ResNet port, and write the crop plus its record. Work is committed one shard at a time
(one image, or one chunk of video frames), so re-running skips what is done and a killed run
resumes. A bad file is reported by name and reason and the batch carries on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from tqdm import tqdm

from swaplab.config import to_dict
from swaplab.faces.analyze import AlignedFace, FaceAnalyzer, FaceAnalyzerConfig
from swaplab.facesets.format import FaceRecord, FacesetHeader, FacesetWriter, shard_key
from swaplab.io.atomic import atomic_write_json, remove_stale_temporaries
from swaplab.io.images import MediaError, encode_image, is_image_path, is_video_path, read_image
from swaplab.io.locks import exclusive
from swaplab.io.video import VideoReader

log = logging.getLogger(__name__)


@dataclass
class ExtractConfig:
    """Options of ``swaplab extract`` (every field is a ``key=value`` override on the CLI)."""

    faces: FaceAnalyzerConfig = field(default_factory=FaceAnalyzerConfig)
    template: str = "whole_face"  # alignment template: whole_face (swapping), face, dlib_5 (identity)
    size: int = 256  # crop side in pixels
    image_format: Literal["jpg", "png"] = "jpg"
    jpeg_quality: int = 95
    every: int = 1  # keep every Nth video frame
    max_frames: int = 0  # stop each video after this many frames (0 = all)
    chunk_frames: int = 200  # video frames per shard: the unit of resume
    reference: list[Path] = field(default_factory=list)  # keep only faces like these photos
    max_identity_distance: float = 0.6  # dlib's same-person threshold
    max_pixels: int = 40_000_000  # larger images are downscaled (or refused) when read

    def __post_init__(self) -> None:
        if self.size < 32 or self.size > 1024:
            raise ValueError(f"size must be in 32..1024, got {self.size}")
        if self.every < 1 or self.chunk_frames < 1:
            raise ValueError("every and chunk_frames must be >= 1")


@dataclass
class ExtractSummary:
    """What an extraction did, with every problem named by file."""

    output: str
    images: int = 0
    videos: int = 0
    frames: int = 0
    faces: int = 0
    resumed_shards: int = 0
    frames_without_face: int = 0
    rejected: Counter = field(default_factory=Counter)  # faces dropped, by reason
    problems: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}
    seconds: float = 0.0

    def add_problem(self, path: str | Path, reason: str) -> None:
        self.problems.append({"path": str(path), "reason": reason})
        log.warning("skipped %s: %s", path, reason)

    def lines(self) -> list[str]:
        rate = self.frames / self.seconds if self.seconds else 0.0
        out = [
            f"faceset: {self.output}",
            f"{self.faces} faces from {self.images} images and {self.videos} videos "
            f"({self.frames} frames, {rate:.1f} frames/s)",
        ]
        if self.resumed_shards:
            out.append(f"{self.resumed_shards} finished pieces skipped (already extracted)")
        if self.frames_without_face:
            out.append(f"{self.frames_without_face} frames/images had no usable face")
        for reason, count in sorted(self.rejected.items()):
            out.append(f"{count} faces dropped: {reason}")
        if self.problems:
            by_reason = Counter(p["reason"].split(":")[0].split("(")[0].strip() for p in self.problems)
            out.append(f"{len(self.problems)} inputs skipped:")
            out.extend(f"  {count} x {reason}" for reason, count in by_reason.most_common())
        return out


def lfw_people_folders(people_list: Path) -> list[Path]:
    """The photo folders of the people an LFW list names (``peopleDevTrain.txt``, ...).

    The folders sit in ``lfw-deepfunneled/`` (or ``lfw/``) beside the list, as in the official
    download, so ``swaplab extract .../peopleDevTrain.txt`` extracts exactly one split.
    """
    from swaplab.data.lfw import read_people_list

    people = read_people_list(people_list)
    for images in ("lfw-deepfunneled", "lfw"):
        root = people_list.parent / images
        if root.is_dir():
            return [root / name for name in people]
    raise FileNotFoundError(f"{people_list}: no lfw-deepfunneled/ or lfw/ photo folder beside it")


def _is_people_list(path: Path) -> bool:
    return path.is_file() and path.suffix == ".txt" and path.name.startswith("people")


def expand_inputs(inputs: Iterable[str | Path], summary: ExtractSummary) -> Iterator[Path]:
    """Photos and videos named directly or found (recursively, sorted) in folders; an LFW people
    list (``peopleDevTrain.txt``) stands for the folders of the people it names."""
    for item in inputs:
        path = Path(item)
        if _is_people_list(path):
            yield from expand_inputs(lfw_people_folders(path), summary)
        elif path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.name.startswith("."):
                    continue
                if is_image_path(child) or is_video_path(child):
                    yield child
                else:
                    summary.add_problem(child, "not an image or video (unknown file type)")
        elif path.is_file():
            yield path
        else:
            summary.add_problem(path, "no such file or folder")


def face_record(
    face: AlignedFace, face_id: str, file: str, source: str, frame: int, time: float, frame_size: tuple[int, ...]
) -> FaceRecord:
    """The faceset record of an aligned face found in ``source`` (``frame_size`` is its frame's shape)."""

    def rounded(a: np.ndarray, digits: int = 3) -> list:
        return np.round(np.asarray(a, dtype=np.float64), digits).tolist()

    return FaceRecord(
        id=face_id,
        file=file,
        source=source,
        frame=frame,
        time=round(time, 6),
        face_index=face.face_index,
        track_id=face.track_id,
        score=round(float(face.box.score), 4),
        box=rounded([face.box.x0, face.box.y0, face.box.x1, face.box.y1], 2),
        source_size=[int(frame_size[1]), int(frame_size[0])],
        matrix=rounded(face.matrix, 8),
        landmarks=rounded(face.landmarks),
        landmarks_source=rounded(face.landmarks_source),
        landmarks5_source=rounded(face.landmarks5_source),
        identity=rounded(face.identity, 6),
        mask=rounded(face.mask_polygon, 2),
        blur=round(float(face.blur), 3),
        pose=rounded(face.pose, 2),
        tracked=face.tracked,
    )


def extract(
    inputs: Iterable[str | Path] | str | Path,
    output: str | Path,
    config: ExtractConfig | None = None,
    progress: bool = True,
) -> ExtractSummary:
    """Extract aligned faces from photos, folders and videos into the faceset at ``output``."""
    cfg = config or ExtractConfig()
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    started = time.perf_counter()
    summary = ExtractSummary(output=str(output))
    analyzer = FaceAnalyzer(cfg.faces, template=cfg.template, size=cfg.size)
    header = FacesetHeader(
        template=cfg.template,
        size=cfg.size,
        image_format=cfg.image_format,
        created_by=_created_by(),
        config=to_dict(cfg),
    )
    writer = FacesetWriter(output, header)
    references = _reference_identities(cfg.reference, analyzer)
    files = list(expand_inputs(inputs, summary))
    with exclusive(Path(output) / ".lock", f"faceset {output}"):  # one extraction writes a faceset at a time
        _remove_leftovers(Path(output))
        _extract_files(files, cfg, analyzer, writer, references, summary, progress)
    summary.rejected.update(analyzer.rejected)
    summary.seconds = time.perf_counter() - started
    atomic_write_json(Path(output) / "extract_report.json", _summary_json(summary))
    return summary


def _remove_leftovers(output: Path) -> None:
    """Temporary files of a killed extraction (the faceset's lock is held, so none is in use)."""
    leftovers = remove_stale_temporaries(output) + remove_stale_temporaries(output / "shards")
    crops = output / "faces"
    if crops.is_dir():
        for partial in crops.glob("*.partial"):
            partial.unlink(missing_ok=True)
            leftovers.append(partial)
    for path in leftovers:
        log.info("removed a temporary file left by a killed extraction: %s", path)


def _extract_files(
    files: list[Path],
    cfg: ExtractConfig,
    analyzer: FaceAnalyzer,
    writer: FacesetWriter,
    references: np.ndarray | None,
    summary: ExtractSummary,
    progress: bool,
) -> None:
    bar = tqdm(files, desc="extract", unit="file", disable=not progress, dynamic_ncols=True)
    for path in bar:
        bar.set_postfix_str(path.name[-30:])
        try:
            if is_video_path(path):
                _extract_video(path, cfg, analyzer, writer, references, summary, progress)
            else:
                _extract_image(path, cfg, analyzer, writer, references, summary)
        except MediaError as err:
            summary.add_problem(err.path, err.reason)
        except OSError as err:
            if err.errno == 28:  # ENOSPC: what was committed stays valid; stop cleanly
                summary.add_problem(path, "disk full: extraction stopped; re-run to resume")
                break
            summary.add_problem(path, f"cannot read: {err}")


def _extract_image(
    path: Path,
    cfg: ExtractConfig,
    analyzer: FaceAnalyzer,
    writer: FacesetWriter,
    references: np.ndarray | None,
    summary: ExtractSummary,
) -> None:
    key = shard_key(path)
    if writer.has_shard(key):
        summary.resumed_shards += 1
        summary.images += 1
        return
    image, info = read_image(path, max_pixels=cfg.max_pixels)
    for note in info.notes:
        log.info("%s: %s", path, note)
    faces = analyzer.analyze(image)
    records = _commit_faces(path, 0, 0.0, image.shape, faces, cfg, writer, references, summary, key)
    writer.write_shard(key, records, {"source": str(path), "notes": info.notes, "scale": info.scale})
    summary.images += 1
    summary.frames += 1
    summary.faces += len(records)
    if not records:
        summary.frames_without_face += 1


def _extract_video(
    path: Path,
    cfg: ExtractConfig,
    analyzer: FaceAnalyzer,
    writer: FacesetWriter,
    references: np.ndarray | None,
    summary: ExtractSummary,
    progress: bool,
) -> None:
    reader = VideoReader(path, every=1, stop=cfg.max_frames or None)
    total = min(reader.info.frame_count or 0, cfg.max_frames or 1 << 30) or None
    chunk = _VideoChunk(path, -1, skip=True)
    bar = tqdm(total=total, desc=path.name[-24:], unit="frame", disable=not progress, leave=False)
    for frame in reader:
        bar.update(1)
        if frame.index // cfg.chunk_frames != chunk.index:
            _finish_chunk(chunk, cfg, analyzer, writer, references, summary)
            chunk = _VideoChunk(path, frame.index // cfg.chunk_frames, skip=False)
            if writer.has_shard(chunk.key):
                chunk.skip = True
                summary.resumed_shards += 1
            # Each chunk starts with a fresh detection, so resuming mid-video sees what a
            # full run saw.
            chunk.tracker = None if chunk.skip else analyzer.tracker()
        if chunk.skip or frame.index % cfg.every:
            continue
        faces = chunk.tracker.update(frame.image, embed=False)
        chunk.frames.append((frame.index, frame.time, frame.image.shape, faces))
        summary.frames += 1
    bar.close()
    _finish_chunk(chunk, cfg, analyzer, writer, references, summary)
    if chunk.index < 0:
        raise MediaError(path, "no frame could be decoded")
    for problem in reader.problems:
        summary.add_problem(path, problem)
    if reader.variable_frame_rate:
        log.info("%s has a variable frame rate; frame times are kept per face", path)
    summary.videos += 1


@dataclass
class _VideoChunk:
    """The frames of one shard of a video, held until their identities are embedded in batches."""

    path: Path
    index: int
    skip: bool
    tracker: object = None
    frames: list = field(default_factory=list)  # (frame index, time, shape, faces)

    @property
    def key(self) -> str:
        return shard_key(self.path, f".c{self.index:05d}")


def _finish_chunk(
    chunk: _VideoChunk,
    cfg: ExtractConfig,
    analyzer: FaceAnalyzer,
    writer: FacesetWriter,
    references: np.ndarray | None,
    summary: ExtractSummary,
) -> None:
    if chunk.index < 0 or chunk.skip:
        return
    analyzer.embed([face for *_, faces in chunk.frames for face in faces])
    records: list[FaceRecord] = []
    for frame_index, frame_time, shape, faces in chunk.frames:
        kept = _commit_faces(
            chunk.path, frame_index, frame_time, shape, faces, cfg, writer, references, summary, chunk.key
        )
        records.extend(kept)
        summary.faces += len(kept)
        if not kept:
            summary.frames_without_face += 1
    writer.write_shard(chunk.key, records, {"source": str(chunk.path)})


def _commit_faces(
    path: Path,
    frame_index: int,
    frame_time: float,
    frame_shape: tuple[int, ...],
    faces: list[AlignedFace],
    cfg: ExtractConfig,
    writer: FacesetWriter,
    references: np.ndarray | None,
    summary: ExtractSummary,
    key: str,
) -> list[FaceRecord]:
    """Filter by identity, write the crops, and return the finished records."""
    records = []
    for face in faces:
        if references is not None:
            distance = float(np.min(np.linalg.norm(references - face.identity[None], axis=1)))
            if distance > cfg.max_identity_distance:
                summary.rejected["not the reference identity"] += 1
                continue
        face_id = f"{key}_f{frame_index:06d}_{face.face_index}"
        crop_file = writer.crop_path(face_id)
        # Crops need no fsync: until the shard naming them is committed they are not part of
        # the faceset, and a resumed run rewrites them.
        data = encode_image(face.crop, "." + cfg.image_format, quality=cfg.jpeg_quality)
        tmp = crop_file.with_name(crop_file.name + ".partial")
        tmp.write_bytes(data)
        os.replace(tmp, crop_file)
        records.append(
            face_record(face, face_id, f"faces/{crop_file.name}", str(path), frame_index, frame_time, frame_shape)
        )
    return records


def _reference_identities(paths: list[Path], analyzer: FaceAnalyzer) -> np.ndarray | None:
    """Identity descriptors of the reference photos (the largest face of each)."""
    if not paths:
        return None
    descriptors = []
    for path in paths:
        image, _ = read_image(path)
        faces = analyzer.analyze(image)
        if not faces:
            raise MediaError(path, "no face found in the reference photo")
        largest = max(faces, key=lambda f: f.box.area)
        descriptors.append(largest.identity)
    return np.stack(descriptors)


def _created_by() -> str:
    from swaplab._version import __version__

    return f"swaplab {__version__} (torch {torch.__version__}, opencv {cv2.__version__})"


def _summary_json(summary: ExtractSummary) -> dict:
    data = dataclasses.asdict(summary)
    data["rejected"] = dict(summary.rejected)
    return data
