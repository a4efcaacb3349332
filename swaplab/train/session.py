"""What every training session needs around its model: processes, devices, seeds, signals, the
learning-rate schedule, optimisers and one gradient step.

Used by the one training loop (``swaplab.train.loop``) and by the recipes it runs; the rules here
(one warm-up formula, one optimiser factory, one finite-gradient check) are the only copies. It
builds no model and reads no data.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from swaplab.train.config import TrainerConfig

log = logging.getLogger(__name__)

Tensor = torch.Tensor


# ---------------------------------------------------------------- hardware and processes


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


@dataclass
class Distributed:
    """This process's place in a ``torchrun`` group (rank 0 of 1 without one)."""

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


# ---------------------------------------------------------------- schedule and optimisers


def learning_rate(step: int, cfg: TrainerConfig, scale: float = 1.0) -> float:
    """LR of optimiser step ``step`` (0-based): linear warm-up from ``lr / (warmup_steps + 1)``,
    then constant, or cosine down to ``lr * final_lr_ratio`` at ``steps``; times ``final_stretch_lr``
    in the final stretch (``cfg.in_final_stretch``). Every trainer uses this."""
    if cfg.in_final_stretch(step):
        scale *= cfg.final_stretch_lr
    if step < cfg.warmup_steps:
        return cfg.lr * scale * (step + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "constant":
        return cfg.lr * scale
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.final_lr_ratio
    return scale * (floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - floor))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float, scales: list[float] | None = None) -> None:
    """Every parameter group gets ``lr`` times its scale (``scales``, one per group, else 1)."""
    for index, group in enumerate(optimizer.param_groups):
        group["lr"] = lr * (scales[index] if scales else 1.0)


ParamGroups = list[dict[str, Any]]


def build_optimizer(cfg: TrainerConfig, groups: ParamGroups | Iterable[nn.Parameter], device: torch.device):
    """The optimiser ``cfg.optimizer`` names, over parameter groups (dicts with ``params`` and, optionally,
    ``weight_decay`` or ``lr_scale``) or a plain iterable of parameters."""
    groups = list(groups)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    fused = device.type in ("cpu", "cuda")
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused)


def average_gradients(parameters: list[nn.Parameter], world_size: int) -> None:
    """Average ``.grad`` over the process group, one flat all-reduce (missing grads count as 0)."""
    if world_size <= 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size
    offset = 0
    for param, grad in zip(parameters, grads):
        count = grad.numel()
        param.grad = flat[offset : offset + count].view_as(grad).to(memory_format=torch.preserve_format).clone()
        offset += count


def apply_gradients(
    optimizer: torch.optim.Optimizer, loss: Tensor, grad_clip: float = 0.0, world_size: int = 1, average: bool = False
) -> tuple[bool, float]:
    """Check the loss and the gradients of ``optimizer``'s parameters, clip, step, clear.

    With ``average`` the gradients are first averaged across processes (for models that
    ``DistributedDataParallel`` cannot wrap). Returns (applied, gradient norm); a non-finite loss
    or gradient skips the update, so no NaN ever reaches a parameter.
    """
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    if average:
        average_gradients(params, world_size)
    grads = [p.grad for p in params if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
    finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm))
    if finite:
        if grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(params, grad_clip, grad_norm)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return finite, float(grad_norm)
