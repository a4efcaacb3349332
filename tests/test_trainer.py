"""The per-pair trainer end to end on real faces: loss falls, run folder, previews, NaN handling, export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from swaplab.facesets.format import Faceset
from swaplab.losses import LossTerms, ReconstructionObjective
from swaplab.models.card import load_model
from swaplab.system import autocast_dtype, cpu_supports_bf16
from swaplab.train.entry import build_config
from swaplab.train.export import export_model
from swaplab.train.loop import train
from swaplab.train.preview import COLUMNS, HEADER_HEIGHT, preview_grid
from swaplab.train.run import RunConfigMismatch, read_run_config
from swaplab.train.session import learning_rate

#: A LIAE-ud of about 1 M parameters at 64 px: trains a step in well under a second on one core.
TINY_MODEL = ["model=liae-cpu", "model.ae_dims=32", "model.e_dims=8", "model.d_dims=8", "model.d_mask_dims=4"]


def train_overrides(pair: tuple[Path, Path], run_dir: Path, *extra: str) -> list[str]:
    """Overrides of a small fp32 test run on the reference pair (``trainer=test``: log every step)."""
    src, dst = pair
    return [*TINY_MODEL, "trainer=test", f"data.src={src}", f"data.dst={dst}", f"run_dir={run_dir}", *extra]


pytestmark = pytest.mark.usefixtures("one_thread")


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_loss_decreases_on_real_faces(pair_facesets, tmp_path):
    cfg = build_config(
        train_overrides(
            pair_facesets,
            tmp_path / "run",
            "trainer.steps=40",
            "trainer.lr=5e-4",
            "trainer.checkpoint_every=0",
        )
    )
    result = train(cfg)
    assert result.step == 40 and result.stop_reason == "steps"
    losses = [row["loss"] for row in read_metrics(tmp_path / "run") if "loss" in row]
    assert len(losses) == 40 and all(math.isfinite(x) for x in losses)
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.85 * first, (first, last)
    # Both sides' faces through forward and backward: 2 x batch 4 per step, over the loop's time.
    assert result.samples_per_s == pytest.approx(2 * 4 * 40 / result.seconds)


def test_run_folder_manifest_config_and_previews(pair_facesets, tmp_path):
    run_dir = tmp_path / "run"
    cfg = build_config(train_overrides(pair_facesets, run_dir, "trainer.steps=4", "trainer.preview_every=2"))
    result = train(cfg)
    for name in ("config.yaml", "manifest.json", "metrics.jsonl", "curves.png", "checkpoints/latest.json"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tb").iterdir())
    assert sorted(p.name for p in (run_dir / "previews").glob("step-*.png")) == [
        "step-0000002.png",
        "step-0000004.png",
    ]
    recipe, saved = read_run_config(run_dir)
    assert recipe.name == "per-pair" and saved == cfg
    assert (run_dir / "config.yaml").read_text().startswith("recipe: per-pair\n")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    from swaplab.config import config_hash

    assert manifest["config_hash"] == config_hash(cfg)
    assert manifest["seed"] == cfg.trainer.seed and manifest["world_size"] == 1
    assert manifest["facesets"]["src"]["content_hash"] == Faceset(pair_facesets[0]).content_hash()
    assert manifest["facesets"]["dst"]["content_hash"] == Faceset(pair_facesets[1]).content_hash()
    assert manifest["machine"]["torch"] == torch.__version__
    assert manifest["code"]["revision"]
    session = manifest["sessions"][-1]
    assert session["start_step"] == 0 and session["end_step"] == 4 and session["end"]
    assert result.checkpoint == run_dir / "checkpoints" / "step-0000004"


def test_resume_refuses_a_changed_config_but_accepts_a_new_budget(pair_facesets, tmp_path):
    run_dir = tmp_path / "run"
    train(build_config(train_overrides(pair_facesets, run_dir, "trainer.steps=2")))
    with pytest.raises(RunConfigMismatch, match=r"trainer\.lr: saved 0\.0002, now 0\.001"):
        train(build_config(train_overrides(pair_facesets, run_dir, "trainer.steps=4", "trainer.lr=1e-3")))
    # ``run_dir=`` of an existing run starts from its saved config: only the budget is given.
    result = train(build_config([f"run_dir={run_dir}", "trainer.steps=3"]))
    assert (result.start_step, result.step) == (2, 3)
    assert [row["step"] for row in read_metrics(run_dir)] == [1, 2, 3]


def test_a_run_resumes_through_another_spelling_of_its_folder(pair_facesets, tmp_path, monkeypatch):
    train(build_config(train_overrides(pair_facesets, tmp_path / "run", "trainer.steps=2")))
    monkeypatch.chdir(tmp_path)
    result = train(build_config(train_overrides(pair_facesets, Path("run"), "trainer.steps=3")))
    assert (result.start_step, result.step) == (2, 3)


def test_preview_grid_layout(pair_facesets):
    from swaplab.models import create_model
    from swaplab.train.data import PairData, to_float

    cfg = build_config(train_overrides(pair_facesets, Path("unused")))
    data = PairData(cfg.data.src, cfg.data.dst, cfg.model.resolution, holdout=3)
    faces = {k: to_float({k: v})[k] for k, v in data.preview_faces(4).items()}
    assert len(faces["src"]) == 3  # held-out faces only, as many as held out
    model = create_model(cfg.model)
    grid = preview_grid(model, faces["src"], faces["dst"], step=7)
    size = cfg.model.resolution
    assert grid.dtype == np.uint8 and grid.shape == (HEADER_HEIGHT + 3 * size, len(COLUMNS) * size, 3)
    assert len(COLUMNS) == 8
    # The first column is the src face itself; the header is drawn (not a flat fill).
    src0 = (faces["src"][0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(grid[HEADER_HEIGHT : HEADER_HEIGHT + size, :size], src0)
    assert grid[:HEADER_HEIGHT].std() > 5
    # Mask columns are grey images.
    mask_col = grid[HEADER_HEIGHT:, 5 * size : 6 * size]
    assert np.array_equal(mask_col[..., 0], mask_col[..., 2])


def _inject_nan_at(monkeypatch, calls: set[int]) -> list[int]:
    """Make the objective return NaN on the given (1-based) calls; returns the call counter."""
    original = ReconstructionObjective.pair
    counter = [0]

    def pair(self, *args, **kwargs):
        counter[0] += 1
        terms = original(self, *args, **kwargs)
        if counter[0] in calls:
            return LossTerms(terms.total * float("nan"), terms.components)
        return terms

    monkeypatch.setattr(ReconstructionObjective, "pair", pair)
    return counter


def test_nan_step_is_skipped_and_never_reaches_parameters(pair_facesets, tmp_path, monkeypatch):
    clean = train(build_config(train_overrides(pair_facesets, tmp_path / "clean", "trainer.steps=3")))
    _inject_nan_at(monkeypatch, {4})
    poisoned = train(build_config(train_overrides(pair_facesets, tmp_path / "nan", "trainer.steps=4")))
    assert poisoned.skipped_steps == 1 and poisoned.rollbacks == 0
    rows = read_metrics(tmp_path / "nan")
    assert rows[-1]["step"] == 4 and rows[-1]["skipped"] is True and rows[-1]["loss"] is None
    # Step 4 was skipped, so the weights after 4 steps equal the clean run's after 3.
    after_clean = load_file(clean.checkpoint / "model.safetensors")
    after_nan = load_file(poisoned.checkpoint / "model.safetensors")
    for key, value in after_clean.items():
        assert torch.isfinite(after_nan[key]).all()
        assert torch.equal(value, after_nan[key]), key


def test_repeated_nan_restores_checkpoint_and_lowers_lr(pair_facesets, tmp_path, monkeypatch, caplog):
    run_dir = tmp_path / "run"
    # Steps 5, 6, 7 fail (patience 3): back to the checkpoint of step 4 at half the LR, then on to 8.
    _inject_nan_at(monkeypatch, {5, 6, 7})
    result = train(
        build_config(train_overrides(pair_facesets, run_dir, "trainer.steps=8", "trainer.checkpoint_every=4"))
    )
    assert result.step == 8 and result.rollbacks == 1 and result.skipped_steps == 3
    assert any("restored checkpoint step-0000004" in w and "0.5 x trainer.lr" in w for w in result.warnings)
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 4, 5, 6, 7, 8]
    assert rows[4] == {"step": 4, "event": "nan_rollback", "lr_scale": 0.5}
    assert rows[-1]["lr"] == pytest.approx(0.5 * 2e-4)
    state = json.loads((run_dir / "checkpoints/step-0000008/state.json").read_text())
    assert state["scheduler"]["lr_scale"] == 0.5
    assert all(
        torch.isfinite(t).all() for t in load_file(run_dir / "checkpoints/step-0000008/model.safetensors").values()
    )


def test_time_budget_stops_cleanly_with_a_checkpoint(pair_facesets, tmp_path):
    result = train(
        build_config(
            train_overrides(pair_facesets, tmp_path / "run", "trainer.steps=1000", "trainer.time_budget_s=1e-6")
        )
    )
    assert (result.step, result.stop_reason) == (1, "time_budget")
    assert result.checkpoint == tmp_path / "run" / "checkpoints" / "step-0000001"
    # The budget counts the whole run: the same command again finds it spent; a larger one continues.
    again = train(build_config([f"run_dir={tmp_path / 'run'}", "trainer.time_budget_s=1e-6"]))
    assert (again.step, again.stop_reason) == (1, "nothing to do")
    more = train(build_config([f"run_dir={tmp_path / 'run'}", "trainer.time_budget_s=1e6", "trainer.steps=3"]))
    assert (more.start_step, more.step, more.stop_reason) == (1, 3, "steps")


def test_export_and_reload_reproduce_the_trained_model(pair_facesets, tmp_path):
    run_dir = tmp_path / "run"
    cfg = build_config(train_overrides(pair_facesets, run_dir, "trainer.steps=2"))
    train(cfg)
    card_path = export_model(run_dir, tmp_path / "export")
    card = json.loads(card_path.read_text())
    assert card["step"] == 2 and card["resolution"] == 64 and card["arch"] == "liae"
    assert card["facesets"]["src"]["content_hash"] == Faceset(pair_facesets[0]).content_hash()
    assert "loss" in card["losses_at_export"] and "iBUG 300-W" in card["data_terms"]["landmarks"]
    assert "LFW" in card["data_terms"]["faces"]
    model = load_model(tmp_path / "export")
    assert not model.training
    from swaplab.models import create_model

    reference = create_model(cfg.model)
    reference.load_state_dict(load_file(run_dir / "checkpoints/step-0000002/model.safetensors"))
    faces = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for got, want in zip(model.swap(faces), reference.eval().swap(faces)):
            assert torch.equal(got, want)


def test_precision_and_schedule():
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("auto", cpu) is (torch.bfloat16 if cpu_supports_bf16() else None)
    cfg = build_config(
        ["trainer.lr=1.0", "trainer.warmup_steps=3", "trainer.schedule=cosine", "trainer.steps=13"]
    ).trainer
    assert [learning_rate(s, cfg) for s in range(3)] == pytest.approx([0.25, 0.5, 0.75])
    assert learning_rate(3, cfg) == pytest.approx(1.0)
    assert learning_rate(8, cfg) == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert learning_rate(13, cfg) == pytest.approx(0.1)
    assert learning_rate(5, cfg, scale=0.5) == pytest.approx(0.5 * learning_rate(5, cfg))


def test_data_split_and_order_are_pure_functions_of_seed_and_step(pair_facesets):
    from swaplab.train.data import PairData

    src, dst = pair_facesets
    data = PairData(src, dst, 64, holdout=0.2, seed=3)
    n_src = len(Faceset(src))
    assert len(data.holdout_index["src"]) == round(0.2 * n_src)
    assert not set(data.holdout_index["src"]) & set(data.train_index["src"])
    assert sorted(data.holdout_index["src"] + data.train_index["src"]) == list(range(n_src))
    again = PairData(src, dst, 64, holdout=0.2, seed=3, cache=False)
    assert again.holdout_index == data.holdout_index
    # Step 5's batch does not depend on what was drawn before, nor on caching.
    late = again.batch(5, batch_size=4)
    data.batch(0, batch_size=4)
    for key, value in data.batch(5, batch_size=4).items():
        assert torch.equal(value, late[key]), key
    # Rank r of N takes the r-th slice of the global batch; micro-steps continue the stream.
    whole = data.batch(2, batch_size=8)
    halves = [data.batch(2, batch_size=4, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(torch.cat([h["dst"] for h in halves]), whole["dst"])
    micro = [data.batch(2, batch_size=4, micro=m, accumulate=2) for m in range(2)]
    assert torch.equal(torch.cat([m["src_mask"] for m in micro]), whole["src_mask"])
    # Every training face appears once per epoch.
    n_train = data.num_train("src")
    epoch = data.streams["src"].positions(0, n_train)
    assert sorted(epoch.tolist()) == list(range(n_train))
    assert PairData(src, dst, 64, holdout=0.2, seed=4).holdout_index != data.holdout_index


def test_bf16_channels_last_run(pair_facesets, tmp_path):
    result = train(
        build_config(
            train_overrides(
                pair_facesets,
                tmp_path / "run",
                "trainer.precision=bf16",
                "trainer.channels_last=true",
                "trainer.steps=2",
            )
        )
    )
    assert result.step == 2 and math.isfinite(result.metrics["loss"])
    weights = load_file(result.checkpoint / "model.safetensors")
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in weights.values())


def test_sigterm_stops_with_a_checkpoint(pair_facesets, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    args = train_overrides(pair_facesets, run_dir, "trainer.steps=100000", "trainer.checkpoint_every=0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    repo = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "swaplab.train", *args], cwd=repo, env=env, stderr=subprocess.PIPE, text=True
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "received SIGTERM" in stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    session = manifest["sessions"][-1]
    assert session["stop_reason"] == "signal" and session["end_step"] >= 2
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == session["end_step"] == read_metrics(run_dir)[-1]["step"]


def test_a_time_budget_given_alone_is_the_stop():
    # the README's recipe: the cpu-quick preset's 2,000 steps must not end a 30-minute budget early
    budget = build_config(["model=liae-cpu", "trainer=cpu-quick", "trainer.time_budget_s=1800"]).trainer
    assert budget.time_budget_s == 1800 and budget.steps >= 10**8
    both = build_config(["trainer=cpu-quick", "trainer.time_budget_s=1800", "trainer.steps=500"]).trainer
    assert (both.steps, both.time_budget_s) == (500, 1800)
    assert build_config(["trainer=cpu-quick"]).trainer.steps == 2000


def test_runs_and_models_written_before_recipes_had_names_still_load(pair_facesets, tmp_path):
    from swaplab.models.card import CardError
    from swaplab.models.swapper import PerPairSwapper, load_swapper

    run = tmp_path / "run"
    train(build_config(train_overrides(pair_facesets, run, "trainer.steps=2")))
    # a run folder of before: config.yaml without its recipe's name
    config = run / "config.yaml"
    config.write_text(config.read_text().removeprefix("recipe: per-pair\n"))
    resumed = train(build_config([f"run_dir={run}", "trainer.steps=3"]))
    assert (resumed.recipe, resumed.start_step, resumed.step) == ("per-pair", 2, 3)
    # a version-1 model card: no recipe, swapper or identity fields, a `kind` sentence instead
    card_path = export_model(run, tmp_path / "model")
    card = json.loads(card_path.read_text())
    for key in ("recipe", "swapper", "identity", "training"):
        card.pop(key)
    card.update(version=1, kind="per-pair face swap")
    card_path.write_text(json.dumps(card))
    swapper = load_swapper(tmp_path / "model")
    assert isinstance(swapper, PerPairSwapper) and swapper.conditions_on is None and swapper.resolution == 64
    faces = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(swapper.swap(faces).rgb, load_model(tmp_path / "model").swap(faces)[0])
    # a card from a newer swaplab is refused with both versions named
    card_path.write_text(json.dumps({**card, "version": 9}))
    with pytest.raises(CardError, match="version 9 model card; this swaplab reads versions up to 2"):
        load_swapper(tmp_path / "model")


def test_two_processes_never_train_one_run(pair_facesets, tmp_path):
    from swaplab.io.locks import BusyError, exclusive

    run = tmp_path / "run"
    train(build_config(train_overrides(pair_facesets, run, "trainer.steps=1")))
    with exclusive(run / ".lock", "a test"):  # another process's hold, as far as flock is concerned
        with pytest.raises(BusyError, match=f"run {run} is in use by process"):
            train(build_config([f"run_dir={run}", "trainer.steps=2"]))
    assert train(build_config([f"run_dir={run}", "trainer.steps=2"])).step == 2  # released with its holder
