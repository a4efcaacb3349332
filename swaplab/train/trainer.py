"""The training loop of per-pair swap models: ``train(cfg) -> RunResult``.

A readable loop in the spirit of nanoGPT's ``train.py``: every step draws this rank's batch (a
pure function of seed and step), augments it on tensors, runs the model under bf16 autocast
where the hardware has bf16, accumulates gradients, checks them for NaN/inf, clips, and steps
AdamW with warmup and a schedule. Around it: logs (tqdm, ``metrics.jsonl``, TensorBoard),
previews, atomic checkpoints, exact resume, step and time budgets, SIGINT/SIGTERM handling, and
DistributedDataParallel under ``torchrun`` (rank 0 alone writes files). Model and loss maths
live in ``swaplab.models`` and ``swaplab.losses``; files in ``run``/``checkpoint``/``preview``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from swaplab.config import ConfigError, apply_overrides, load_config
from swaplab.losses import LossTerms, ReconstructionObjective
from swaplab.models import create_model
from swaplab.system import autocast_dtype, cpu_supports_bf16  # noqa: F401 - re-exported
from swaplab.train.augment import Augmenter
from swaplab.train.checkpoint import (
    Checkpoint,
    list_checkpoints,
    load_latest_good,
    remove_partial,
    restore_rng,
    save_checkpoint,
)
from swaplab.train.config import TrainConfig, TrainerConfig
from swaplab.train.data import PairData, stream_seed, to_float
from swaplab.train.preview import preview_grid, save_preview
from swaplab.train.run import RunFolder

log = logging.getLogger(__name__)

Tensor = torch.Tensor


@dataclass
class RunResult:
    """What one ``train`` call did."""

    run_dir: Path
    start_step: int  # step the session started from (0, or the resumed checkpoint's)
    step: int  # optimiser steps completed at the end
    stop_reason: str  # "steps" | "time_budget" | "signal" | "nothing to do"
    metrics: dict[str, Any] = field(default_factory=dict)  # the last logged row
    checkpoint: Path | None = None  # the final checkpoint
    resumed_from: Path | None = None
    seconds: float = 0.0  # wall time of the training loop
    faces_per_s: float = 0.0  # src + dst faces through forward and backward, all ranks
    skipped_steps: int = 0  # non-finite steps skipped
    rollbacks: int = 0  # restores of the last checkpoint after repeated non-finite steps
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- hardware


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


# ---------------------------------------------------------------- distributed


@dataclass
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # we initialised the process group (and must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def reduce_max(self, values: list[float]) -> list[float]:
        if not self.active:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.tolist()

    def reduce_mean(self, values: list[float]) -> list[float]:
        if not self.active:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return (tensor / self.world_size).tolist()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def init_distributed(device_spec: str) -> tuple[Distributed, torch.device]:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1); gloo on CPU, nccl on CUDA."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    info = Distributed(rank=rank, local_rank=local_rank, world_size=world_size)
    if world_size > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            info.owns_group = True
    return info, device


# ---------------------------------------------------------------- schedule and signals


def learning_rate(step: int, cfg: TrainerConfig, scale: float = 1.0) -> float:
    """LR of optimiser step ``step`` (0-based): linear warmup, then constant or cosine down to
    ``lr * final_lr_ratio`` at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * scale * (step + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "constant":
        return cfg.lr * scale
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.final_lr_ratio
    return scale * (floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - floor))


