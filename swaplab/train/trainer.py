"""The training loop of per-pair swap models: ``train(cfg) -> RunResult``.

A readable step in the spirit of nanoGPT's ``train.py``: every step draws this rank's batch (a
pure function of seed and step), augments it on tensors, runs the model under bf16 autocast
where the hardware has bf16, accumulates gradients, checks them for NaN/inf, clips, and steps
AdamW with warmup and a schedule; DistributedDataParallel under ``torchrun``. The session around
it (logs, previews, atomic checkpoints, exact resume, budgets, signals, rollbacks) is the shared
``swaplab.train.loop.TrainingLoop``; this module also holds what every trainer uses (devices,
process groups, the LR schedule, signals). Model and loss maths live in ``swaplab.models`` and
``swaplab.losses``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from swaplab.config import ConfigError
from swaplab.losses import LossTerms, ReconstructionObjective
from swaplab.models import create_model
from swaplab.system import autocast_dtype, cpu_supports_bf16  # noqa: F401 - re-exported
from swaplab.train.augment import Augmenter
from swaplab.train.config import TrainConfig, TrainerConfig
from swaplab.train.data import PairData, stream_seed, to_float
from swaplab.train.loop import TrainingLoop, run_session
from swaplab.train.preview import preview_grid, save_preview

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


# ---------------------------------------------------------------- the trainer


class Trainer(TrainingLoop):
    """One training session of a per-pair model; ``Trainer(cfg).run()`` is ``train(cfg)``."""

    rate_key = "faces_per_s"

    def __init__(self, cfg: TrainConfig, dist_info: Distributed, device: torch.device) -> None:
        if not cfg.data.src or not cfg.data.dst:
            raise ConfigError("data.src and data.dst must name the two faceset folders (data.src=... data.dst=...)")
        self.cfg = cfg
        self.tcfg = cfg.trainer
        self.dist = dist_info
        self.device = device
        resuming = self._open_run(cfg, TrainConfig, device)
        self.data = PairData(
            cfg.data.src,
            cfg.data.dst,
            cfg.model.resolution,
            holdout=cfg.data.holdout,
            seed=cfg.data.seed,
            cache=cfg.data.cache,
        )
        self.model = self._build_model()
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
        self.module = self.model
        self.optimizers = {"model": self.optimizer}
        self.param_names = {"model": [name for name, _ in self.model.named_parameters()]}
        self.samples_per_step = 2 * self.tcfg.batch_size * self.tcfg.accumulate * self.dist.world_size

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

        self._start_session(cfg, self.data.content_hashes)
        self.preview_faces = {
            side: to_float({side: faces}, device, self.tcfg.channels_last)[side]
            for side, faces in self.data.preview_faces(self.tcfg.preview_faces).items()
        }

    # ------------------------------------------------------------ setup helpers

    def _build_model(self) -> nn.Module:
        torch.manual_seed(self.tcfg.seed)  # the initial weights depend on the seed alone
        model = create_model(self.cfg.model).to(self.device)
        return model.to(memory_format=self.memory_format)

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

    def train_step(self) -> tuple[bool, dict[str, float]]:
        """One optimiser step (with accumulation). Returns (applied, values: loss, loss/<term>, grad_norm)."""
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
        values = {f"loss/{key}": float(value) for key, value in components.items()}
        values.update(loss=float(total), grad_norm=float(grad_norm))
        return finite, values

    # ------------------------------------------------------------ outputs

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

    def _log_extra(self) -> dict[str, Any]:
        return {"epoch": {k: round(v, 4) for k, v in self.data.epochs(self.samples_seen).items()}}

    def _trainer_state(self) -> dict[str, Any]:
        return {"samples_per_side": self.samples_seen, "epochs": self.data.epochs(self.samples_seen)}

    def _fresh_module(self) -> nn.Module:
        return self._build_model()


def train(cfg: TrainConfig) -> RunResult:
    """Train (or resume) the per-pair model ``cfg`` describes in ``cfg.run_dir``.

    An existing run folder resumes from its latest good checkpoint; its saved config must match
    ``cfg`` except for ``trainer.steps`` and ``trainer.time_budget_s``. Under ``torchrun`` every
    process calls this; rank 0 alone writes files.
    """
    return run_session(Trainer, cfg)


def build_config(overrides: list[str]) -> TrainConfig:
    """A per-pair ``TrainConfig`` from ``key=value`` strings (``swaplab.train.entry.build_any_config``
    for any model: ``config=``, ``run_dir=`` of an existing run and the study aliases work here too)."""
    from swaplab.train.entry import build_any_config

    cfg = build_any_config(overrides)
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("these overrides name a one-shot model: build them with swaplab.train.entry.build_any_config")
    return cfg


def main_from_overrides(overrides: list[str]) -> RunResult:
    """``python -m swaplab.train key=value ...``: see ``swaplab.train.entry.main_from_overrides``."""
    from swaplab.train.entry import main_from_overrides as main

    return main(overrides)
