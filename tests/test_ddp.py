"""Data parallelism: 2 processes (torchrun, gloo) equal 1 with a doubled batch; so does accumulation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_trainer import read_metrics, train_overrides

from swaplab.train.entry import build_config
from swaplab.train.loop import train

REPO = Path(__file__).resolve().parents[1]
#: No augmentation (its random draws are per rank; mirrored dst faces too), fp32, a few steps,
#: and SGD. Adam divides each update by the gradient's running size, so a gradient that is ~0 up
#: to float rounding (which differs between one batch of 4 and two batches of 2, and between
#: processors: 12 % of one layer's weights differed by 7.5e-5 on an AMX Xeon with eps=1e-4) flips
#: its update; SGD is linear in the gradient, so the two runs agree to the rounding of the gradient
#: sums.
EXACT = (
    "augment=off",
    "data.dst_flip=0",
    "trainer.steps=3",
    "trainer.checkpoint_every=0",
    "trainer.optimizer=sgd",
    "trainer.lr=0.05",
)


pytestmark = pytest.mark.usefixtures("one_thread")


def train_in_two_processes(args: list[str]) -> None:
    """``swaplab.train ARGS`` under torchrun: 2 processes on this machine (gloo), one thread each."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*command, "-m", "swaplab.train", *args],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def assert_same_run(run_a: Path, run_b: Path, tolerance: float) -> None:
    losses_a = [r["loss"] for r in read_metrics(run_a)]
    losses_b = [r["loss"] for r in read_metrics(run_b)]
    assert losses_b == pytest.approx(losses_a, rel=tolerance)
    weights_a = load_file(run_a / "checkpoints" / "step-0000003" / "model.safetensors")
    weights_b = load_file(run_b / "checkpoints" / "step-0000003" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for key, value in weights_a.items():
        torch.testing.assert_close(weights_b[key], value, rtol=tolerance, atol=tolerance)


@pytest.mark.slow
def test_two_processes_equal_one_with_the_doubled_batch(pair_facesets, tmp_path):
    single = tmp_path / "single"
    train(build_config(train_overrides(pair_facesets, single, *EXACT, "trainer.batch_size=4")))

    ddp = tmp_path / "ddp"
    train_in_two_processes(train_overrides(pair_facesets, ddp, *EXACT, "trainer.batch_size=2"))
    manifest = (ddp / "manifest.json").read_text()
    assert '"world_size": 2' in manifest
    # Only rank 0 wrote: one metrics row per step, one checkpoint.
    assert [r["step"] for r in read_metrics(ddp)] == [1, 2, 3]
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["latest.json", "step-0000003"]
    assert_same_run(single, ddp, tolerance=1e-5)
    # And training moved the weights (the comparison is not between two untouched inits).
    initial = build_config(train_overrides(pair_facesets, tmp_path / "unused"))
    from swaplab.models import create_model

    torch.manual_seed(initial.trainer.seed)
    init_weights = create_model(initial.model).state_dict()
    final = load_file(ddp / "checkpoints" / "step-0000003" / "model.safetensors")
    assert not torch.equal(init_weights["encoder.body.0.conv.weight"], final["encoder.body.0.conv.weight"])


def test_gradient_accumulation_equals_the_larger_batch(pair_facesets, tmp_path):
    big = tmp_path / "big"
    train(build_config(train_overrides(pair_facesets, big, *EXACT, "trainer.batch_size=4")))
    accumulated = tmp_path / "accumulated"
    train(
        build_config(
            train_overrides(pair_facesets, accumulated, *EXACT, "trainer.batch_size=2", "trainer.accumulate=2")
        )
    )
    assert_same_run(big, accumulated, tolerance=1e-5)


@pytest.mark.slow
def test_ddpm_two_processes_equal_one_with_the_doubled_batch(pair_facesets, tmp_path):
    """The diffusion recipe averages gradients by hand and draws each step's noise and timesteps
    for the global batch, each rank keeping its rows: two processes train what one does."""

    def words(run: Path, batch: int) -> list[str]:
        return ["model=ddpm-tiny", "model.resolution=16", "model.widths=[16,32]", "model.attention=[false,true]",
                f"data.train=[{pair_facesets[0]}]", "data.holdout=4", "trainer=ddpm-test", "trainer.steps=3",
                "trainer.checkpoint_every=0", "trainer.optimizer=sgd", "trainer.lr=0.05", "trainer.warmup_steps=0",
                f"trainer.batch_size={batch}", "validation_network=", f"run_dir={run}"]  # fmt: skip

    single, ddp = tmp_path / "single", tmp_path / "ddp"
    train(build_config(words(single, 8)))
    train_in_two_processes(words(ddp, 4))
    assert '"world_size": 2' in (ddp / "manifest.json").read_text()
    weights_a = load_file(single / "checkpoints" / "step-0000003" / "model.safetensors")
    weights_b = load_file(ddp / "checkpoints" / "step-0000003" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for key, value in weights_a.items():
        torch.testing.assert_close(weights_b[key], value, rtol=1e-5, atol=1e-5)
    # (Drawn per rank instead, as before, every tensor differed: the draws are what makes it exact.)
