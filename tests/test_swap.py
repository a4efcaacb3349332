"""The swap pipeline: paste-back geometry, videos with audio, marks, and bad input."""

from __future__ import annotations

import errno
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from swaplab.cli import main
from swaplab.io.atomic import DiskFullError
from swaplab.io.images import MediaError, read_image
from swaplab.io.video import VideoReader, VideoWriter, probe_video
from swaplab.models.swapper import SwapOutput, Swapper
from swaplab.provenance import verify
from swaplab.swap.pipeline import FaceSwapper, SwapConfig, swap

CLIP = Path("videos") / "hdtf_sadtalker" / "WDA_KatieHill_000.mp4"


class ReturnsItsInput(Swapper):
    """A stand-in model behind the swapper contract whose swap is the identity: pasting back must
    reproduce the frame."""

    def __init__(self, card: dict) -> None:
        super().__init__(torch.nn.Identity(), card)

    def swap(self, targets: torch.Tensor, source=None, generator=None) -> SwapOutput:
        return SwapOutput(targets, torch.ones_like(targets[:, :1]))


def _short_clip(shared_data: Path, tmp_path: Path, frames: int, with_audio: bool = True) -> Path:
    """The first ``frames`` frames of the HDTF clip (with its audio track)."""
    source = shared_data / CLIP
    out = tmp_path / "short.mp4"
    reader = VideoReader(source, stop=frames)
    with VideoWriter(
        out,
        reader.info.fps,
        (reader.info.width, reader.info.height),
        audio_from=source if with_audio else None,
    ) as writer:
        for frame in reader:
            writer.write(frame.image, frame.time)
    return out


def test_identity_model_reproduces_the_frame(pair_model: Path, shared_data: Path) -> None:
    cfg = SwapConfig(colour="none", mask="hull", blend="alpha", mask_blur=0, smoothing="none")
    swapper = FaceSwapper(pair_model, cfg)
    swapper.model = ReturnsItsInput(swapper.card)
    frame = next(iter(VideoReader(shared_data / CLIP, stop=1))).image
    faces = swapper.analyzer.analyze(frame)
    assert len(faces) == 1
    out, count = swapper.swap_frame(frame, faces)
    assert count == 1 and out.shape == frame.shape
    diff = np.abs(out.astype(int) - frame.astype(int)).max(axis=2)
    changed = diff > 0
    # Outside the face's footprint nothing moves; inside, only resampling error remains (a crop
    # at model resolution warped back up to the frame: low-pass, not misplaced).
    x0, y0, x1, y1 = faces[0].box.x0, faces[0].box.y0, faces[0].box.x1, faces[0].box.y1
    pad = 0.8 * (x1 - x0)
    ys, xs = np.nonzero(changed)
    assert xs.min() >= x0 - pad and xs.max() <= x1 + pad and ys.min() >= y0 - 1.2 * pad and ys.max() <= y1 + pad
    assert diff[changed].mean() < 12
    # A misplaced paste (shifted by even 3 px) would leave a far larger error than resampling.
    shifted = np.roll(frame, 3, axis=1)
    assert (
        np.abs(out.astype(int) - frame.astype(int)).mean()
        < 0.5 * np.abs(shifted.astype(int) - frame.astype(int)).mean()
    )


def test_video_swap_keeps_frames_audio_and_is_marked(pair_model: Path, shared_data: Path, tmp_path: Path) -> None:
    clip = _short_clip(shared_data, tmp_path, 30)
    out = tmp_path / "swapped.mp4"
    report = swap(pair_model, clip, out, SwapConfig(), progress=False)
    assert report.frames == 30 and report.frames_swapped == 30
    source_info, out_info = probe_video(clip), probe_video(out)
    assert (out_info.width, out_info.height) == (source_info.width, source_info.height)
    assert out_info.fps == pytest.approx(source_info.fps)
    assert len(list(VideoReader(out))) == 30
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        sa, sb = a.streams.audio[0], b.streams.audio[0]
        assert float(sb.duration * sb.time_base) == pytest.approx(float(sa.duration * sa.time_base), abs=0.05)
    check = verify(out)
    assert check.synthetic and check.payload is not None and check.consistent
    assert set(report.stage_seconds) >= {"decode", "detect", "model", "blend", "encode"}
    assert (tmp_path / "swapped.mp4.swaplab.json").is_file()


def test_frames_without_a_face_pass_through(pair_model: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    clip = tmp_path / "noface.mp4"
    frames = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(5)]
    with VideoWriter(clip, 10, (128, 96), crf=0) as writer:
        for f in frames:
            writer.write(f)
    report = swap(pair_model, clip, tmp_path / "out.mp4", SwapConfig(mark=False), progress=False)
    assert report.frames == 5 and report.frames_without_face == 5 and report.faces_swapped == 0
    assert not probe_video(tmp_path / "out.mp4").has_audio
    assert "not marked" in "\n".join(report.lines())


