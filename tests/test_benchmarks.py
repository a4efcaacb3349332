"""Every benchmark's ``--smoke`` run, end to end on the real sample data: it exits 0, prints its
report, and leaves nothing in the repository.

A smoke run uses tiny sizes and one or two steps or repeats (its numbers mean nothing); it checks
that the benchmark still runs against the library's current APIs. Each script runs in its own
process, as a user runs it, from the repository root, on one thread, with swaplab's user cache and
every temporary folder inside pytest's temporary directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
TIMEOUT_S = 300  # the slowest smoke run takes about 20 s on the project's busy 2-core machine

#: What each script's smoke report must print: its machine line and lines of its result tables.
EXPECTED: dict[str, tuple[str, ...]] = {
    "bench_detectability.py": (
        "machine: ",
        "preset 'test'",
        "held-out AUC",
        "speed-up over fp32 NCHW",
        "bf16 autocast, channels_last",
    ),
    "bench_eval.py": (
        "machine: ",
        "timing model: df-cpu, 1 steps",
        "per_pair_v1: 1 pairs scored",
        "warm/cold",
        "swaps scored per second",
        "extrapolated to a 1000-pair protocol",
    ),
    "bench_extract.py": ("machine: ", "detect every frame", "track every 5, no identity", "tracking (every 5) is"),
    "bench_faceshifter.py": ("machine: ", "faceshifter-tiny", "speed-up of bf16 + channels_last", "+HEAR bf16+cl"),
    "bench_identity_by_size.py": ("machine: ", "identity of the source's real face pasted", "64px", "load after"),
    "bench_identity.py": (
        "CPU: ",
        "faces per second",
        "ratio bf16 autocast + channels_last / fp32 NCHW",
        "agreement of descriptors",
        "chip extraction, 16 faces",
    ),
    "bench_identity_net.py": (
        "machine: ",
        "train step (test build, lfw-arcface-test)",
        "CompactFaceNet (",
        "MobileFaceNet-like (",
        "vs fp32 NCHW",
        "LFW View 1",
        "training: ",
    ),
    "bench_masks.py": (
        "machine: ",
        "occluders NOT seen in training",
        "segment+hull",
        "segmenter bf16 autocast",
        "3. real occluders outlined by hand: 10 faces",
        "frame-to-frame change",
        "5. real occluders through a swap: 10 photos",
        "share of hull",
    ),
    "bench_sharpness_ceiling.py": (
        "machine: ",
        "sharpness ratio of a perfect model",
        "64px",
        "model recon.",
        "load after",
    ),
    "bench_personal_restorer.py": (
        "machine: ",
        "building personal-drawn (2 steps",
        "restore=on with each restorer",
        "installed ",
        "restorers-side-by-side.png",
    ),
    "bench_restore.py": (
        "machine: ",
        "held-out degraded faces",
        "restored, strength 1",
        "sharpness swap/target",
        "perfect 64 px model, on",
        "passes of 3x",
        "grid: ",
    ),
    "bench_blend_learned.py": ("machine: ", "seam gradient error", "learned", "256 px"),
    "bench_blend_glgan.py": ("machine: ", "seam band (6 px)", "glgan", "load average at end"),
    "bench_landmarks.py": (
        "machine: ",
        "1. 68-point predictor vs hand labels",
        "a tracking step is",
        "detect_every  detector runs",
    ),
    "bench_learning.py": (
        "machine: ",
        "training baseline-df64, liae-cpu-pretrained",
        "pretraining (counted apart)",
        "held-out swaps side by side",
        "held-out reconstruction inside the face mask (2 faces per person",
        "src SSIM",
        "liae-cpu",
    ),
    "bench_metrics.py": (
        "machine: ",
        "masked_ssim (kornia, NCHW fp32)",
        "identity_features (batch 64)",
        "-> sqrtm / eigh time",
        "roc_auc",
    ),
    "bench_model_flops.py": ("machine: ", "fwd GFLOP/face", "bf16+CL speed-up", "DSSIM fwd+bwd"),
    "bench_simswap.py": ("machine: ", "simswap-tiny", "speed-up of bf16 + channels_last"),
    "bench_glgan.py": ("machine: ", "glgan-tiny", "speed-up of bf16 + channels_last", "2. swap per face"),
    "bench_fsgan.py": ("machine: ", "stage time per face", "bf16 + channels_last / fp32", "classical (warp, hull"),
    "bench_swap.py": (
        "machine: ",
        "pipeline (batch_frames=8, overlap=True)",
        "model alone (liae-cpu, 64 px, batch 8",
        "overlap / sequential at batch 8",
        "pipeline / model alone at batch 8: sequential",
        "jitter of the pasted face, smoothing=kalman",
    ),
    "bench_video_parts.py": (
        "machine: ",
        "mask=segment, smoothed: landmark_jitter",
        "restore=on: skipped, face-restorer is not built",
        "restorer=restorer, smoothed: landmark_jitter",
        "| setting | landmark_jitter | flicker",
    ),
    "bench_train.py": (
        "machine: ",
        "GFLOP/face",
        "liae-cpu 64 bf16 + channels_last",
        "df-cpu 64 bf16 + channels_last",
        "load average at end",
    ),
    "bench_domain_adaptation.py": ("machine: ", "source only", "DANN", "AUC on the target domain:"),
    "bench_zoo.py": (
        "machine: ",
        "load average at start: ",
        "1. training throughput, images/s",
        "ae-digits              autoencoder",
        "dcgan-digits           gan",
        "2. StyleGAN full against light",
        "stylegan-light-digits / stylegan-digits: params",
        "load average at end: ",
    ),
    "bench_diffusion.py": (
        "machine: ",
        "1. sampling, smoke",
        "dpm-solver++",
        "2. training, smoke",
        "GFLOP per face (forward + backward",
        "matmul peak (",
        "latent / pixel time per face",
        "pruned / full time per face",
        "5. averaged weights: ",
        "averaged / last",
        "load average at end",
    ),
    "bench_watermark.py": ("machine: ", "cost per frame", "robustness (1080p frames", "unmarked images: vote margin"),
    "bench_reliability.py": ("machine: ", "unknown preset name", "3 are errors, of which 3 print", "0 lose anything"),
    "bench_ui.py": ("machine: ", "start-up (fresh process", "library call", "through the app", "app overhead per swap"),
}


def test_every_benchmark_has_a_smoke_check() -> None:
    assert sorted(p.name for p in BENCHMARKS.glob("bench_*.py")) == sorted(EXPECTED)


def _repo_files() -> set[str]:
    """The repository's top-level entries and everything under benchmarks/ that git does not track
    (ignored files such as ``__pycache__`` included)."""
    listed = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    untracked = {line[3:] for line in listed.splitlines() if line[:2] in ("??", "!!")}
    return untracked | {f"/{name}" for name in os.listdir(REPO)}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_benchmark_smoke(script: str, shared_data: Path, tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "SWAPLAB_CACHE": str(tmp_path / "cache"),
        "SWAPLAB_DATA": str(shared_data),
        "TMPDIR": str(temp),
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
    }
    env.pop("SWAPLAB_LFW_ARCFACE", None)
    before = _repo_files()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--smoke"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 0, (
        f"{script} --smoke exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    )
    missing = [text for text in EXPECTED[script] if text not in done.stdout]
    assert not missing, f"{script} --smoke did not print {missing}:\n{done.stdout[-5000:]}"
    assert "FAILED" not in done.stdout, done.stdout[-5000:]
    left = sorted(_repo_files() - before)
    assert not left, f"{script} --smoke left files in the repository: {left}"
    print(f"{script} --smoke: {seconds:.1f} s")
