"""The optimisation settings every training recipe shares (``TrainerConfig``) and their presets.

A run's config (a recipe's own dataclass: ``model``, ``data``, ``loss`` ..., ``trainer``,
``run_dir``) holds one ``TrainerConfig``: steps, batch, optimiser, schedule, precision, budgets,
logging and checkpoints, each a ``key=value`` override (``trainer.steps=500``) or a preset
(``trainer=cpu-quick``). The ``augment`` presets live here too. This module builds no tensors.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Literal

from swaplab.config import ConfigError, config_group
from swaplab.train.augment import AugmentConfig


@dataclass
class TrainerConfig:
    """The optimisation loop (nanoGPT-style: every knob visible)."""

    name: str = "default"
    steps: int = 100_000  # optimiser steps to reach (a resumed run continues to this)
    batch_size: int = 8  # faces per side per process and micro-step
    accumulate: int = 1  # micro-steps per optimiser step (gradient accumulation)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 5e-5  # DeepFaceLab's SAEHD learning rate
    betas: tuple[float, float] = (0.5, 0.999)  # SAEHD's Adam betas
    eps: float = 1e-8  # Adam's epsilon (a larger one damps the updates of near-zero gradients)
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warmup from 0 to ``lr``
    schedule: Literal["constant", "cosine"] = "constant"
    final_lr_ratio: float = 0.1  # cosine ends at lr * final_lr_ratio at ``steps``
    # The last ``final_stretch`` of ``steps`` (a fraction, 0 = off) polishes: the LR is multiplied by
    # ``final_stretch_lr`` and recipes that warp their inputs stop warping (DeepFaceLab's habit of
    # switching random warp off and lowering the LR for the end of a run). With ``time_budget_s``
    # it is the budget's last fraction when that comes first (the loop then ends the steps there).
    final_stretch: float = 0.0
    final_stretch_lr: float = 0.1
    grad_clip: float = 0.0  # max global gradient norm (0 = off)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on CUDA or bf16-capable CPUs
    channels_last: bool = True
    compile: bool = False  # torch.compile the training forward (first step takes tens of seconds)
    log_every: int = 10
    preview_every: int = 500  # 0 = only at the end
    preview_faces: int = 4  # rows of the preview grid
    checkpoint_every: int = 1000  # 0 = only at the end
    keep_last: int = 3  # checkpoints kept (0 = all) ...
    keep_every: int = 0  # ... plus every checkpoint at a multiple of this step (0 = none)
    time_budget_s: float = 0.0  # stop cleanly after this many seconds of training, all sessions (0 = none)
    nan_patience: int = 3  # consecutive non-finite steps before restoring the last checkpoint
    nan_lr_factor: float = 0.5  # LR multiplier applied at each such restore
    seed: int = 0  # model initialisation and augmentation
    device: str = "auto"  # auto: cuda:<local rank> when available, else cpu
    threads: int = 0  # torch intra-op threads for this run (0 = leave torch's choice)
    progress: bool = True  # tqdm bar on rank 0

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "accumulate", "log_every")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"trainer.{key} must be >= 1, got {getattr(self, key)}")
        for key in (
            "warmup_steps",
            "preview_every",
            "checkpoint_every",
            "keep_last",
            "keep_every",
            "preview_faces",
        ):
            if getattr(self, key) < 0:
                raise ConfigError(f"trainer.{key} must be >= 0, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"trainer.lr must be positive, got {self.lr}")
        if not 0 <= self.final_stretch < 1:
            raise ConfigError(f"trainer.final_stretch must be in [0, 1), got {self.final_stretch}")
        if self.final_stretch_lr <= 0:
            raise ConfigError(f"trainer.final_stretch_lr must be positive, got {self.final_stretch_lr}")
        if not 0 < self.nan_lr_factor <= 1:
            raise ConfigError(f"trainer.nan_lr_factor must be in (0, 1], got {self.nan_lr_factor}")

    @property
    def final_stretch_start(self) -> int | None:
        """The first step of the final stretch (``steps - round(steps * final_stretch)``), or None when off."""
        if not self.final_stretch:
            return None
        return self.steps - round(self.steps * self.final_stretch)

    def in_final_stretch(self, step: int) -> bool:
        """Whether optimiser step ``step`` (0-based) belongs to the final stretch."""
        start = self.final_stretch_start
        return start is not None and step >= start


#: ``steps`` when a time budget is the stop (given without a step count, or a budget preset).
UNBOUNDED_STEPS = 100_000_000

TRAINER_PRESETS = config_group("trainer")
TRAINER_PRESETS.register("default")(TrainerConfig)

#: What every test preset shares: fp32 so numbers are bit-stable on any CPU, every step logged, no
#: previews, every checkpoint kept, no progress bar.
TEST_SETTINGS: dict[str, object] = dict(
    precision="fp32", channels_last=False, log_every=1, preview_every=0, keep_last=0, progress=False
)


def register_trainer(name: str, *, like: str | None = None, **fields: object) -> None:
    """Register the trainer preset ``name``: preset ``like``'s settings (else the defaults) with ``fields``."""

    def build() -> TrainerConfig:
        base = TRAINER_PRESETS.create(like) if like else TrainerConfig()
        return dataclasses.replace(base, name=name, **fields)  # type: ignore[arg-type]

    TRAINER_PRESETS.register(name)(build)


#: A few minutes on a 2-core CPU with ``model=liae-cpu``: enough to see faces form in the previews.
register_trainer(
    "cpu-quick",
    steps=2000,
    batch_size=8,
    lr=1e-4,
    warmup_steps=50,
    log_every=10,
    preview_every=250,
    checkpoint_every=500,
)
#: Per-pair budgets on a CPU, one command each: the budget is the stop, and its last fifth runs
#: without random warp at a tenth of the LR (DeepFaceLab's finish). The recipe to pair them with
#: was chosen by ``benchmarks/bench_learning.py`` (docs/per-pair.md).
register_trainer(
    "cpu-30min",
    like="cpu-quick",
    steps=UNBOUNDED_STEPS,
    time_budget_s=1800.0,
    final_stretch=0.2,
    preview_every=1000,
    checkpoint_every=1000,
)
register_trainer("cpu-2h", like="cpu-30min", time_budget_s=7200.0)
#: For tests: tiny budgets.
register_trainer("test", steps=8, batch_size=4, lr=2e-4, checkpoint_every=4, **TEST_SETTINGS)


config_group("augment").register("default")(AugmentConfig)
#: No augmentation at all (every range 0): for exact comparisons, e.g. DDP against one process
#: (a per-pair run mirrors dst faces apart from it: ``data.dst_flip=0`` turns that off too).
config_group("augment").register("off")(
    functools.partial(
        AugmentConfig,
        warp=False,
        rotation_deg=0.0,
        scale=0.0,
        translation=0.0,
        flip_prob=0.0,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue_deg=0.0,
    )
)
