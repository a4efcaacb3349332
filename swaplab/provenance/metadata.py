"""What swaplab says about its outputs: the watermark payload's fields and the files' metadata.

The payload packs a tag, a format version, a model hash and a content hash into the watermark's 7
bytes; the metadata record (JSON) says the content is synthetic, by which tool and model, and when.
Images carry the record in an XMP packet (PNG: an iTXt chunk ``XML:com.adobe.xmp``; JPEG: the APP1
XMP segment; both through Pillow), videos in the container's ``comment`` tag (MP4: the ``©cmt``
atom). This module never hides pixels (``watermark.py`` does) and never decides what to mark.

XMP rather than EXIF UserComment because XMP is where the IPTC ``DigitalSourceType`` lives
(``Iptc4xmpExt:DigitalSourceType``, the value ``trainedAlgorithmicMedia``), which other tools
(exiftool, Adobe's and IPTC's readers) already look for; the full record rides beside it as JSON in
a ``swaplab:Provenance`` property.
"""

from __future__ import annotations

import hashlib
import html
import importlib.metadata
import json
import re
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from swaplab.io.atomic import atomic_path
from swaplab.provenance.watermark import PAYLOAD_BYTES

#: First payload byte of every swaplab mark ("S"); a CRC-valid payload with another tag is not ours.
PAYLOAD_TAG = 0x53
PAYLOAD_VERSION = 1
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
TOOL = "swaplab"
XMP_NAMESPACE = "urn:swaplab:provenance:1"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")

_MODEL_HASH_BYTES = 3
_CONTENT_HASH_BYTES = 2


def tool_version() -> str:
    try:
        return importlib.metadata.version("swaplab")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


# ------------------------------------------------------------------ the watermark payload


@dataclass(frozen=True)
class PayloadFields:
    """The watermark's 7 bytes: tag (1), version (1), model hash (3), content hash (2).

    ``model_hash`` is the first 3 bytes of the sha256 of the model card (or model id): enough to
    tell a handful of a lab's models apart and to check a claimed model, not to name one from
    scratch. ``content_hash`` is the first 2 bytes of the sha256 of whatever identifies the job (the
    swap pipeline: the target media's sha256), to match an output to its run manifest.
    """

    model_hash: bytes
    content_hash: bytes
    version: int = PAYLOAD_VERSION

    def __post_init__(self) -> None:
        if len(self.model_hash) != _MODEL_HASH_BYTES or len(self.content_hash) != _CONTENT_HASH_BYTES:
            raise ValueError(
                f"model_hash must be {_MODEL_HASH_BYTES} bytes and content_hash {_CONTENT_HASH_BYTES}, "
                f"got {len(self.model_hash)} and {len(self.content_hash)}"
            )
        if not 0 <= self.version <= 255:
            raise ValueError(f"payload version must fit a byte, got {self.version}")

    @classmethod
    def from_ids(cls, model: bytes | str, content: bytes | str = b"") -> PayloadFields:
        """Hash a model card (or id) and a content id into the payload's short fields."""
        model_digest = bytes.fromhex(sha256_hex(model))
        content_digest = bytes.fromhex(sha256_hex(content))
        return cls(model_digest[:_MODEL_HASH_BYTES], content_digest[:_CONTENT_HASH_BYTES])

    def pack(self) -> bytes:
        payload = bytes([PAYLOAD_TAG, self.version]) + self.model_hash + self.content_hash
        assert len(payload) == PAYLOAD_BYTES
        return payload

    @classmethod
    def unpack(cls, payload: bytes) -> PayloadFields | None:
        """The fields of a decoded payload, or None when it is not a swaplab payload (wrong tag)."""
        if len(payload) != PAYLOAD_BYTES or payload[0] != PAYLOAD_TAG:
            return None
        return cls(model_hash=payload[2:5], content_hash=payload[5:7], version=payload[1])

    def matches_model(self, model: bytes | str) -> bool:
        """Whether ``model`` (card or id) hashes to this payload's model hash."""
        return bytes.fromhex(sha256_hex(model))[:_MODEL_HASH_BYTES] == self.model_hash

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "model_hash": self.model_hash.hex(),
            "content_hash": self.content_hash.hex(),
        }


