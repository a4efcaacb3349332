"""The faceset: aligned face crops plus per-face metadata, one documented on-disk format.

Layout of a faceset folder (format version 1; docs/faceset-format.md is the reference)::

    faceset.json            header: format name and version, crop template and size, image format
    faces/<face id>.jpg     aligned crops (RGB; .jpg or .png)
    shards/<shard>.json     the face records of one source image or one chunk of video frames

A shard is written atomically after its crops, so a shard's presence means that piece of work is
complete: re-running an extraction skips finished shards, and an interrupted one resumes at the
first missing shard. Metadata is JSON only (never pickle). This module reads and writes the
format; it does not detect or align anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from swaplab.io.atomic import atomic_write_json
from swaplab.io.images import read_image

FORMAT_NAME = "swaplab-faceset"
FORMAT_VERSION = 1


class FacesetError(Exception):
    """A faceset folder that is missing, damaged or of an unsupported version."""


class FacesetDamaged(FacesetError):
    """A faceset with shards that cannot be read: its faces would be silently lost."""

    def __init__(self, root: Path, damaged: list[tuple[str, str]], intact: int) -> None:
        shown = "; ".join(f"shards/{name}: {reason}" for name, reason in damaged[:3])
        more = f" and {len(damaged) - 3} more" if len(damaged) > 3 else ""
        super().__init__(
            f"{root}: {len(damaged)} damaged shard(s) ({shown}{more}); {intact} faces are intact. Re-run "
            "`swaplab extract` with the same inputs and output to rebuild them, or pass data.allow_damaged=true "
            "to use only the intact faces"
        )
        self.root, self.damaged, self.intact = root, damaged, intact


@dataclass
class FacesetHeader:
    template: str  # alignment template name (swaplab.faces.align.TEMPLATES)
    size: int  # crop side in pixels
    image_format: str = "jpg"
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION
    landmark_model: str = "dlib-68"
    identity_model: str = "dlib-resnet"
    created_by: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # the resolved extraction config


@dataclass
class FaceRecord:
    """Everything known about one aligned face. Coordinates are pixels, (x, y)."""

    id: str  # unique within the faceset; also the crop's file stem
    file: str  # crop path relative to the faceset folder
    source: str  # the source image or video, as given to the extractor
    frame: int  # frame index in a video; 0 for a still image
    time: float  # presentation time in seconds (0 for stills)
    face_index: int  # rank of this face within its frame (by detection score)
    track_id: int  # stable across frames of a video track; equals face_index for stills
    score: float  # detector confidence
    box: list[float]  # detector box in the source frame: x0, y0, x1, y1
    source_size: list[int]  # width, height of the frame the coordinates refer to
    matrix: list[list[float]]  # 2x3 affine, source frame -> crop (cv2.warpAffine convention)
    landmarks: list[list[float]]  # 68 points in crop coordinates
    landmarks_source: list[list[float]]  # 68 points in source coordinates
    landmarks5_source: list[list[float]] = field(default_factory=list)  # dlib's 5-point layout
    identity: list[float] = field(default_factory=list)  # 128-d dlib ResNet descriptor
    mask: list[list[float]] = field(default_factory=list)  # face hull polygon, crop coordinates
    blur: float = 0.0  # variance of the Laplacian inside the face (higher = sharper)
    pose: list[float] = field(default_factory=list)  # yaw, pitch, roll in degrees
    tracked: bool = False  # landmarks came from tracking rather than a fresh detection

    @property
    def matrix_array(self) -> np.ndarray:
        return np.asarray(self.matrix, dtype=np.float64)

    @property
    def landmarks_array(self) -> np.ndarray:
        return np.asarray(self.landmarks, dtype=np.float32)

    @property
    def identity_array(self) -> np.ndarray:
        return np.asarray(self.identity, dtype=np.float32)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaceRecord:
        """A record from its JSON form; ``ValueError`` names the first missing or malformed field."""
        if not isinstance(data, dict):
            raise ValueError(f"a record is a JSON object, got {type(data).__name__}")
        for spec in dataclasses.fields(cls):
            required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
            if spec.name not in data:
                if required:
                    raise ValueError(f"record {data.get('id', '?')!r} lacks the field {spec.name!r}")
                continue
            kinds = _JSON_KINDS.get(spec.type if isinstance(spec.type, str) else "", ())
            if kinds and not isinstance(data[spec.name], kinds):
                found = type(data[spec.name]).__name__
                raise ValueError(f"record {data.get('id', '?')!r}: field {spec.name!r} is a {found}")
        record_id = data.get("id", "?")
        for name, shape in _SHAPES.items():
            if name in data and not _numbers_shaped(data[name], shape):
                raise ValueError(f"record {record_id!r}: field {name!r} is not {_describe(shape)}")
        file = PurePosixPath(data["file"])
        if file.is_absolute() or ".." in file.parts or not file.parts:
            raise ValueError(f"record {record_id!r}: its file {data['file']!r} lies outside the faceset")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


#: The numeric fields' shapes: a length (None: any) per level; ``()`` an empty list is allowed too.
_SHAPES: dict[str, tuple[int | None, ...]] = {
    "box": (4,),
    "source_size": (2,),
    "matrix": (2, 3),
    "landmarks": (None, 2),
    "landmarks_source": (None, 2),
    "landmarks5_source": (None, 2),
    "identity": (None,),
    "mask": (None, 2),
    "pose": (None,),
}


def _numbers_shaped(value: Any, shape: tuple[int | None, ...]) -> bool:
    """Whether ``value`` is nested lists of finite numbers (not booleans) with ``shape``."""
    if not shape:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return abs(value) < 1e12 if isinstance(value, int) else math.isfinite(value)
    if not isinstance(value, list) or (shape[0] is not None and len(value) != shape[0]):
        return False
    return all(_numbers_shaped(item, shape[1:]) for item in value)


def _describe(shape: tuple[int | None, ...]) -> str:
    return "a list of " + " x ".join("N" if n is None else str(n) for n in shape) + " numbers"


#: JSON types a record's fields may hold, by their declared type (annotations are strings here).
_JSON_KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "list[float]": (list,),
    "list[int]": (list,),
    "list[list[float]]": (list,),
}


def read_shard(path: Path) -> list[FaceRecord]:
    """The records of one shard; ``ValueError`` says what is wrong with a damaged one."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"not readable JSON ({err.__class__.__name__}: {err})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
        raise ValueError("no list of records")
    return [FaceRecord.from_json(r) for r in payload["records"]]


