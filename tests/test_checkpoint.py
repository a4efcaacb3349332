"""Checkpoints: round trip, corrupt and torn writes detected, rotation, exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_trainer import read_metrics, train_overrides
from torch import nn

from swaplab.train.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_latest_good,
    remove_partial,
    restore_rng,
    save_checkpoint,
)
from swaplab.train.entry import build_config
from swaplab.train.loop import train

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def small_model_and_optimizer(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, list[str]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.5, 0.99))
    return model, optimizer, [name for name, _ in model.named_parameters()]


def take_steps(model: nn.Module, optimizer: torch.optim.Optimizer, n: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(n):
        loss = model(torch.randn(4, 3, 8, 8, generator=generator)).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def save_steps(root: Path, steps: list[int], **kwargs) -> tuple[nn.Module, torch.optim.Optimizer, list[str]]:
    model, optimizer, names = small_model_and_optimizer()
    for step in steps:
        take_steps(model, optimizer, 1, seed=step)
        save_checkpoint(
            root, step, model=model, optimizer=optimizer, param_names=names, state={"extra": step}, **kwargs
        )
    return model, optimizer, names


def test_round_trip_restores_model_optimizer_and_rng(tmp_path):
    model, optimizer, names = small_model_and_optimizer()
    take_steps(model, optimizer, 3, seed=1)
    torch.manual_seed(123)
    path = save_checkpoint(tmp_path, 3, model=model, optimizer=optimizer, param_names=names, state={"note": "x"})
    expected_draw = torch.rand(3)
    assert path.name == "step-0000003" and sorted(p.name for p in path.iterdir()) == [
        "model.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
        "state.json",
    ]
    assert json.loads((tmp_path / "latest.json").read_text())["path"] == "step-0000003"
    optimizer_keys = load_file(path / "optimizer.safetensors").keys()
    assert "state/0.weight/exp_avg" in optimizer_keys and "state/3.bias/exp_avg_sq" in optimizer_keys

    ckpt = load_checkpoint(path)
    assert ckpt.step == 3 and ckpt.state["note"] == "x"
    clone, clone_opt, _ = small_model_and_optimizer(seed=99)
    clone.load_state_dict(ckpt.model)
    clone_opt.load_state_dict(ckpt.optimizer)
    assert clone_opt.param_groups[0]["betas"] == (0.5, 0.99)
    # Continuing from the checkpoint gives exactly what continuing the original gives.
    take_steps(model, optimizer, 2, seed=7)
    take_steps(clone, clone_opt, 2, seed=7)
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)
    restore_rng(ckpt.state["rng"], ckpt.rng)
    assert torch.equal(torch.rand(3), expected_draw)


def test_flipped_bytes_name_the_file_and_resume_falls_back(tmp_path):
    save_steps(tmp_path, [1, 2])
    weights = tmp_path / "step-0000002" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="hash mismatch") as info:
        load_checkpoint(tmp_path / "step-0000002")
    assert info.value.path == weights and "model.safetensors" in str(info.value)
    ckpt, warnings = load_latest_good(tmp_path)
    assert ckpt.step == 1
    assert len(warnings) == 1 and "step-0000002/model.safetensors" in warnings[0] and "hash mismatch" in warnings[0]


def test_missing_and_unreadable_files_are_reported(tmp_path):
    save_steps(tmp_path, [1, 2, 3])
    (tmp_path / "step-0000003" / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match="optimizer.safetensors: missing file"):
        load_checkpoint(tmp_path / "step-0000003")
    # A file whose recorded hash matches but which is not safetensors (state.json rewritten).
    bad = tmp_path / "step-0000002" / "rng.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    state_path = tmp_path / "step-0000002" / "state.json"
    state = json.loads(state_path.read_text())
    from swaplab.io.atomic import sha256_file

    state["files"]["rng.safetensors"] = sha256_file(bad)
    state_path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="rng.safetensors: unreadable safetensors"):
        load_checkpoint(tmp_path / "step-0000002")
    ckpt, warnings = load_latest_good(tmp_path)
    assert ckpt.step == 1 and len(warnings) == 2


def test_kill_while_writing_leaves_previous_checkpoint_usable(tmp_path):
    save_steps(tmp_path, [4, 8])
    # What a kill mid-write leaves: a hidden temporary folder with a truncated file, and (had the
    # rename happened without state.json, which save_checkpoint never does) a folder without state.
    partial = tmp_path / ".tmp-step-0000012-4242"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes((tmp_path / "step-0000008" / "model.safetensors").read_bytes()[:100])
    torn = tmp_path / "step-0000012"
    shutil.copytree(tmp_path / "step-0000008", torn)
    (torn / "state.json").unlink()
    (tmp_path / "latest.json").write_text('{"step": 12, "path": "step-00')  # torn JSON
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 8, 12]
    ckpt, warnings = load_latest_good(tmp_path)
    assert ckpt.step == 8
    assert any("step-0000012/state.json: missing file" in w for w in warnings)
    assert remove_partial(tmp_path) == [partial] and not partial.exists()


def test_training_resumes_past_a_torn_checkpoint(pair_facesets, tmp_path):
    run_dir = tmp_path / "run"
    train(build_config(train_overrides(pair_facesets, run_dir, "trainer.steps=8")))  # checkpoints at 4 and 8
    ckpts = run_dir / "checkpoints"
    (ckpts / "step-0000008" / "model.safetensors").write_bytes(b"truncated")
    partial = ckpts / ".tmp-step-0000012-999"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    result = train(build_config(train_overrides(pair_facesets, run_dir, "trainer.steps=10")))
    assert result.start_step == 4 and result.step == 10
    assert result.resumed_from == ckpts / "step-0000004"
    assert any("step-0000008/model.safetensors" in w for w in result.warnings)
    assert not partial.exists()
    assert [row["step"] for row in read_metrics(run_dir)] == list(range(1, 11))


def test_rotation_keeps_last_and_every(tmp_path):
    save_steps(tmp_path, list(range(1, 11)), keep_last=2, keep_every=4)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 8, 9, 10]


def test_refuses_to_write_nan_weights(tmp_path):
    model, optimizer, names = small_model_and_optimizer()
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite values in 0\.weight"):
        save_checkpoint(tmp_path, 1, model=model, optimizer=optimizer, param_names=names)
    assert list(tmp_path.iterdir()) == []


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"training exited early with {process.returncode}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.02)


def test_exact_resume_after_sigkill(pair_facesets, tmp_path):
    """Run A: 2N steps straight. Run B: killed (SIGKILL) after its step-N checkpoint, then resumed to 2N.

    B's losses for steps N+1..2N and its final weights equal A's (fp32, augmentation on).
    """
    n = 4
    common = ("trainer.checkpoint_every=4", "trainer.lr=5e-4")
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    result_a = train(build_config(train_overrides(pair_facesets, run_a, f"trainer.steps={2 * n}", *common)))

    # B would run far past N; it is killed as soon as the step-N checkpoint is complete on disk.
    args = train_overrides(pair_facesets, run_b, "trainer.steps=1000", *common)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "swaplab.train", *args], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
    )
    _wait_for(run_b / "checkpoints" / f"step-{n:07d}" / "state.json", process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert [s for s, _ in list_checkpoints(run_b / "checkpoints")] == [n]

    result_b = train(build_config(train_overrides(pair_facesets, run_b, f"trainer.steps={2 * n}", *common)))
    assert (result_b.start_step, result_b.step) == (n, 2 * n)
    losses_a = {r["step"]: r for r in read_metrics(run_a)}
    losses_b = {r["step"]: r for r in read_metrics(run_b)}
    assert sorted(losses_b) == list(range(1, 2 * n + 1))
    for step in range(n + 1, 2 * n + 1):
        for key in [k for k in losses_a[step] if k.startswith("loss")]:
            assert losses_b[step][key] == pytest.approx(losses_a[step][key], rel=1e-6, abs=1e-7), (step, key)
    weights_a = load_file(result_a.checkpoint / "model.safetensors")
    weights_b = load_file(result_b.checkpoint / "model.safetensors")
    for key, value in weights_a.items():
        torch.testing.assert_close(weights_b[key], value, rtol=1e-6, atol=1e-7)


def test_a_full_disk_during_a_checkpoint_is_one_clear_error_and_keeps_the_last_one(
    pair_facesets, tmp_path, monkeypatch, capsys
):
    import safetensors.torch

    from swaplab.cli import main
    from swaplab.train import checkpoint as checkpoint_module

    run = tmp_path / "run"
    args = ["train", *train_overrides(pair_facesets, run, "trainer.steps=4", "trainer.checkpoint_every=2")]
    assert main(args) == 0
    real_save = safetensors.torch.save_file

    def disk_full(*a, **k):
        raise checkpoint_module.SafetensorError(
            "Error while serializing: IoError(No space left on device (os error 28))"
        )

    monkeypatch.setattr(checkpoint_module, "save_file", disk_full)
    assert main([*args[:-2], "trainer.steps=6", "trainer.checkpoint_every=2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "the disk is full: checkpoint step 6" in err[0] and "previous checkpoint is intact" in err[0]
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest.json", "step-0000002", "step-0000004"]
    monkeypatch.setattr(checkpoint_module, "save_file", real_save)
    assert main([*args[:-2], "trainer.steps=6", "trainer.checkpoint_every=2"]) == 0  # resumes from step 4
