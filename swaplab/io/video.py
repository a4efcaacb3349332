"""Decoding videos frame by frame (PyAV), tolerant of damage.

``VideoReader`` yields RGB uint8 frames with their index and presentation time. A corrupt or
truncated file yields every frame that decodes and records what did not in ``problems``, rather
than raising half-way through a long extraction. Variable frame rate is detected and reported,
because a swap must write frames back with the timing they came with.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from swaplab.io.images import MediaError


@dataclass
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float  # the stream's average rate; see ``variable_frame_rate``
    frame_count: int  # from the container header; 0 when it does not say (count by decoding)
    duration: float  # seconds, 0 when unknown
    codec: str
    has_audio: bool
    time_base: Fraction | None = None


@dataclass
class VideoFrame:
    index: int  # 0-based position in decoding order
    time: float  # presentation time in seconds
    image: np.ndarray  # RGB uint8 HxWx3


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's header; raises ``MediaError`` when it has no decodable video stream."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "no such file")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.base_rate or stream.guessed_rate
            duration = 0.0
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            return VideoInfo(
                path=str(path),
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                fps=float(rate) if rate else 0.0,
                frame_count=int(stream.frames or 0),
                duration=duration,
                codec=stream.codec_context.name,
                has_audio=bool(container.streams.audio),
                time_base=stream.time_base,
            )
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise MediaError(path, f"cannot open as video: {err}") from None


@dataclass
class VideoReader:
    """Iterate over a video's frames: ``for frame in VideoReader(path): ...``.

    ``every`` keeps every Nth frame (indices still count all frames), ``start``/``stop`` bound
    the frame range. After iteration, ``decoded`` counts frames decoded, ``problems`` lists what
    went wrong (corrupt packets, early end), and ``variable_frame_rate`` says whether frame
    intervals varied by more than 10 %.
    """

    path: str | Path
    every: int = 1
    start: int = 0
    stop: int | None = None
    threads: int = 2
    info: VideoInfo = field(init=False)
    decoded: int = field(init=False, default=0)
    problems: list[str] = field(init=False, default_factory=list)
    variable_frame_rate: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError("every must be >= 1")
        self.info = probe_video(self.path)

    def __iter__(self) -> Iterator[VideoFrame]:
        self.decoded = 0
        self.problems = []
        intervals: list[float] = []
        last_time: float | None = None
        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as err:
            raise MediaError(self.path, f"cannot open as video: {err}") from None
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = self.threads
            index = -1
            # Packets held in the file, and those of them meant to be shown: an edit list can mark
            # packets as discarded (ffmpeg drops them too), so the header's count is not a promise.
            packets = shown_packets = 0
            try:
                for packet in container.demux(stream):
                    if packet.size:
                        packets += 1
                        shown_packets += not packet.is_discard
                    try:
                        frames = packet.decode()
                    except av.error.InvalidDataError as err:
                        self.problems.append(f"corrupt packet near frame {index + 1}: {err}")
                        continue
                    for frame in frames:
                        index += 1
                        time = float(frame.time) if frame.time is not None else index / (self.info.fps or 25)
                        if last_time is not None:
                            intervals.append(time - last_time)
                        last_time = time
                        self.decoded += 1
                        if self.stop is not None and index >= self.stop:
                            return
                        if index < self.start or (index - self.start) % self.every:
                            continue
                        yield VideoFrame(index, time, frame.to_ndarray(format="rgb24"))
            except av.error.FFmpegError as err:
                self.problems.append(f"decoding stopped after {self.decoded} frames: {err}")
            finally:
                self._check_timing(intervals)
        if self.stop is not None:
            return
        if self.info.frame_count and packets < self.info.frame_count:
            self.problems.append(
                f"the file holds {packets} of the {self.info.frame_count} frames its header announces (truncated file)"
            )
        elif self.decoded < shown_packets:
            self.problems.append(f"decoded {self.decoded} of {shown_packets} frames (damaged file)")

    def _check_timing(self, intervals: list[float]) -> None:
        if len(intervals) < 3:
            return
        arr = np.asarray(intervals)
        median = float(np.median(arr))
        if median > 0 and float(np.mean(np.abs(arr - median) > 0.1 * median)) > 0.02:
            self.variable_frame_rate = True


class VideoWriter:
    """Encode RGB frames to a video that keeps the source's timing and audio.

    Frames are encoded (H.264 by default) into a temporary file; ``close()`` then remuxes that
    stream together with the audio copied from ``audio_from`` (transcoded to AAC only when the
    container cannot hold the original codec) and renames the result into place. A crash or a
    full disk therefore never leaves a half-written file at ``path``.

    Pass each frame's presentation ``time`` to keep variable frame rates; without it frames are
    spaced at ``fps``.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        size: tuple[int, int],
        *,
        crf: int = 18,
        codec: str = "libx264",
        preset: str = "veryfast",
        audio_from: str | Path | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        import tempfile

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = size
        if self.width % 2 or self.height % 2:
            raise ValueError(f"H.264 needs even frame sizes, got {self.width}x{self.height}")
        self.audio_from = Path(audio_from) if audio_from else None
        self.metadata = metadata or {}
        self.frames = 0
        self._rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self._time_base = Fraction(1, 90000)
        # The temporary file uses the final container so the remux copies timestamps exactly
        # (a detour through Matroska rounds them to milliseconds and breaks B-frame order).
        from swaplab.io.atomic import temporary_prefix

        fd, tmp = tempfile.mkstemp(
            prefix=temporary_prefix(self.path, "video"), suffix=self.path.suffix, dir=self.path.parent
        )
        import os

        os.close(fd)
        self._video_tmp = Path(tmp)
        self._container = av.open(str(self._video_tmp), "w")
        self._stream = self._container.add_stream(codec, rate=self._rate)
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = self._time_base
        self._stream.codec_context.time_base = self._time_base
        self._stream.options = {"crf": str(crf), "preset": preset} if codec == "libx264" else {}
        self._last_pts = -1

    def write(self, image: np.ndarray, time: float | None = None) -> None:
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {image.shape[1]}x{image.shape[0]}, writer is {self.width}x{self.height}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        seconds = time if time is not None else self.frames / float(self._rate)
        pts = max(int(round(seconds / self._time_base)), self._last_pts + 1)
        frame.pts, frame.time_base = pts, self._time_base
        self._last_pts = pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Flush, add the audio, and move the finished file into place."""
        from swaplab.io.atomic import atomic_path

        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            with atomic_path(self.path) as final:
                _remux_with_audio(self._video_tmp, self.audio_from, final, self.metadata)
        finally:
            self._video_tmp.unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far (the target path is left untouched)."""
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - closing a broken encoder must not mask the real error
            pass
        self._video_tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _remux_with_audio(video: Path, audio_source: Path | None, out: Path, metadata: dict[str, str]) -> None:
    """Copy the encoded video stream and the source's audio into ``out`` (format by suffix)."""
    fmt = {".mkv": "matroska", ".mov": "mov", ".mp4": "mp4", ".m4v": "mp4", ".avi": "avi"}.get(out.suffix.lower(), None)
    with av.open(str(video)) as vin, av.open(str(out), "w", format=fmt) as cout:
        for key, value in metadata.items():
            cout.metadata[key] = value
        vstream_in = vin.streams.video[0]
        vstream_out = cout.add_stream_from_template(vstream_in)
        ain = av.open(str(audio_source)) if audio_source else None
        try:
            astream_in = ain.streams.audio[0] if ain is not None and ain.streams.audio else None
            astream_out, transcode = None, None
            if astream_in is not None:
                try:
                    astream_out = cout.add_stream_from_template(astream_in)
                    if not _container_accepts(fmt, astream_in.codec_context.name):
                        raise ValueError("codec not allowed in this container")
                except ValueError:
                    astream_out = cout.add_stream("aac", rate=astream_in.codec_context.sample_rate)
                    transcode = True
            for packet in vin.demux(vstream_in):
                if packet.dts is None:
                    continue
                packet.stream = vstream_out
                cout.mux(packet)
            if astream_in is not None and astream_out is not None:
                if transcode:
                    for frame in ain.decode(astream_in):
                        frame.pts = None
                        for packet in astream_out.encode(frame):
                            cout.mux(packet)
                    for packet in astream_out.encode():
                        cout.mux(packet)
                else:
                    for packet in ain.demux(astream_in):
                        if packet.dts is None:
                            continue
                        packet.stream = astream_out
                        cout.mux(packet)
        finally:
            if ain is not None:
                ain.close()


def _container_accepts(fmt: str | None, codec: str) -> bool:
    if fmt in ("mp4", "mov"):
        return codec in ("aac", "mp3", "alac", "ac3", "opus", "flac")
    return True