def shard_key(source: str | Path, suffix: str = "") -> str:
    """A readable, collision-free shard name for a source (and a chunk suffix)."""
    text = str(Path(source).resolve())
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(source).stem)[:40] or "source"
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]
    return f"{stem}-{digest}{suffix}"


class FacesetWriter:
    """Creates or reopens a faceset folder and adds shards to it.

    Reopening checks that the header matches (same template, size and format), so that one
    faceset never mixes crops of different geometry.
    """

    def __init__(self, root: str | Path, header: FacesetHeader) -> None:
        self.root = Path(root)
        self.header = header
        (self.root / "faces").mkdir(parents=True, exist_ok=True)
        (self.root / "shards").mkdir(exist_ok=True)
        header_path = self.root / "faceset.json"
        if header_path.exists():
            existing = read_header(self.root)
            for key in ("template", "size", "image_format"):
                if getattr(existing, key) != getattr(header, key):
                    raise FacesetError(
                        f"{self.root} holds {key}={getattr(existing, key)!r} crops; this extraction "
                        f"asks for {getattr(header, key)!r}. Use another output folder."
                    )
        else:
            atomic_write_json(header_path, asdict(header))

    def has_shard(self, key: str) -> bool:
        """Whether the shard is written and readable: a damaged one counts as not done (and is redone)."""
        path = self.root / "shards" / f"{key}.json"
        if not path.exists():
            return False
        try:
            read_shard(path)
        except ValueError:
            return False
        return True

    def crop_path(self, face_id: str) -> Path:
        return self.root / "faces" / f"{face_id}.{self.header.image_format}"

    def write_shard(self, key: str, records: list[FaceRecord], extra: dict[str, Any] | None = None) -> None:
        """Commit a shard: call only after every crop it names is written."""
        payload = {"records": [asdict(r) for r in records], **(extra or {})}
        atomic_write_json(self.root / "shards" / f"{key}.json", payload, indent=None)


