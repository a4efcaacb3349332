"""Provenance: the watermark survives JPEG 75, half-size resizing and H.264 CRF 28, stays invisible
(PSNR >= 38 dB), never fires on real unmarked photos, and the metadata round-trips in PNG, JPEG and MP4."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from swaplab.provenance import (
    PayloadFields,
    Provenance,
    mark_image,
    read_metadata,
    verify,
    video_metadata_tags,
    write_marked_image,
    write_video_metadata,
)
from swaplab.provenance.metadata import DIGITAL_SOURCE_TYPE, PAYLOAD_TAG
from swaplab.provenance.watermark import (
    CONFIDENCE_MIN,
    MIN_SIDE,
    PAYLOAD_BYTES,
    WatermarkError,
    crc16,
    embed,
    extract,
)

PAYLOAD = PayloadFields.from_ids("model card: liae-ud bush->powell", "target.mp4 sha256").pack()
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


# ------------------------------------------------------------------ inputs and attacks


def _load(path: Path, max_side: int = 1024) -> np.ndarray:
    """RGB uint8, downscaled (area) so that the longer side is at most ``max_side``."""
    with Image.open(path) as image:
        image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale, much faster
        pixels = np.asarray(image.convert("RGB"))
    scale = max_side / max(pixels.shape[:2])
    if scale < 1:
        size = (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return pixels


def _jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _half(image: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=interpolation)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(255.0**2 / mse)


def _encode_h264(frames: list[np.ndarray], path: Path, crf: int, metadata: dict[str, str] | None = None) -> None:
    with av.open(str(path), "w") as container:
        if metadata:
            container.metadata.update(metadata)
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> list[Path]:
    found = sorted(p for p in (shared_data / "photos").rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    assert len(found) > 50
    return found


@pytest.fixture(scope="module")
def sample_images(photos: list[Path], lfw: Path) -> list[np.ndarray]:
    """Eight real photos (portraits, groups, up to 1024 px) and two 250 px LFW faces."""
    faces = [lfw / "George_W_Bush" / "George_W_Bush_0010.jpg", lfw / "Colin_Powell" / "Colin_Powell_0010.jpg"]
    return [_load(p) for p in photos[:: len(photos) // 8][:8]] + [_load(p) for p in faces]


@pytest.fixture(scope="module")
def video_frames(shared_data: Path) -> list[np.ndarray]:
    """Twelve 512x512 frames of a real talking-head clip."""
    path = shared_data / "videos" / "hdtf_sadtalker" / "WDA_KatieHill_000.mp4"
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(12), container.decode(video=0))]
    assert frames[0].shape == (512, 512, 3)
    return frames


# ------------------------------------------------------------------ payload


def test_payload_fields_round_trip_and_tag() -> None:
    fields = PayloadFields.from_ids("card", "content")
    packed = fields.pack()
    assert len(packed) == PAYLOAD_BYTES and packed[0] == PAYLOAD_TAG
    assert PayloadFields.unpack(packed) == fields
    assert PayloadFields.unpack(bytes([PAYLOAD_TAG ^ 1]) + packed[1:]) is None
    assert fields.matches_model("card") and not fields.matches_model("another card")
    assert crc16(b"123456789") == 0x29B1  # the CRC-16/CCITT-FALSE check value


# ------------------------------------------------------------------ watermark: robustness and invisibility


def test_invisible_and_read_back_on_real_images(sample_images: list[np.ndarray]) -> None:
    psnrs = []
    for image in sample_images:
        marked = embed(image, PAYLOAD)
        assert marked.shape == image.shape and marked.dtype == np.uint8
        psnrs.append(_psnr(marked, image))
        reading = extract(marked)
        assert reading.present and reading.payload == PAYLOAD and reading.confidence > 0.8
    assert min(psnrs) >= 38.0, psnrs  # measured 40.1-40.7 dB


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(_jpeg, id="jpeg75"),
        pytest.param(_half, id="half-area"),
        pytest.param(lambda x: _half(x, cv2.INTER_LINEAR), id="half-linear"),
        pytest.param(lambda x: _jpeg(_half(x), 75), id="half-then-jpeg75"),
    ],
)
def test_survives_attack(attack: Callable[[np.ndarray], np.ndarray], sample_images: list[np.ndarray]) -> None:
    for image in sample_images:
        reading = extract(attack(embed(image, PAYLOAD)))
        assert reading.present and reading.payload == PAYLOAD, (image.shape, reading.confidence)


def test_survives_h264_crf28(video_frames: list[np.ndarray], tmp_path: Path) -> None:
    # The pipeline's own output (CRF 18), then someone re-encodes it at CRF 28.
    first, second = tmp_path / "marked.mp4", tmp_path / "reencoded.mp4"
    _encode_h264([embed(f, PAYLOAD) for f in video_frames], first, crf=18)
    _encode_h264(_decode(first), second, crf=28)
    readings = [extract(frame) for frame in _decode(second)]
    assert len(readings) == len(video_frames)
    assert all(r.present and r.payload == PAYLOAD for r in readings), [round(r.confidence, 2) for r in readings]
    assert not any(extract(frame).present for frame in video_frames)  # the unmarked originals


def test_decodes_at_another_size_and_aspect(sample_images: list[np.ndarray]) -> None:
    image = cv2.resize(sample_images[0], (1280, 720), interpolation=cv2.INTER_AREA)
    marked = embed(image, PAYLOAD)
    for size in [(640, 360), (960, 540), (1920, 1080)]:
        assert extract(cv2.resize(marked, size, interpolation=cv2.INTER_AREA)).payload == PAYLOAD


# ------------------------------------------------------------------ watermark: no false positives


def test_no_false_positive_on_any_real_photo(photos: list[Path], lfw: Path) -> None:
    rng = np.random.default_rng(0)
    people = sorted(p for p in lfw.iterdir() if p.is_dir())
    faces = [sorted(people[i].glob("*.jpg"))[0] for i in rng.choice(len(people), 100, replace=False)]
    confidences = []
    for path in photos + faces:
        image = _load(path)
        for candidate in (image, _half(image)):
            reading = extract(candidate)
            assert not reading.present, path
            confidences.append(reading.confidence)
    # Unmarked votes are coin flips: measured 0.134 +- 0.012, far below the threshold.
    assert max(confidences) < CONFIDENCE_MIN - 0.1


def test_flat_and_synthetic_images_are_not_marked() -> None:
    ramp = np.repeat(np.linspace(0, 255, 300)[None, :, None], 200, 0).repeat(3, 2).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (200, 300, 3)).astype(np.uint8)
    for value in (0, 128, 255):
        assert not extract(np.full((200, 300, 3), value, np.uint8)).present
    assert not extract(ramp).present and not extract(noise).present
    assert extract(embed(ramp, PAYLOAD)).payload == PAYLOAD


# ------------------------------------------------------------------ watermark: small images


def test_small_images(lfw: Path) -> None:
    face = _load(lfw / "Colin_Powell" / "Colin_Powell_0001.jpg")
    for side in (MIN_SIDE, 96, 128):
        small = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        marked = embed(small, PAYLOAD)
        assert extract(marked).payload == PAYLOAD and extract(_jpeg(marked)).payload == PAYLOAD
    tiny = cv2.resize(face, (MIN_SIDE - 1, 80), interpolation=cv2.INTER_AREA)
    with pytest.raises(WatermarkError, match="too small to watermark"):
        embed(tiny, PAYLOAD)
    assert not extract(tiny).present and extract(tiny).confidence == 0.0


def test_bad_arguments_are_named() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(WatermarkError, match="must be 7 bytes"):
        embed(image, b"short")
    with pytest.raises(WatermarkError, match="RGB uint8"):
        embed(image.astype(np.float32), PAYLOAD)
    with pytest.raises(WatermarkError, match="RGB uint8"):
        extract(image[..., 0])


# ------------------------------------------------------------------ metadata and verify


@pytest.fixture()
def provenance() -> Provenance:
    return Provenance.create("liae-ud-bush-powell", model_card="model card text", content=b"target", run="r1")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_marked_image_file_round_trip(
    suffix: str, provenance: Provenance, sample_images: list[np.ndarray], tmp_path: Path
) -> None:
    path = write_marked_image(tmp_path / f"out{suffix}", sample_images[0], provenance)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    record = read_metadata(path)
    assert record == provenance.to_dict()
    assert record["digital_source_type"] == DIGITAL_SOURCE_TYPE and record["synthetic"] is True
    report = verify(path)
    assert report.kind == "image" and report.synthetic and report.consistent is True
    assert report.watermark.present and report.payload == provenance.payload_fields()
    assert report.metadata == record and report.to_dict()["payload"]["model_hash"] == record["model_sha256"][:6]
    with Image.open(path) as image:
        packet = image.info["xmp"]
    assert b"Iptc4xmpExt:DigitalSourceType" in packet and b"trainedAlgorithmicMedia" in packet


def test_unmarked_photo_verifies_as_not_synthetic(photos: list[Path]) -> None:
    report = verify(photos[0])
    assert not report.synthetic and report.payload is None and report.metadata is None
    assert report.consistent is None and not report.watermark.present


def test_write_marked_image_refuses_unknown_formats(
    provenance: Provenance, sample_images: list[np.ndarray], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="cannot write provenance metadata into '.bmp'"):
        write_marked_image(tmp_path / "out.bmp", sample_images[0], provenance)
    assert list(tmp_path.iterdir()) == []


def test_video_written_with_tags_verifies(
    provenance: Provenance, video_frames: list[np.ndarray], tmp_path: Path
) -> None:
    path = tmp_path / "swap.mp4"
    _encode_h264([mark_image(f, provenance) for f in video_frames], path, 28, video_metadata_tags(provenance))
    assert read_metadata(path) == provenance.to_dict()
    report = verify(path, frames=4)
    assert report.kind == "video" and report.frames_checked == 4 and report.frames_marked == 4
    assert report.watermark.present and report.payload == provenance.payload_fields() and report.consistent


def test_tagging_an_existing_video_keeps_its_audio(provenance: Provenance, shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "videos" / "hdtf_sadtalker" / "WDA_KatieHill_000.mp4"
    clip = tmp_path / "clip.mp4"
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-v",
        "error",
        "-i",
        str(source),
        "-t",
        "1",
        "-c",
        "copy",
        str(clip),
    ]
    subprocess.run(command, check=True)
    assert read_metadata(clip) is None
    write_video_metadata(clip, provenance)
    assert read_metadata(clip) == provenance.to_dict()
    with av.open(str(clip)) as container:
        assert len(container.streams.audio) == 1 and len(container.streams.video) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    report = verify(clip, frames=3)
    assert report.synthetic and report.payload is None and report.frames_marked == 0  # tagged, not marked
