"""Mark every output as synthetic, and check marks: the calls the swap pipeline and ``verify`` make.

``mark_image`` hides the payload in pixels, ``write_marked_image`` also writes the metadata record
(atomically), ``write_video_metadata`` tags a finished video, and ``verify`` reads both back from a
file. The maths lives in ``watermark.py`` and the formats in ``metadata.py``; this module only
composes them and must not grow its own image processing.

Video: mark every frame with ``mark_image`` before encoding, then tag the file with
``write_video_metadata`` (or pass ``video_metadata_tags`` to the writer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from swaplab.io.atomic import atomic_path
from swaplab.provenance.content_credentials import read_credentials, sign_in_place
from swaplab.provenance.metadata import (
    VIDEO_SUFFIXES,
    PayloadFields,
    Provenance,
    ffmpeg_metadata_args,
    image_save_options,
    read_metadata,
    video_metadata_tags,
    write_video_metadata,
)
from swaplab.provenance.sync import TemplateReading, add_template, detect, read_payload
from swaplab.provenance.watermark import WatermarkError, WatermarkReading, decide, embed, soft_bits

__all__ = [
    "PayloadFields",
    "Provenance",
    "VerifyReport",
    "WatermarkError",
    "WatermarkReading",
    "ffmpeg_metadata_args",
    "mark_image",
    "read_metadata",
    "verify",
    "video_metadata_tags",
    "write_marked_image",
    "write_video_metadata",
]

#: Frames ``verify`` samples from a video, spread evenly over its duration.
VIDEO_SAMPLE_FRAMES = 8


def mark_image(image: np.ndarray, fields: PayloadFields | Provenance) -> np.ndarray:
    """``image`` (RGB uint8, H x W x 3, each side >= 64 px) with the watermark of ``fields``."""
    if isinstance(fields, Provenance):
        fields = fields.payload_fields()
    # The payload mark, then the synchronisation template that finds it again after a crop, a
    # mirror or a rotation (sync.py).
    return add_template(embed(image, fields.pack()))


def write_marked_image(path: str | Path, image: np.ndarray, provenance: Provenance, quality: int = 95) -> Path:
    """Watermark ``image`` (RGB uint8) and write it with its metadata record to ``path`` (.png/.jpg).

    The file appears atomically: a reader sees no file or the complete, marked one.
    """
    from PIL import Image

    path = Path(path)
    options = image_save_options(path, provenance)
    if options["format"] == "JPEG":
        options["quality"] = quality
    marked = mark_image(image, provenance)
    with atomic_path(path) as tmp:
        Image.fromarray(marked).save(tmp, **options)
        sign_in_place(tmp, provenance)  # C2PA content credentials, before the file takes its name
    return path


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` found in one file.

    ``watermark`` is the image's reading, or for a video the reading of the sampled frames' votes
    averaged (stronger than any one frame); ``frames_marked`` counts the sampled frames that read
    present on their own. ``payload`` is set when the watermark is present and carries the swaplab tag.
    """

    path: str
    kind: Literal["image", "video"]
    watermark: WatermarkReading
    payload: PayloadFields | None
    metadata: dict[str, Any] | None
    frames_checked: int
    frames_marked: int
    template: TemplateReading | None = None  # the geometric template, read when the payload was not direct
    recovered: str = ""  # how the payload was re-read (undoing a mirror or a turn), "" when direct
    credentials: dict[str, Any] | None = None  # the C2PA manifest, checked (content_credentials.read_credentials)

    @property
    def synthetic(self) -> bool:
        """Whether any signal says swaplab made this file."""
        template = self.template is not None and self.template.present
        credentials = bool(self.credentials and self.credentials["synthetic"])
        return (
            self.payload is not None
            or template
            or credentials
            or bool(self.metadata and self.metadata.get("synthetic"))
        )

    @property
    def consistent(self) -> bool | None:
        """Whether the watermark's model hash matches the metadata's (None: one of them is missing)."""
        if self.payload is None or not self.metadata or "model_sha256" not in self.metadata:
            return None
        return bytes.fromhex(self.metadata["model_sha256"])[:3] == self.payload.model_hash

    def summary(self) -> str:
        """One line for people: the verdict, then each signal."""
        verdict = "SYNTHETIC (made by swaplab)" if self.synthetic else "no swaplab mark found"
        mark = (
            f"watermark present (confidence {self.watermark.confidence:.2f}, model hash "
            f"{self.payload.model_hash.hex()})"
            if self.payload is not None
            else "watermark absent"
        )
        if self.recovered:
            mark += f" {self.recovered}"
        elif self.payload is None and self.template is not None and self.template.present:
            t = self.template
            edits = [f"cropped to about {t.scale:.0%}"] if t.scale < 0.995 else []
            edits += ["mirrored"] if t.mirrored else []
            edits += [f"turned about {t.angle:+.1f} degrees"] if t.angle else []
            mark = (
                f"geometric template present (score {t.score:.1f}; payload unreadable"
                + (f"; the file looks {', '.join(edits)}" if edits else "")
                + ")"
            )
        if self.kind == "video":
            mark += f", {self.frames_marked}/{self.frames_checked} sampled frames marked on their own"
        meta = "metadata: " + (
            f"model {self.metadata.get('model_id')}, created {self.metadata.get('created')}"
            if self.metadata
            else "none"
        )
        agree = {True: "; watermark and metadata agree", False: "; WATERMARK AND METADATA DISAGREE", None: ""}
        c2pa = "C2PA: none"
        if self.credentials:
            cred = self.credentials
            state = "valid" if cred["state"] != "Invalid" else "INVALID (" + ", ".join(cred["codes"][:3]) + ")"
            signer = "trusted signer" if cred["trusted"] else "local, untrusted signer"
            c2pa = f"C2PA: {state}, {signer}, by {cred['generator'] or 'unknown'}"
        return f"{verdict}: {mark}; {meta}; {c2pa}{agree[self.consistent]}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "synthetic": self.synthetic,
            "watermark": {
                "present": self.watermark.present,
                "confidence": round(self.watermark.confidence, 4),
            },
            "template": None
            if self.template is None
            else {
                "present": self.template.present,
                "score": round(self.template.score, 3),
                "scale": self.template.scale,
                "angle": self.template.angle,
                "mirrored": self.template.mirrored,
            },
            "recovered": self.recovered,
            "c2pa": self.credentials,
            "payload": None if self.payload is None else self.payload.to_dict(),
            "metadata": self.metadata,
            "consistent": self.consistent,
            "frames_checked": self.frames_checked,
            "frames_marked": self.frames_marked,
        }


