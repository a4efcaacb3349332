"""Disk space, leftovers of killed writers, and honest exit codes and warnings."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from swaplab.cli import main
from swaplab.io.atomic import (
    DiskFullError,
    atomic_write_text,
    ensure_free_space,
    remove_stale_temporaries,
    temporary_prefix,
)
from swaplab.io.images import write_image
from swaplab.io.video import VideoReader
from swaplab.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
#: A tiny per-pair model: checkpoints of about 9 MiB, a few seconds per run.
TINY_PAIR = ["model=df-cpu", "model.ae_dims=32", "model.e_dims=8", "model.d_dims=8", "model.d_mask_dims=4"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    dead = _dead_pid()
    stale = tmp_path / f".clip.video-{dead}-abc123.mp4"
    stale_dir = tmp_path / f".model.export-{dead}-x1y2"
    live = tmp_path / f"{temporary_prefix(tmp_path / 'out.png', 'partial')}zz9.png"
    stale.write_bytes(b"half a video")
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"half")
    live.write_bytes(b"being written by this process")
    user_file = tmp_path / ".notes.partial-draft.txt"  # not our pattern: never touched
    user_file.write_text("mine")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale, stale_dir])
    assert live.exists() and user_file.exists() and not stale.exists() and not stale_dir.exists()


def test_atomic_writes_name_temporaries_by_process(tmp_path: Path) -> None:
    seen = []
    target = tmp_path / "report.txt"
    from swaplab.io.atomic import atomic_path

    with atomic_path(target) as tmp:
        seen.append(tmp.name)
        tmp.write_text("x")
    assert seen[0].startswith(f".report.partial-{os.getpid()}-") and seen[0].endswith(".txt")
    atomic_write_text(target, "y")
    assert [p.name for p in tmp_path.iterdir()] == ["report.txt"]


def test_free_space_check_names_the_sizes(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    ensure_free_space(tmp_path / "not" / "yet", 1024, "a small file")  # a missing folder: its disk is asked
    with pytest.raises(DiskFullError) as err:
        ensure_free_space(tmp_path, free + (1 << 40), "checkpoint step 7")
    message = err.value.strerror
    assert "checkpoint step 7" in message and "needs about" in message and "available" in message
    assert "\n" not in message


def test_checkpoint_refused_before_writing_when_space_is_short(tmp_path: Path, monkeypatch, capsys) -> None:
    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.Adam(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    save_checkpoint(tmp_path, 1, model=model, optimizer=optimizer, param_names=names)
    real = shutil.disk_usage(tmp_path)
    # The disk reports 10 KiB free: less than the ~50 KiB this checkpoint needs.
    monkeypatch.setattr(shutil, "disk_usage", lambda _: real._replace(free=10 * 1024))
    with pytest.raises(DiskFullError) as err:
        save_checkpoint(tmp_path, 2, model=model, optimizer=optimizer, param_names=names)
    assert "checkpoint step 2" in err.value.strerror and "10 KiB available" in err.value.strerror
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step-0000001"]


def test_valid_clip_with_an_edit_list_is_not_called_damaged(shared_data: Path) -> None:
    # The container lists 62 frames, one of them cut by its edit list: ffmpeg shows 61, so do we.
    reader = VideoReader(shared_data / "videos/hdtf_vexpress/RD_Radio10_0_clip_0.mp4")
    assert reader.info.frame_count == 62
    assert sum(1 for _ in reader) == 61
    assert reader.problems == []


def test_truncated_clip_is_still_reported(tmp_path: Path, shared_data: Path) -> None:
    import av

    source = shared_data / "videos/liveportrait/driving/d0.mp4"
    # Keep the header (moov) but cut the packets: copy 30 of the 78 frames' packets into a new file
    # whose header still announces 78 by truncating the media data after the remux.
    short = tmp_path / "short.mp4"
    with av.open(str(source)) as cin, av.open(str(short), "w", options={"movflags": "faststart"}) as cout:
        stream_in = cin.streams.video[0]
        stream_out = cout.add_stream_from_template(stream_in)
        for packet in cin.demux(stream_in):
            if packet.dts is None:
                continue
            packet.stream = stream_out
            cout.mux(packet)
    data = short.read_bytes()
    short.write_bytes(data[: int(len(data) * 0.6)])
    reader = VideoReader(short)
    frames = sum(1 for _ in reader)
    assert 0 < frames < 78
    assert any("78 frames its header announces" in p or "damaged" in p for p in reader.problems), reader.problems


def test_extracting_nothing_fails_with_one_line(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["extract", str(empty), "-o", str(tmp_path / "fs1"), "--quiet", "--no-sheet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: no photo or video found in the inputs: the faceset {tmp_path / 'fs1'} is empty; "
        "give photos or videos with visible faces"
    ]
    tiny = tmp_path / "tiny.png"
    write_image(tiny, np.zeros((10, 10, 3), np.uint8))
    for _ in range(2):  # the re-run (everything already done) must not turn it into a success
        assert main(["extract", str(tiny), "-o", str(tmp_path / "fs2"), "--quiet", "--no-sheet"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no usable face in 1 photo(s)" in err[0]


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _cli(args: list[str], limit: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "swaplab.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size(limit) if limit else None,
    )


@pytest.mark.slow
def test_disk_full_during_a_checkpoint(pair_facesets: tuple[Path, Path], tmp_path: Path) -> None:
    """A checkpoint that cannot be written (a 1 MiB file-size limit stands in for a full disk, no root
    here for a tmpfs) stops training with one line; the previous checkpoint survives and a re-run
    resumes from it to the same weights as a run that never failed."""
    src, dst = pair_facesets
    base = [*TINY_PAIR, f"data.src={src}", f"data.dst={dst}", "trainer=test", "trainer.checkpoint_every=2"]
    run = tmp_path / "run"
    assert _cli(["train", *base, "trainer.steps=4", f"run_dir={run}"]).returncode == 0
    failed = _cli(["train", *base, "trainer.steps=6", f"run_dir={run}"], limit=1 << 20)
    assert failed.returncode == 1, failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the disk is full: checkpoint step 6"), failed.stderr
    assert "the previous checkpoint is intact" in lines[0]
    assert [step for step, _ in list_checkpoints(run / "checkpoints")] == [2, 4]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    load_checkpoint(run / "checkpoints" / "step-0000004")  # verifies every hash

    resumed = _cli(["train", *base, "trainer.steps=6", f"run_dir={run}"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step 4" in resumed.stdout
    assert [step for step, _ in list_checkpoints(run / "checkpoints")][-1] == 6


@pytest.mark.slow
def test_ctrl_c_during_training_exits_130_with_a_checkpoint(pair_facesets: tuple[Path, Path], tmp_path: Path) -> None:
    src, dst = pair_facesets
    run = tmp_path / "run"
    args = [*TINY_PAIR, f"data.src={src}", f"data.dst={dst}", "trainer=test", "trainer.steps=100000"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "swaplab.cli", "train", *args, "trainer.checkpoint_every=2", f"run_dir={run}"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    latest = run / "checkpoints" / "latest.json"
    for _ in range(1200):  # the first checkpoint: the run is past its start
        if latest.exists() or process.poll() is not None:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted" in err and "stopped at step" in out
    assert list_checkpoints(run / "checkpoints")


def test_two_swaps_onto_one_output_are_refused(tmp_path: Path, shared_data: Path) -> None:
    from swaplab.io.locks import BusyError, exclusive
    from swaplab.swap.pipeline import swap

    photo = next((shared_data / "lfw").rglob("*.jpg"))
    output = tmp_path / "out.png"
    lock = tmp_path / ".out.png.lock"
    # The lock is taken before the model loads, so a busy output costs nothing and names the holder.
    with exclusive(lock, f"output {output}", remove=True), pytest.raises(BusyError, match="is in use by process"):
        swap(tmp_path / "no-such-model", photo, output)
    assert not lock.exists()
    # A swap that fails (here: no model) releases and removes its lock, leaving the folder as it was.
    with pytest.raises(Exception, match="no-such-model"):
        swap(tmp_path / "no-such-model", photo, output)
    assert sorted(tmp_path.iterdir()) == []


def test_a_lock_file_deleted_by_its_last_holder_is_not_held(tmp_path: Path, monkeypatch) -> None:
    import fcntl

    from swaplab.io import locks

    lock = tmp_path / ".x.lock"
    real_flock = fcntl.flock

    def holder_finishes_first(handle, flags):
        # Between our open and our flock, the previous holder ends and deletes the file.
        lock.unlink()
        return real_flock(handle, flags)

    monkeypatch.setattr(locks.fcntl, "flock", holder_finishes_first)
    with pytest.raises(locks.BusyError, match="a moment ago"), locks.exclusive(lock, "output x", remove=True):
        pass
    monkeypatch.setattr(locks.fcntl, "flock", real_flock)
    with locks.exclusive(lock, "output x", remove=True):
        assert lock.read_text() == f"process {os.getpid()}"
    assert not lock.exists()