def test_the_same_weights_under_another_card_mark_and_swap_identically(pair_model: Path, lfw: Path, tmp_path: Path):
    """The mark's model hash is the weights': the evaluator exports a run afresh each time, and a
    card's paths or a field a newer swaplab adds must not change the swapped pixels."""
    import json
    import shutil

    copy = tmp_path / "moved"
    shutil.copytree(pair_model, copy)
    card = json.loads((copy / "model.json").read_text())
    card["trained_from"]["run_dir"] = "/elsewhere/run"
    (copy / "model.json").write_text(json.dumps(card))
    photo = sorted((lfw / "Colin_Powell").glob("*.jpg"))[0]
    swapped = []
    for model in (pair_model, copy):
        swapper = FaceSwapper(model, SwapConfig())
        assert (
            swapper.provenance("job").model_sha256
            == FaceSwapper(pair_model, SwapConfig()).provenance("job").model_sha256
        )
        swap(model, photo, tmp_path / f"{model.name}.png", SwapConfig(), progress=False)
        swapped.append(read_image(tmp_path / f"{model.name}.png")[0])
    assert np.array_equal(*swapped)


def test_photo_swap_and_existing_output(pair_model: Path, lfw: Path, tmp_path: Path, capsys) -> None:
    photo = sorted((lfw / "Colin_Powell").glob("*.jpg"))[30]
    out = tmp_path / "swap.png"
    report = swap(pair_model, photo, out, SwapConfig(), progress=False)
    assert report.faces_swapped == 1
    image, _ = read_image(out)
    assert image.shape == read_image(photo)[0].shape
    assert verify(out).synthetic
    with pytest.raises(FileExistsError, match="overwrite"):
        swap(pair_model, photo, out, SwapConfig(), progress=False)
    assert main(["swap", str(pair_model), str(photo), "-o", str(out), "-q", "--overwrite", "colour=lct"]) == 0
    assert main(["swap", str(pair_model), str(photo), "-o", str(out), "-q", "blend=smudge"]) == 2
    assert "unknown blender 'smudge'" in capsys.readouterr().err
    assert main(["verify", str(out)]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert main(["verify", str(photo)]) == 3
    # a photo without a face is written as it was, and not marked: marking it would be false provenance
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(noise)
    report = swap(pair_model, noise, tmp_path / "noise-out.png", SwapConfig(), progress=False)
    assert report.faces_swapped == 0 and report.unchanged == [str(tmp_path / "noise-out.png")]
    assert np.array_equal(read_image(tmp_path / "noise-out.png")[0], read_image(noise)[0])
    assert not verify(tmp_path / "noise-out.png").synthetic and "no face: unchanged" in "\n".join(report.lines())
    # a wrong output name is refused before the model loads
    with pytest.raises(ValueError, match="write photos as .png or .jpg, not swap.mp4"):
        swap(tmp_path / "no-model-here", photo, tmp_path / "swap.mp4", SwapConfig(), progress=False)


def test_folder_swap_reports_bad_files(pair_model: Path, lfw: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for src in sorted((lfw / "Colin_Powell").glob("*.jpg"))[40:42]:
        (folder / src.name).write_bytes(src.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    report = swap(pair_model, folder, tmp_path / "out", SwapConfig(which="largest"), progress=False)
    assert len(report.outputs) == 2 and report.faces_swapped == 2
    assert any("broken.jpg" in p for p in report.problems)


def test_truncated_video_swaps_what_decodes(pair_model: Path, shared_data: Path, tmp_path: Path) -> None:
    clip = _short_clip(shared_data, tmp_path, 40)
    # Matroska keeps its header at the front, so a file cut short still opens: a download or a
    # copy that stopped half-way.
    broken = tmp_path / "broken.mkv"
    with av.open(str(clip)) as src, av.open(str(broken), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            dst.mux(packet)
    cut = broken.read_bytes()
    broken.write_bytes(cut[: int(len(cut) * 0.6)])
    report = swap(pair_model, broken, tmp_path / "out.mp4", SwapConfig(), progress=False)
    assert 0 < report.frames < 40 and report.frames_swapped == report.frames
    assert len(list(VideoReader(tmp_path / "out.mp4"))) == report.frames


def test_swap_reuses_a_facesets_landmarks(pair_model: Path, shared_data: Path, tmp_path: Path) -> None:
    from swaplab.facesets.extract import ExtractConfig, extract

    clip = _short_clip(shared_data, tmp_path, 12)
    extract(clip, tmp_path / "faces", ExtractConfig(size=64, every=2), progress=False)
    cfg = SwapConfig(faceset=str(tmp_path / "faces"))
    report = swap(pair_model, clip, tmp_path / "out.mp4", cfg, progress=False)
    # Only the frames the faceset holds are swapped; the others pass through unchanged.
    assert report.frames == 12 and report.frames_swapped == 6 and report.frames_without_face == 6
    other = _short_clip(shared_data, tmp_path / "x", 3) if (tmp_path / "x").mkdir() is None else None
    with pytest.raises(ValueError, match="no faces extracted from"):
        swap(pair_model, other, tmp_path / "o2.mp4", cfg, progress=False)


def test_preview_strip(pair_model: Path, shared_data: Path, tmp_path: Path) -> None:
    cfg = SwapConfig(preview=3, preview_every=2)
    report = swap(pair_model, shared_data / CLIP, tmp_path / "clip.mp4", cfg, progress=False)
    strip = Path(report.output)
    assert strip.name == "clip.preview.png"
    with Image.open(strip) as img:
        assert img.size == (512, 3 * 256)  # three rows of target | swap at 256 px high
    assert verify(strip).synthetic


def test_full_disk_leaves_no_output(pair_model: Path, shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    clip = _short_clip(shared_data, tmp_path, 10)
    real_write = VideoWriter.write
    calls = {"n": 0}

    def fills_up(self, image, time=None):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, image, time)

    monkeypatch.setattr(VideoWriter, "write", fills_up)
    out = tmp_path / "full.mp4"
    with pytest.raises(DiskFullError, match="disk full"):
        swap(pair_model, clip, out, SwapConfig(), progress=False)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".full")]


def test_model_that_does_not_fit(tmp_path: Path, pair_model: Path, lfw: Path) -> None:
    (tmp_path / "model.json").write_text('{"format": "something-else"}')
    photo = sorted((lfw / "Colin_Powell").glob("*.jpg"))[0]
    with pytest.raises(ValueError, match="not a swaplab model card"):
        swap(tmp_path, photo, tmp_path / "o.png", SwapConfig(), progress=False)
    with pytest.raises(MediaError, match="no such file"):
        swap(pair_model, tmp_path / "missing.mp4", tmp_path / "o.mp4", SwapConfig(), progress=False)


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's main command, with a 20-second training budget and 25 swapped frames, and with
    ``--restore`` (a test-sized restorer stands in for the built one)."""
    import json

    from swaplab.demo import DemoConfig, run_demo
    from swaplab.train.built_networks import build_network

    monkeypatch.setenv("SWAPLAB_CACHE", str(tmp_path / "cache"))  # the session's cache stays without a restorer
    monkeypatch.setenv("SWAPLAB_FACE_RESTORER", str(build_network("face-restorer", "test", progress=False)))
    paths = run_demo(
        DemoConfig(data=shared_data, output=tmp_path / "demo", train_minutes=1 / 3, swap_frames=25, restore=True),
        progress=False,
    )
    assert probe_video(paths["video"]).has_audio
    assert len(list(VideoReader(paths["video"]))) == 25
    assert verify(paths["video"]).synthetic and verify(paths["side_by_side"]).synthetic
    assert "swaplab demo" in Path(paths["summary"]).read_text()
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["facts"]["face restorer"] == "on" and "restorer" in summary["seconds"]
    assert "final_stretch: 0.2" in (tmp_path / "demo" / "run" / "config.yaml").read_text()


def _decoded(path: Path) -> list[np.ndarray]:
    return [frame.image for frame in VideoReader(path)]


def test_overlapped_pipeline_gives_the_sequential_frames(pair_model: Path, shared_data: Path, tmp_path: Path) -> None:
    clip = _short_clip(shared_data, tmp_path, 20)
    # Unmarked, so both files' pixels depend only on the swap (the mark's payload holds the time).
    options = {"mark": False, "batch_frames": 3}
    sequential, overlapped = tmp_path / "seq.mp4", tmp_path / "ovl.mp4"
    swap(pair_model, clip, sequential, SwapConfig(overlap=False, **options), progress=False)
    report = swap(pair_model, clip, overlapped, SwapConfig(overlap=True, **options), progress=False)
    assert report.frames == 20 and report.frames_swapped == 20
    a, b = _decoded(sequential), _decoded(overlapped)
    assert len(a) == len(b) == 20
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert [f.time for f in VideoReader(sequential)] == [f.time for f in VideoReader(overlapped)]
    with av.open(str(sequential)) as sa, av.open(str(overlapped)) as sb:
        audio_a = [bytes(p) for p in sa.demux(sa.streams.audio[0])]
        audio_b = [bytes(p) for p in sb.demux(sb.streams.audio[0])]
    assert audio_a == audio_b and audio_a


def test_overlapped_pipeline_stops_cleanly_when_the_model_raises(
    pair_model: Path, shared_data: Path, tmp_path: Path, monkeypatch
) -> None:
    import threading

    clip = _short_clip(shared_data, tmp_path, 40)
    real_render = FaceSwapper.render
    calls = {"n": 0}

    def fails_on_the_third_batch(self, faces):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("model failed mid-video")
        return real_render(self, faces)

    monkeypatch.setattr(FaceSwapper, "render", fails_on_the_third_batch)
    out = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError, match="model failed mid-video"):
        swap(pair_model, clip, out, SwapConfig(batch_frames=4), progress=False)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".broken")]  # no temporary, no lock
    assert not [t for t in threading.enumerate() if t.name.startswith("swaplab-")]
