"""Soak: a long video swap keeps its memory flat (the CLI in a subprocess, RSS sampled with psutil)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from swaplab.cli import main
from swaplab.io.video import VideoReader, VideoWriter

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
FRAMES = 1500  # a minute of video at 25 frames/s, in 96 px frames so it runs in about two minutes here
SIDE = 96
TINY_PAIR = ["model=df-cpu", "model.ae_dims=32", "model.e_dims=8", "model.d_dims=8", "model.d_mask_dims=4"]


def _long_clip(lfw: Path, path: Path) -> None:
    """A real face drifting slowly, ``FRAMES`` frames: every frame has a face to detect, track and swap."""
    face = np.asarray(Image.open(sorted((lfw / "Colin_Powell").glob("*.jpg"))[0]).convert("RGB"))
    with VideoWriter(path, 25, (SIDE, SIDE), crf=23) as writer:
        for index in range(FRAMES):
            shift = int(round(10 * np.sin(index / 40)))
            window = face[40 + shift : 210 + shift, 40:210]
            writer.write(np.asarray(Image.fromarray(window).resize((SIDE, SIDE), Image.BILINEAR)))


def test_long_video_swap_memory_stays_flat(pair_facesets: tuple[Path, Path], lfw: Path, tmp_path: Path) -> None:
    src, dst = pair_facesets
    run, model = tmp_path / "run", tmp_path / "model"
    common = [f"data.src={src}", f"data.dst={dst}", "trainer=test", "trainer.steps=2"]
    assert main(["train", *TINY_PAIR, *common, f"run_dir={run}"]) == 0
    assert main(["export", str(run), "-o", str(model)]) == 0
    clip, output = tmp_path / "long.mp4", tmp_path / "swapped.mp4"
    _long_clip(lfw, clip)

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "swaplab.cli", "swap", str(model), str(clip), "-o", str(output), "--quiet"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(process.pid)
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    while process.poll() is None:
        try:
            samples.append((time.monotonic() - started, watched.memory_info().rss / 2**20))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.25)
    out, err = process.communicate()
    assert process.returncode == 0, err
    assert f"{FRAMES} frames" in out and sum(1 for _ in VideoReader(output)) == FRAMES

    # After the start (imports, model, first frames) the resident size must not climb with the frames:
    # a leak of one 96 px frame per frame would add 40 MiB over the second half.
    rss = np.array([value for _, value in samples])
    assert len(rss) >= 40, "the swap ended too fast to sample"
    half = rss[len(rss) // 2 :]
    slope = _robust_slope(half) * len(half)  # MiB over the second half
    growth = float(np.median(half[-len(half) // 4 :]) - np.median(half[: len(half) // 4]))
    print(
        f"RSS MiB: start {rss[0]:.0f}, peak {rss.max():.0f}, second half {half.min():.0f}-{half.max():.0f}, "
        f"growth {growth:+.1f}, slope {slope:+.1f} over {len(half)} samples"
    )
    assert growth < 8.0 and slope < 8.0


def _robust_slope(values: np.ndarray) -> float:
    """The Theil-Sen slope per sample: the median of the slopes between every pair of samples.

    A steady leak shows as the same slope between any two samples; a least-squares fit is instead
    tilted by the few samples at either end (the allocator settling, the encoder flushing at the end),
    which alone moved it to the bound once with a median growth of +0.3 MiB."""
    first, second = np.triu_indices(len(values), 1)
    return float(np.median((values[second] - values[first]) / (second - first)))


def test_the_slope_sees_a_leak_and_not_the_ends() -> None:
    rng = np.random.default_rng(0)
    flat = 300.0 + rng.normal(0.0, 0.3, 240)
    leaking = flat + np.linspace(0.0, 40.0, 240)  # one 96 px frame per frame over the second half
    ends = flat.copy()
    ends[:8] -= 15.0  # the allocator settling at the start and the encoder flushing at the end
    ends[-8:] += 15.0
    assert _robust_slope(leaking) * 240 == pytest.approx(40.0, abs=1.0)
    assert abs(_robust_slope(ends) * 240) < 2.0