def verify(path: str | Path, frames: int = VIDEO_SAMPLE_FRAMES) -> VerifyReport:
    """Check an image or video file for swaplab's watermark and metadata."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    metadata = read_metadata(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        votes = [soft_bits(frame) for frame in _sample_video_frames(path, frames)]
        sampled = _sample_video_frames(path, frames)
        votes = [soft_bits(frame) for frame in sampled]
        reading = decide(np.mean(votes, axis=0)) if votes else WatermarkReading(False, None, 0.0)
        kind: Literal["image", "video"] = "video"
        checked, marked = len(votes), sum(decide(v).present for v in votes)
        template, how = None, ""
        if not reading.present and sampled:
            # An edited video: the template of its best frame (a crop or turn applies to all of them).
            template = max((detect(frame) for frame in sampled[:3]), key=lambda t: t.score)
    else:
        reading, template, how, _ = read_payload(_read_image(path))
        kind, checked, marked = "image", 1, int(reading.present)
    payload = PayloadFields.unpack(reading.payload) if reading.payload else None
    credentials = read_credentials(path)
    return VerifyReport(str(path), kind, reading, payload, metadata, checked, marked, template, how, credentials)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    # No EXIF transpose: the mark lives in the stored pixel grid, which is what was written.
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _sample_video_frames(path: Path, count: int) -> list[np.ndarray]:
    """Up to ``count`` RGB frames spread evenly over the video (seek, then decode to the time)."""
    import av

    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        if duration <= 0:
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == count:
                    break
            return frames
        start = float((stream.start_time or 0) * stream.time_base)
        for i in range(count):
            when = start + duration * (i + 0.5) / count
            container.seek(int(when / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.time is None or frame.time >= when - 1e-6:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    break
    return frames