@contextlib.contextmanager
def stop_on_signals(flags: dict[str, Any]) -> Iterator[None]:
    """SIGINT/SIGTERM set ``flags["signal"]`` so the loop stops after the step with a checkpoint.

    A second signal raises KeyboardInterrupt at once. Outside the main thread (where Python
    cannot install handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if flags.get("signal"):
            raise KeyboardInterrupt
        flags["signal"] = signal.Signals(signum).name
        log.warning(
            "received %s: stopping after this step with a checkpoint (send it again to abort)",
            flags["signal"],
        )

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------- the trainer


class Trainer:
    """One training session of a per-pair model; ``Trainer(cfg).run()`` is ``train(cfg)``."""

    def __init__(self, cfg: TrainConfig, dist_info: Distributed, device: torch.device) -> None:
        if not cfg.data.src or not cfg.data.dst:
            raise ConfigError("data.src and data.dst must name the two faceset folders (data.src=... data.dst=...)")
        self.cfg = cfg
        self.tcfg = cfg.trainer
        self.dist = dist_info
        self.device = device
        self.run_folder = RunFolder(cfg.run_dir)
        self.warnings: list[str] = []
        self.lr_scale = 1.0
        self.skipped_steps = 0
        self.rollbacks = 0
        self.last_metrics: dict[str, Any] = {}

        resuming = self.run_folder.exists()
        if resuming:
            self.run_folder.check_resumable(cfg, TrainConfig)
        if self.dist.is_main:
            self.run_folder.create()
            self.run_folder.save_config(cfg)
        self.dist.barrier()

        self.amp_dtype = autocast_dtype(self.tcfg.precision, device)
        self.memory_format = torch.channels_last if self.tcfg.channels_last else torch.contiguous_format
        seed_everything(self.tcfg.seed)
        self.data = PairData(
            cfg.data.src,
            cfg.data.dst,
            cfg.model.resolution,
            holdout=cfg.data.holdout,
            seed=cfg.data.seed,
            cache=cfg.data.cache,
        )
        self.model = self._build_model()
        self.param_names = [name for name, _ in self.model.named_parameters()]
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=self.tcfg.lr,
            betas=self.tcfg.betas,
            eps=self.tcfg.eps,
            weight_decay=self.tcfg.weight_decay,
            fused=device.type in ("cpu", "cuda"),
        )
        self.objective = ReconstructionObjective(cfg.loss).to(device)
        self.augmenter = Augmenter(cfg.augment)

        self.step = 0
        self.resumed_from: Path | None = None
        if resuming:
            self._resume()
        self.start_step = self.step

        # DDP wraps the model's forward(src, dst), which runs both reconstructions; compile wraps DDP.
        self.ddp: nn.Module | None = None
        forward: nn.Module = self.model
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [device.index] if device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=device_ids)
            forward = self.ddp
        self.forward = torch.compile(forward) if self.tcfg.compile else forward

        self.tb = None
        if self.dist.is_main:
            self.run_folder.start_session(
                cfg,
                seed=self.tcfg.seed,
                facesets=self.data.content_hashes(),
                world_size=self.dist.world_size,
                start_step=self.step,
            )
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_folder.tb), purge_step=self.step + 1 if self.step else None)
        self.preview_faces = {
            side: to_float({side: faces}, device, self.tcfg.channels_last)[side]
            for side, faces in self.data.preview_faces(self.tcfg.preview_faces).items()
        }

    # ------------------------------------------------------------ setup helpers

    def _build_model(self) -> nn.Module:
        torch.manual_seed(self.tcfg.seed)  # the initial weights depend on the seed alone
        model = create_model(self.cfg.model).to(self.device)
        return model.to(memory_format=self.memory_format)

    def _resume(self) -> None:
        ckpt, warnings = load_latest_good(self.run_folder.checkpoints)
        self.warnings += warnings
        if self.dist.is_main:
            for path in remove_partial(self.run_folder.checkpoints):
                log.warning("removed a partly written checkpoint left by a killed process: %s", path)
        if ckpt is None:
            message = f"{self.run_folder.root} has no usable checkpoint: training starts from step 0"
            log.warning(message)
            self.warnings.append(message)
        else:
            self._load_checkpoint(ckpt, restore_random=True)
            self.resumed_from = ckpt.path
            log.info("resuming %s from %s (step %d)", self.run_folder.root, ckpt.path.name, ckpt.step)
        if self.dist.is_main:
            self.run_folder.truncate_metrics(self.step)

    def _load_checkpoint(self, ckpt: Checkpoint, restore_random: bool) -> None:
        missing, unexpected = self.model.load_state_dict(ckpt.model, strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"{ckpt.path}: the checkpoint does not fit this model "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]}); was model.* changed?"
            )
        self.optimizer.load_state_dict(ckpt.optimizer)
        # Moments follow their parameter's memory format (channels_last), as freshly created ones do.
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                for key, value in self.optimizer.state.get(param, {}).items():
                    if torch.is_tensor(value) and value.shape == param.shape:
                        self.optimizer.state[param][key] = torch.empty_like(param).copy_(value)
        if restore_random and ckpt.rng:
            restore_rng(ckpt.state["rng"], ckpt.rng)
        self.step = ckpt.step
        self.lr_scale = float(ckpt.state.get("scheduler", {}).get("lr_scale", 1.0))
        trainer_state = ckpt.state.get("trainer", {})
        self.skipped_steps = int(trainer_state.get("skipped_steps", 0))
        self.rollbacks = int(trainer_state.get("rollbacks", 0))
        self.last_metrics = ckpt.state.get("metrics", {})

    # ------------------------------------------------------------ one step

    def _augment(self, floats: dict[str, Tensor], step: int, micro: int) -> dict[str, dict[str, Tensor]]:
        """Both sides' augmented batches; random draws are seeded by (seed, step, micro, rank, side)."""
        out = {}
        for side, other in (("src", "dst"), ("dst", "src")):
            generator = torch.Generator(device=self.device)
            generator.manual_seed(stream_seed("augment", self.tcfg.seed, step, micro, self.dist.rank, side))
            out[side] = self.augmenter(
                {
                    "image": floats[side],
                    "mask": floats[f"{side}_mask"],
                    "eyes_mouth": floats[f"{side}_features"],
                },
                generator,
                reference=floats[other],
                reference_mask=floats[f"{other}_mask"],
            )
        return out

    def _loss(self, step: int, micro: int) -> LossTerms:
        raw = self.data.batch(
            step,
            batch_size=self.tcfg.batch_size,
            micro=micro,
            accumulate=self.tcfg.accumulate,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        sides = self._augment(to_float(raw, self.device, self.tcfg.channels_last), step, micro)
        src_in = sides["src"]["warped"].contiguous(memory_format=self.memory_format)
        dst_in = sides["dst"]["warped"].contiguous(memory_format=self.memory_format)
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            out = self.forward(src_in, dst_in)
        # Losses in fp32: SSIM's variances are differences of nearly equal numbers.
        return self.objective.pair(
            (out.src_rgb.float(), out.src_mask.float()),
            (out.dst_rgb.float(), out.dst_mask.float()),
            sides["src"],
            sides["dst"],
        )

    def train_step(self) -> tuple[bool, float, dict[str, float]]:
        """One optimiser step (with accumulation). Returns (applied, loss, components)."""
        step, accumulate = self.step, self.tcfg.accumulate
        lr = learning_rate(step, self.tcfg, self.lr_scale)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.device)
        components: dict[str, Tensor] = {}
        for micro in range(accumulate):
            last = micro == accumulate - 1
            sync = self.ddp.no_sync() if (self.ddp is not None and not last) else contextlib.nullcontext()
            with sync:
                terms = self._loss(step, micro)
                (terms.total / accumulate).backward()
            total += terms.total.detach() / accumulate
            for key, value in terms.components.items():
                components[key] = components.get(key, 0.0) + value / accumulate
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads)
        finite = bool(torch.isfinite(total)) and bool(torch.isfinite(grad_norm))
        if finite:
            if self.tcfg.grad_clip > 0:
                torch.nn.utils.clip_grads_with_norm_(self.model.parameters(), self.tcfg.grad_clip, grad_norm)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        values = {key: float(value) for key, value in components.items()}
        values["grad_norm"] = float(grad_norm)
        return finite, float(total), values

    # ------------------------------------------------------------ outputs

    def _log(self, loss: float, components: dict[str, float], faces_per_s: float, skipped: bool, elapsed: float):
        keys = sorted(components)
        reduced = self.dist.reduce_mean([loss, *(components[k] for k in keys)])
        row: dict[str, Any] = {
            "step": self.step,
            "loss": _finite_or_none(reduced[0]),
            **{(k if k == "grad_norm" else f"loss/{k}"): _finite_or_none(v) for k, v in zip(keys, reduced[1:])},
            "lr": learning_rate(self.step - 1, self.tcfg, self.lr_scale),
            "lr_scale": self.lr_scale,
            "faces_per_s": round(faces_per_s, 3),
            "epoch": {k: round(v, 4) for k, v in self.data.epochs(self.samples_seen).items()},
            "time_s": round(elapsed, 3),
        }
        if skipped:
            row["skipped"] = True
        self.last_metrics = row
        if not self.dist.is_main:
            return row
        self.run_folder.append_metrics(row)
        if self.tb is not None:
            for key, value in row.items():
                if (
                    isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and key != "step"
                    and value is not None
                ):
                    self.tb.add_scalar(key, value, self.step)
        return row

    @property
    def samples_seen(self) -> int:
        """Global samples per side drawn so far (all ranks, all micro-steps)."""
        return self.step * self.tcfg.accumulate * self.dist.world_size * self.tcfg.batch_size

    def _preview(self) -> Path | None:
        if not self.dist.is_main or not len(self.preview_faces["src"]):
            return None
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            grid = preview_grid(self.model, self.preview_faces["src"], self.preview_faces["dst"], self.step)
        path = save_preview(grid, self.run_folder.previews, self.step)
        self.run_folder.plot_curves()
        return path

    def _checkpoint(self) -> Path | None:
        path = None
        if self.dist.is_main:
            path = save_checkpoint(
                self.run_folder.checkpoints,
                self.step,
                model=self.model,
                optimizer=self.optimizer,
                param_names=self.param_names,
                state={
                    "scheduler": {
                        "lr_scale": self.lr_scale,
                        "schedule": self.tcfg.schedule,
                        "base_lr": self.tcfg.lr,
                    },
                    "trainer": {
                        "samples_per_side": self.samples_seen,
                        "epochs": self.data.epochs(self.samples_seen),
                        "skipped_steps": self.skipped_steps,
                        "rollbacks": self.rollbacks,
                        "world_size": self.dist.world_size,
                    },
                    "metrics": self.last_metrics,
                },
                keep_last=self.tcfg.keep_last,
                keep_every=self.tcfg.keep_every,
            )
        self.dist.barrier()
        return path

    def _rollback(self) -> None:
        """Go back to the last good checkpoint (or the initial weights) with a lower LR."""
        new_scale = self.lr_scale * self.tcfg.nan_lr_factor
        skipped, rollbacks = self.skipped_steps, self.rollbacks
        ckpt, warnings = load_latest_good(self.run_folder.checkpoints)
        self.warnings += warnings
        if ckpt is not None:
            self._load_checkpoint(ckpt, restore_random=True)
            where = f"checkpoint {ckpt.path.name}"
        else:
            fresh = self._build_model()
            self.model.load_state_dict(fresh.state_dict())
            self.optimizer.state.clear()
            self.step = 0
            where = "the initial weights (no checkpoint yet)"
        self.lr_scale = new_scale
        self.skipped_steps, self.rollbacks = skipped, rollbacks + 1
        message = (
            f"{self.tcfg.nan_patience} non-finite steps in a row: restored {where} at step {self.step} "
            f"and lowered the LR to {self.lr_scale:g} x trainer.lr"
        )
        log.warning(message)
        self.warnings.append(message)
        if self.dist.is_main:
            self.run_folder.truncate_metrics(self.step)
            self.run_folder.append_metrics({"step": self.step, "event": "nan_rollback", "lr_scale": self.lr_scale})

    # ------------------------------------------------------------ the loop

    def run(self) -> RunResult:
        tcfg = self.tcfg
        result = RunResult(
            run_dir=self.run_folder.root, start_step=self.start_step, step=self.step, stop_reason="steps"
        )
        result.resumed_from = self.resumed_from
        if self.step >= tcfg.steps:
            log.info(
                "%s is already at step %d (trainer.steps=%d): nothing to do",
                self.run_folder.root,
                self.step,
                tcfg.steps,
            )
            result.stop_reason = "nothing to do"
            result.metrics = self.last_metrics
            self._finish(result)
            return result

        from tqdm import tqdm

        faces_per_step = 2 * tcfg.batch_size * tcfg.accumulate * self.dist.world_size
        bar = tqdm(
            total=tcfg.steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            disable=not (self.dist.is_main and tcfg.progress),
        )
        flags: dict[str, Any] = {}
        bad_in_a_row = 0
        last_checkpoint_step = self.step if self.resumed_from else -1
        started = window_start = time.perf_counter()
        window_steps = 0
        self.model.train()
        with stop_on_signals(flags):
            while self.step < tcfg.steps:
                applied, loss, components = self.train_step()
                self.step += 1
                window_steps += 1
                bar.update(1)
                elapsed = time.perf_counter() - started
                out_of_time = tcfg.time_budget_s > 0 and elapsed >= tcfg.time_budget_s
                bad, signalled, timed_out = self.dist.reduce_max(
                    [float(not applied), float(bool(flags.get("signal"))), float(out_of_time)]
                )
                if bad:
                    self.skipped_steps += 1
                    bad_in_a_row += 1
                    log.warning("step %d: non-finite loss or gradient (loss=%s): update skipped", self.step, loss)
                else:
                    bad_in_a_row = 0
                if self.step % tcfg.log_every == 0 or bad or self.step == tcfg.steps:
                    now = time.perf_counter()
                    rate = faces_per_step * window_steps / max(now - window_start, 1e-9)
                    row = self._log(loss, components, rate, bool(bad), elapsed)
                    window_start, window_steps = now, 0
                    if tcfg.time_budget_s > 0 and self.step > self.start_step:
                        # With a time budget the step cap is usually far away: show the steps the
                        # budget will reach, so the bar's ETA is the budget's end, not hours away.
                        steps_per_s = (self.step - self.start_step) / max(elapsed, 1e-9)
                        reachable = self.step + int(steps_per_s * max(tcfg.time_budget_s - elapsed, 0.0))
                        bar.total = max(self.step, min(tcfg.steps, reachable))
                    bar.set_postfix(
                        loss=f"{row['loss']:.4f}" if row["loss"] is not None else "nan", faces_s=f"{rate:.1f}"
                    )
                if bad and bad_in_a_row >= tcfg.nan_patience:
                    self._rollback()
                    bad_in_a_row = 0
                    bar.reset(total=tcfg.steps)
                    bar.update(self.step)
                    continue
                if tcfg.checkpoint_every and self.step % tcfg.checkpoint_every == 0 and self.step < tcfg.steps:
                    self._checkpoint()
                    last_checkpoint_step = self.step
                    window_start, window_steps = time.perf_counter(), 0  # faces/s counts training only
                if tcfg.preview_every and self.step % tcfg.preview_every == 0 and self.step < tcfg.steps:
                    self._preview()
                    window_start, window_steps = time.perf_counter(), 0
                if signalled:
                    result.stop_reason = "signal"
                    break
                if timed_out:
                    result.stop_reason = "time_budget"
                    log.info("time budget of %gs reached at step %d", tcfg.time_budget_s, self.step)
                    break
        bar.close()
        result.seconds = time.perf_counter() - started
        steps_done = self.step - self.start_step
        result.faces_per_s = faces_per_step * steps_done / max(result.seconds, 1e-9)
        if self.step != last_checkpoint_step:
            result.checkpoint = self._checkpoint()
        self._finish(result)
        return result

    def _finish(self, result: RunResult) -> None:
        result.step = self.step
        result.metrics = self.last_metrics
        result.skipped_steps = self.skipped_steps
        result.rollbacks = self.rollbacks
        result.warnings = self.warnings
        if result.checkpoint is None:
            found = list_checkpoints(self.run_folder.checkpoints)
            result.checkpoint = found[-1][1] if found else None
        if self.dist.is_main:
            if result.stop_reason != "nothing to do":
                self._preview()
            self.run_folder.end_session(end_step=self.step, reason=result.stop_reason)
            if self.tb is not None:
                self.tb.close()
        self.dist.barrier()


