"""Video decoding and encoding: timing, audio, damaged files."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from swaplab.io.images import MediaError
from swaplab.io.video import VideoReader, VideoWriter, probe_video

CLIP = Path("videos") / "hdtf_sadtalker" / "WDA_KatieHill_000.mp4"


def _audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


def test_rewrite_keeps_frames_timing_and_audio(tmp_path: Path, shared_data: Path) -> None:
    source = shared_data / CLIP
    reader = VideoReader(source, stop=50)
    out = tmp_path / "copy.mp4"
    with VideoWriter(
        out,
        reader.info.fps,
        (reader.info.width, reader.info.height),
        audio_from=source,
        metadata={"comment": "swaplab test"},
    ) as writer:
        frames = []
        for frame in reader:
            writer.write(frame.image, frame.time)
            frames.append(frame.image)
    info = probe_video(out)
    assert info.has_audio and info.fps == pytest.approx(25.0) and (info.width, info.height) == (512, 512)
    decoded = list(VideoReader(out))
    assert len(decoded) == 50
    assert [round(f.time, 3) for f in decoded[:3]] == [0.0, 0.04, 0.08]
    # H.264 at CRF 18 is close to the source.
    err = np.abs(decoded[10].image.astype(int) - frames[10].astype(int)).mean()
    assert err < 3.0
    # The whole audio track is carried over (the video was cut; the audio is not).
    assert _audio_seconds(out) == pytest.approx(_audio_seconds(source), abs=0.05)
    with av.open(str(out)) as container:
        assert container.metadata.get("comment") == "swaplab test"


def test_variable_frame_times_are_kept(tmp_path: Path) -> None:
    times = [0.0, 0.04, 0.08, 0.2, 0.24, 0.5, 0.54, 0.58]
    out = tmp_path / "vfr.mp4"
    with VideoWriter(out, 25, (64, 48)) as writer:
        for i, t in enumerate(times):
            writer.write(np.full((48, 64, 3), i * 30, np.uint8), t)
    reader = VideoReader(out)
    got = [round(f.time, 3) for f in reader]
    assert got == times
    assert reader.variable_frame_rate


def test_truncated_video_yields_what_decodes(tmp_path: Path, shared_data: Path) -> None:
    data = (shared_data / CLIP).read_bytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(data[: len(data) // 2])
    try:
        reader = VideoReader(broken)
    except MediaError as err:  # the index (moov) may be at the end: then nothing is decodable
        assert "cannot open" in err.reason
        return
    frames = list(reader)
    assert 0 < len(frames) < 200
    assert reader.problems


def test_unusable_videos_raise_media_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        probe_video(empty)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(MediaError):
        probe_video(junk)


def test_writer_abort_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "never.mp4"
    with pytest.raises(RuntimeError), VideoWriter(out, 25, (32, 32)) as writer:
        writer.write(np.zeros((32, 32, 3), np.uint8))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_video_without_audio(tmp_path: Path) -> None:
    silent = tmp_path / "silent.mp4"
    with VideoWriter(silent, 10, (32, 32)) as writer:
        for i in range(5):
            writer.write(np.full((32, 32, 3), i * 40, np.uint8))
    again = tmp_path / "again.mp4"
    with VideoWriter(again, 10, (32, 32), audio_from=silent) as writer:
        for frame in VideoReader(silent):
            writer.write(frame.image, frame.time)
    info = probe_video(again)
    assert not info.has_audio and len(list(VideoReader(again))) == 5
