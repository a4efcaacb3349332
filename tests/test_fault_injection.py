"""SIGKILL at seeded random moments of extract, train, export and swap (the real CLI, real faces).

Each operation first runs once uninterrupted, which also measures how long it takes on this
(loaded) machine; the kills then land at seeded fractions of that time, so they fall inside the
work whatever the load. After every kill the invariants hold:

- nothing partial under a final name: every faceset shard and crop reads, every checkpoint
  verifies, a model folder is absent or loads, an output video is absent or decodes whole;
- resuming gives what the uninterrupted run gave (the same faceset content, the same weights);
- after the next complete run no temporary file of any killed process is left.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from swaplab.facesets.format import Faceset
from swaplab.io.images import read_image
from swaplab.io.video import VideoReader
from swaplab.models.card import load_model
from swaplab.train.checkpoint import list_checkpoints, load_checkpoint

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SEED = 20261203
KILLS = 2  # kill points per operation (each costs a process start: seconds on this machine)
TINY_PAIR = ["model=df-cpu", "model.ae_dims=32", "model.e_dims=8", "model.d_dims=8", "model.d_mask_dims=4"]
CLIP = "videos/hdtf_vexpress/RD_Radio10_0_clip_0.mp4"
#: What a killed writer may leave: atomic-write and video temporaries, checkpoint and export staging.
LEFTOVER = re.compile(r"(\.(partial|video|export)-\d+-|^\.tmp-step-|^\.old-step-|\.partial$)")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _cli(args: list[str]) -> tuple[int, float, str]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "swaplab.cli", *args], env=_env(), capture_output=True, text=True, timeout=600
    )
    return done.returncode, time.monotonic() - started, done.stdout + done.stderr


def _killed(args: list[str], after: float) -> bool:
    """Start the command and SIGKILL it ``after`` seconds in; False if it had already finished."""
    process = subprocess.Popen(
        [sys.executable, "-m", "swaplab.cli", *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        process.wait(timeout=after)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def _kill_times(seconds: float, salt: str) -> list[float]:
    """Seeded kill moments spread over the run (after the interpreter and torch have started)."""
    rng = random.Random(f"{SEED}-{salt}")
    return sorted(seconds * rng.uniform(0.35, 0.95) for _ in range(KILLS))


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if LEFTOVER.search(p.name)]


def _faceset_is_whole(root: Path) -> int:
    """Every committed shard reads and every crop it names decodes; returns the face count."""
    if not (root / "faceset.json").exists():
        return 0
    faceset = Faceset(root)  # raises on a damaged shard
    for index in range(len(faceset)):
        read_image(faceset.image_path(index))
    return len(faceset)


def test_extract_killed_anywhere_resumes_to_the_same_faceset(lfw: Path, tmp_path: Path) -> None:
    images = sorted((lfw / "Colin_Powell").glob("*.jpg"))[:10]
    base = ["extract", *map(str, images), "--quiet", "--no-sheet", "size=96", "faces.max_faces=1"]
    code, seconds, out = _cli([*base, "-o", str(tmp_path / "reference")])
    assert code == 0, out
    reference = Faceset(tmp_path / "reference")
    target = tmp_path / "killed"
    kills = 0
    for after in _kill_times(seconds, "extract"):
        kills += _killed([*base, "-o", str(target)], after)
        _faceset_is_whole(target)
    assert kills >= 1
    code, _, out = _cli([*base, "-o", str(target)])
    assert code == 0, out
    assert _faceset_is_whole(target) == len(reference)
    assert Faceset(target).content_hash() == reference.content_hash()
    assert _leftovers(target) == []


@pytest.fixture(scope="module")
def trained_runs(pair_facesets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted tiny run, and the same run killed at seeded moments then resumed."""
    src, dst = pair_facesets
    root = tmp_path_factory.mktemp("fault-train")
    base = [
        "train",
        *TINY_PAIR,
        f"data.src={src}",
        f"data.dst={dst}",
        "trainer=test",
        "trainer.steps=8",
        "trainer.checkpoint_every=2",
    ]
    code, seconds, out = _cli([*base, f"run_dir={root / 'straight'}"])
    assert code == 0, out
    killed = root / "killed"
    kills = 0
    for after in _kill_times(seconds, "train"):
        kills += _killed([*base, f"run_dir={killed}"], after)
        for _, path in list_checkpoints(killed / "checkpoints"):
            load_checkpoint(path)  # every complete checkpoint folder verifies
    code, _, out = _cli([*base, f"run_dir={killed}"])
    assert code == 0, out
    return root / "straight", killed, kills


def test_train_killed_anywhere_resumes_to_the_same_weights(trained_runs) -> None:
    straight, killed, kills = trained_runs
    assert kills >= 1
    a = load_checkpoint(straight / "checkpoints" / "step-0000008").model
    b = load_checkpoint(killed / "checkpoints" / "step-0000008").model
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _leftovers(killed) == []


def _model_is_whole_or_absent(folder: Path) -> None:
    """The card is written last: where there is one, its weights are complete and match its hash."""
    if (folder / "model.json").exists():
        load_model(folder)


def test_export_and_swap_killed_anywhere_leave_nothing_partial(trained_runs, shared_data: Path, tmp_path: Path) -> None:
    straight, _, _ = trained_runs
    model = tmp_path / "model"
    code, seconds, out = _cli(["export", str(straight), "-o", str(model)])
    assert code == 0, out
    for after in _kill_times(seconds, "export"):
        _killed(["export", str(straight), "-o", str(model), "--overwrite"], after)
        _model_is_whole_or_absent(model)
    code, _, out = _cli(["export", str(straight), "-o", str(model), "--overwrite"])
    assert code == 0, out
    load_model(model)
    assert _leftovers(tmp_path) == []

    clip = shared_data / CLIP
    video = tmp_path / "swapped.mp4"
    swap = ["swap", str(model), str(clip), "-o", str(video), "--quiet", "--overwrite", "max_frames=8"]
    code, seconds, out = _cli(swap)
    assert code == 0, out
    finished = sum(1 for _ in VideoReader(video))
    for after in _kill_times(seconds, "swap"):
        _killed(swap, after)
        # The previous complete video stays in place until a new one is complete.
        assert sum(1 for _ in VideoReader(video)) == finished
    code, _, out = _cli(swap)
    assert code == 0, out
    assert sum(1 for _ in VideoReader(video)) == finished
    assert _leftovers(tmp_path) == []