def train(cfg: TrainConfig) -> RunResult:
    """Train (or resume) the per-pair model ``cfg`` describes in ``cfg.run_dir``.

    An existing run folder resumes from its latest good checkpoint; its saved config must match
    ``cfg`` except for ``trainer.steps`` and ``trainer.time_budget_s``. Under ``torchrun`` every
    process calls this; rank 0 alone writes files.
    """
    dist_info, device = init_distributed(cfg.trainer.device)
    try:
        return Trainer(cfg, dist_info, device).run()
    finally:
        if dist_info.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def build_config(overrides: list[str]) -> TrainConfig:
    """A ``TrainConfig`` from ``key=value`` strings.

    ``config=path.yaml`` starts from a saved config; ``run_dir=X`` of an existing run starts from
    that run's ``config.yaml`` (so ``run_dir=X trainer.steps=5000`` extends a run); then the
    remaining overrides apply in order.
    """
    base_path = None
    rest = []
    for item in overrides:
        if item.startswith("config="):
            base_path = Path(item.split("=", 1)[1])
        else:
            rest.append(item)
    run_dirs = [item.split("=", 1)[1] for item in rest if item.startswith("run_dir=")]
    if base_path is None and run_dirs and (Path(run_dirs[-1]) / "config.yaml").is_file():
        base_path = Path(run_dirs[-1]) / "config.yaml"
    base = load_config(TrainConfig, base_path) if base_path else TrainConfig()
    return apply_overrides(base, rest)


def main_from_overrides(overrides: list[str]) -> RunResult:
    """``python -m swaplab.train key=value ...`` (also under ``torchrun``): build the config and train."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = build_config(overrides)
    result = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        loss = result.metrics.get("loss")
        print(
            f"{result.run_dir}: step {result.step} ({result.stop_reason}), "
            f"loss {loss if loss is not None else 'n/a'}, {result.faces_per_s:.1f} faces/s, "
            f"checkpoint {result.checkpoint}"
        )
    return result