# ------------------------------------------------------------------ the metadata record


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Provenance:
    """The metadata record of one output; ``to_dict`` is the JSON written into files.

    ``model_sha256`` hashes ``create``'s ``model_card`` when one is given (the swap stage gives the
    weights' sha256, so a model marks alike wherever it was exported), else the model id; the
    watermark payload's model hash is its first 3 bytes, so the two can be checked against each other.
    """

    model_id: str
    model_sha256: str
    content_sha256: str | None = None
    created: str = field(default_factory=_utc_now)
    tool: str = TOOL
    tool_version: str = field(default_factory=tool_version)
    synthetic: bool = True
    digital_source_type: str = DIGITAL_SOURCE_TYPE
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        model_id: str,
        model_card: bytes | str | None = None,
        content: bytes | str | None = None,
        **extra: Any,
    ) -> Provenance:
        """A record for outputs of ``model_id``; ``content`` identifies the job (e.g. the target's sha256)."""
        return cls(
            model_id=model_id,
            model_sha256=sha256_hex(model_card if model_card is not None else model_id),
            content_sha256=None if content is None else sha256_hex(content),
            extra=extra,
        )

    def payload_fields(self) -> PayloadFields:
        content = bytes.fromhex(self.content_sha256) if self.content_sha256 else bytes(32)
        return PayloadFields(bytes.fromhex(self.model_sha256)[:_MODEL_HASH_BYTES], content[:_CONTENT_HASH_BYTES])

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["watermark_payload"] = self.payload_fields().pack().hex()
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=True)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Provenance:
        known = {k: record[k] for k in cls.__dataclass_fields__ if k in record}
        return cls(**known)


# ------------------------------------------------------------------ images: XMP


def xmp_packet(provenance: Provenance) -> str:
    """An XMP packet with the IPTC digital source type, the creator tool and the JSON record."""
    record = html.escape(provenance.to_json(), quote=False)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        f'    xmlns:swaplab="{XMP_NAMESPACE}">\n'
        "   <Iptc4xmpExt:DigitalSourceType>"
        f"{provenance.digital_source_type}</Iptc4xmpExt:DigitalSourceType>\n"
        f"   <xmp:CreatorTool>{provenance.tool} {provenance.tool_version}</xmp:CreatorTool>\n"
        f"   <xmp:CreateDate>{provenance.created}</xmp:CreateDate>\n"
        f"   <swaplab:Provenance>{record}</swaplab:Provenance>\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )


# A regular expression, not an XML parser: the packet may come from any file, and we only want our
# own element's text (no entity expansion, no network, no surprises).
_RECORD_IN_XMP = re.compile(r"<swaplab:Provenance>(.*?)</swaplab:Provenance>", re.DOTALL)


def record_from_xmp(packet: bytes | str) -> dict[str, Any] | None:
    text = packet.decode("utf-8", errors="replace") if isinstance(packet, bytes) else packet
    found = _RECORD_IN_XMP.search(text)
    if not found:
        return None
    try:
        record = json.loads(html.unescape(found.group(1)))
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def image_save_options(path: str | Path, provenance: Provenance) -> dict[str, Any]:
    """Pillow ``Image.save`` keyword arguments that embed ``provenance`` for this file type."""
    suffix = Path(path).suffix.lower()
    packet = xmp_packet(provenance)
    if suffix == ".png":
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", packet)
        return {"format": "PNG", "pnginfo": info}
    if suffix in (".jpg", ".jpeg"):
        return {"format": "JPEG", "xmp": packet.encode("utf-8")}
    raise ValueError(f"cannot write provenance metadata into {suffix!r} images; use one of {IMAGE_SUFFIXES}")


def read_image_metadata(path: str | Path) -> dict[str, Any] | None:
    from PIL import Image

    with Image.open(path) as image:
        packet = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    return record_from_xmp(packet) if packet else None


# ------------------------------------------------------------------ videos: container tags


def video_metadata_tags(provenance: Provenance) -> dict[str, str]:
    """Container tags for a video writer: PyAV ``container.metadata.update(...)``, or ffmpeg's
    ``-metadata key=value`` (see ``ffmpeg_metadata_args``)."""
    return {"comment": provenance.to_json()}


def ffmpeg_metadata_args(provenance: Provenance) -> list[str]:
    args: list[str] = []
    for key, value in video_metadata_tags(provenance).items():
        args += ["-metadata", f"{key}={value}"]
    return args


def write_video_metadata(path: str | Path, provenance: Provenance) -> Path:
    """Tag an existing video in place, atomically: a stream copy (no re-encode, audio kept)."""
    import imageio_ffmpeg

    path = Path(path)
    with atomic_path(path) as tmp:
        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        copy_everything = ["-map", "0", "-c", "copy", "-map_metadata", "0"]
        command = [ffmpeg, "-y", "-v", "error", "-i", str(path), *copy_everything]
        command += [*ffmpeg_metadata_args(provenance), str(tmp)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ffmpeg could not tag {path}: {done.stderr.strip()[-500:]}")
    return path


def read_video_metadata(path: str | Path) -> dict[str, Any] | None:
    import av

    with av.open(str(path)) as container:
        tags = dict(container.metadata)
    for value in tags.values():
        try:
            record = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            continue
        if isinstance(record, dict) and record.get("tool") == TOOL:
            return record
    return None


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """The swaplab provenance record of an image or video file, or None when it has none."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return read_video_metadata(path)
    return read_image_metadata(path)