def read_header(root: str | Path) -> FacesetHeader:
    root = Path(root)
    path = root / "faceset.json"
    if not path.is_file():
        raise FacesetError(f"{root} is not a faceset (no faceset.json); create one with `swaplab extract`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise FacesetError(f"{path} is damaged: {err}") from None
    if not isinstance(data, dict):
        raise FacesetError(f"{path} is damaged: a header is a JSON object, this is a {type(data).__name__}")
    if data.get("format") != FORMAT_NAME:
        raise FacesetError(f"{path} is not a swaplab faceset header (format={data.get('format')!r})")
    version = data.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FacesetError(
            f"{root} uses faceset format version {version}; this swaplab reads up to version "
            f"{FORMAT_VERSION}. Upgrade swaplab or re-extract."
        )
    known = set(FacesetHeader.__dataclass_fields__)
    missing = [k for k in ("template", "size") if k not in data]
    size = data.get("size")
    if (
        missing
        or not isinstance(size, int)
        or isinstance(size, bool)
        or size < 1
        or not isinstance(data["template"], str)
    ):
        raise FacesetError(f"{path} is damaged: its template and size are {'missing' if missing else 'malformed'}")
    for key in ("image_format", "landmark_model", "identity_model", "created_by"):
        if key in data and not isinstance(data[key], str):
            raise FacesetError(f"{path} is damaged: its field {key!r} is a {type(data[key]).__name__}, not text")
    if not isinstance(data.get("config", {}), dict):
        raise FacesetError(f"{path} is damaged: its field 'config' is not an object")
    return FacesetHeader(**{k: v for k, v in data.items() if k in known})


class Faceset:
    """Read access to a faceset: ``len(fs)``, ``fs.records[i]``, ``fs.image(i)``.

    A faceset with damaged shards raises ``FacesetDamaged`` (naming them and how to rebuild them)
    unless ``allow_damaged``: then the intact faces are read and ``damaged`` lists the rest, so
    nothing is lost without the caller knowing.
    """

    def __init__(self, root: str | Path, *, allow_damaged: bool = False) -> None:
        self.root = Path(root)
        self.header = read_header(self.root)
        self.records: list[FaceRecord] = []
        self.damaged: list[tuple[str, str]] = []  # (shard file name, what is wrong)
        for shard in sorted((self.root / "shards").glob("*.json")):
            try:
                records = read_shard(shard)
            except (ValueError, TypeError) as err:
                # Shards are written atomically, so a damaged one was damaged after the fact.
                self.damaged.append((shard.name, str(err)))
                continue
            # Shards are read in name order and records keep their order within a shard, so a
            # sorted faceset (one shard) keeps the order it was sorted in.
            self.records.extend(records)
        if self.damaged and not allow_damaged:
            raise FacesetDamaged(self.root, self.damaged, len(self.records))

    @property
    def skipped_shards(self) -> list[str]:
        return [name for name, _ in self.damaged]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[FaceRecord]:
        return iter(self.records)

    @property
    def size(self) -> int:
        return self.header.size

    def image_path(self, index: int) -> Path:
        return self.root / self.records[index].file

    def image(self, index: int) -> np.ndarray:
        """The aligned crop as RGB uint8 (size x size x 3)."""
        image, _ = read_image(self.image_path(index))
        return image

    def landmarks(self, index: int) -> np.ndarray:
        return self.records[index].landmarks_array

    def identities(self) -> np.ndarray:
        """(N, 128) identity descriptors (rows of NaN where a record has none)."""
        out = np.full((len(self.records), 128), np.nan, dtype=np.float32)
        for i, rec in enumerate(self.records):
            if rec.identity:
                out[i] = rec.identity
        return out

    def content_hash(self) -> str:
        """A short hash of the records (ids, geometry, identity): stable across copies."""
        digest = hashlib.sha256()
        digest.update(json.dumps(asdict(self.header), sort_keys=True, default=str).encode())
        for rec in self.records:
            digest.update(json.dumps(asdict(rec), sort_keys=True).encode())
        return digest.hexdigest()[:16]


def common_template(facesets: Iterable[Faceset]) -> str:
    """The alignment template every one of ``facesets`` shares (crops aligned differently cannot be mixed)."""
    templates = {faceset.header.template for faceset in facesets}
    if len(templates) != 1:
        raise ValueError(f"facesets aligned to different templates ({', '.join(sorted(templates))}) cannot be mixed")
    return templates.pop()


def iter_records(roots: Iterable[str | Path]) -> Iterator[tuple[Faceset, int]]:
    for root in roots:
        faceset = Faceset(root)
        for i in range(len(faceset)):
            yield faceset, i
