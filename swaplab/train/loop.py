"""The loop every swaplab trainer shares: budgets, logging, checkpoints, resume, rollbacks.

``TrainingLoop.run()`` calls the subclass's ``train_step()`` until ``trainer.steps`` or the time
budget, a signal or repeated non-finite steps intervene; around it: a tqdm bar, logged rows
(``metrics.jsonl`` and TensorBoard, averaged over ranks), periodic previews and atomic
checkpoints, exact resume and rollback to the last good checkpoint with a lower LR. A subclass
(the per-pair ``Trainer``, the one-shot ``OneShotTrainer``) owns its models, data, losses and
pictures; this module owns the order in which things happen and builds no model.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from swaplab.config import ConfigError
from swaplab.train.checkpoint import (
    Checkpoint,
    list_checkpoints,
    load_latest_good,
    remove_partial,
    restore_rng,
    save_checkpoint,
)
from swaplab.train.config import TrainerConfig

log = logging.getLogger(__name__)


class TrainingLoop:
    """Shared session logic. A subclass sets, before ``run()``:

    - ``tcfg`` (``TrainerConfig``), ``dist`` (``Distributed``), ``run_folder`` (``RunFolder``),
      ``tb`` (a SummaryWriter on rank 0, else None);
    - ``module``: the ``nn.Module`` whose state dict is checkpointed (and put in train mode);
    - ``optimizers``: ``{name: optimizer}``; ``param_names``: ``{name: [parameter names]}``
      (a single optimizer is stored as such, keeping the one-optimizer checkpoint format);
    - ``samples_per_step`` and ``rate_key`` (the throughput's unit in the logs);
    and implements ``train_step()``, ``_preview()``, ``_fresh_module()`` and, optionally,
    ``_log_extra()`` and ``_trainer_state()``. ``_open_run()`` opens the run folder.
    """

    tcfg: TrainerConfig
    module: nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    param_names: dict[str, list[str]]
    samples_per_step: int
    rate_key: str = "faces_per_s"

    def _open_run(self, cfg: Any, cls: type, device: torch.device) -> bool:
        """Open ``cfg.run_dir`` (rank 0 creates it and saves the config), set the counters, the
        autocast dtype and memory format, seed everything. Returns whether a run is resumed
        (its saved config must equal ``cfg`` up to the budgets)."""
        from swaplab.system import autocast_dtype
        from swaplab.train.run import RunFolder
        from swaplab.train.trainer import seed_everything

        self.run_folder = RunFolder(cfg.run_dir)
        self._init_state()
        resuming = self.run_folder.exists()
        if resuming:
            self.run_folder.check_resumable(cfg, cls)
        if self.dist.is_main:
            self.run_folder.create()
            self.run_folder.save_config(cfg)
        self.dist.barrier()
        self.amp_dtype = autocast_dtype(self.tcfg.precision, device)
        self.memory_format = torch.channels_last if self.tcfg.channels_last else torch.contiguous_format
        seed_everything(self.tcfg.seed)
        return resuming

    def _start_session(self, cfg: Any, facesets: Callable[[], Any]) -> None:
        """Rank 0 records the session in ``manifest.json`` (``facesets()``: their hashes, computed
        there only) and opens TensorBoard, continuing after the resumed step."""
        self.tb = None
        if self.dist.is_main:
            self.run_folder.start_session(
                cfg,
                seed=self.tcfg.seed,
                facesets=facesets(),
                world_size=self.dist.world_size,
                start_step=self.step,
            )
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_folder.tb), purge_step=self.step + 1 if self.step else None)

    def _init_state(self) -> None:
        self.warnings: list[str] = []
        self.lr_scale = 1.0
        self.skipped_steps = 0
        self.rollbacks = 0
        self.last_metrics: dict[str, Any] = {}
        self.step = 0
        self.resumed_from: Path | None = None
        self.start_step = 0

    # ------------------------------------------------------------ what a subclass provides

    def train_step(self) -> tuple[bool, dict[str, float]]:
        """One optimiser step; returns (applied, values to log: ``loss``, ``loss/<term>``, ...)."""
        raise NotImplementedError

    def _preview(self) -> Path | None:
        raise NotImplementedError

    def _fresh_module(self) -> nn.Module:
        """The module as initialised (same seed), for a rollback before any checkpoint."""
        raise NotImplementedError

    def _log_extra(self) -> dict[str, Any]:
        return {}

    def _trainer_state(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------ checkpoints

    @property
    def _single_optimizer(self) -> bool:
        return len(self.optimizers) == 1

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
            self._load_checkpoint(ckpt)
            self.resumed_from = ckpt.path
            log.info("resuming %s from %s (step %d)", self.run_folder.root, ckpt.path.name, ckpt.step)
        if self.dist.is_main:
            self.run_folder.truncate_metrics(self.step)

    def _load_checkpoint(self, ckpt: Checkpoint) -> None:
        missing, unexpected = self.module.load_state_dict(ckpt.model, strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"{ckpt.path}: the checkpoint does not fit this model "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]}); was model.* changed?"
            )
        states = {next(iter(self.optimizers)): ckpt.optimizer} if self._single_optimizer else ckpt.optimizer
        if set(states) != set(self.optimizers):
            raise ConfigError(
                f"{ckpt.path}: holds optimisers {sorted(states)}, this trainer has {sorted(self.optimizers)}"
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(states[name])
            # Moments follow their parameter's memory format (channels_last), as fresh ones do.
            for group in optimizer.param_groups:
                for param in group["params"]:
                    for key, value in optimizer.state.get(param, {}).items():
                        if torch.is_tensor(value) and value.shape == param.shape:
                            optimizer.state[param][key] = torch.empty_like(param).copy_(value)
        if ckpt.rng:
            restore_rng(ckpt.state["rng"], ckpt.rng)
        self.step = ckpt.step
        self.lr_scale = float(ckpt.state.get("scheduler", {}).get("lr_scale", 1.0))
        trainer_state = ckpt.state.get("trainer", {})
        self.skipped_steps = int(trainer_state.get("skipped_steps", 0))
        self.rollbacks = int(trainer_state.get("rollbacks", 0))
        self.last_metrics = ckpt.state.get("metrics", {})

    def _checkpoint(self) -> Path | None:
        path = None
        if self.dist.is_main:
            name = next(iter(self.optimizers))
            single = self._single_optimizer
            path = save_checkpoint(
                self.run_folder.checkpoints,
                self.step,
                model=self.module,
                optimizer=self.optimizers[name] if single else self.optimizers,
                param_names=self.param_names[name] if single else self.param_names,
                state={
                    "scheduler": {"lr_scale": self.lr_scale, "schedule": self.tcfg.schedule, "base_lr": self.tcfg.lr},
                    "trainer": {
                        **self._trainer_state(),
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
            self._load_checkpoint(ckpt)
            where = f"checkpoint {ckpt.path.name}"
        else:
            self.module.load_state_dict(self._fresh_module().state_dict())
            for optimizer in self.optimizers.values():
                optimizer.state.clear()
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

    # ------------------------------------------------------------ logs

    def _log(self, values: dict[str, float], rate: float, skipped: bool, elapsed: float) -> dict[str, Any]:
        from swaplab.train.trainer import learning_rate

        keys = sorted(values)
        reduced = self.dist.reduce_mean([values[k] for k in keys])
        row: dict[str, Any] = {"step": self.step}
        row.update({k: (v if math.isfinite(v) else None) for k, v in zip(keys, reduced)})
        row.update(
            {
                "lr": learning_rate(self.step - 1, self.tcfg, self.lr_scale),
                "lr_scale": self.lr_scale,
                self.rate_key: round(rate, 3),
                **self._log_extra(),
                "time_s": round(elapsed, 3),
            }
        )
        if skipped:
            row["skipped"] = True
        self.last_metrics = row
        if self.dist.is_main:
            self.run_folder.append_metrics(row)
            if self.tb is not None:
                for key, value in row.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                        self.tb.add_scalar(key, value, self.step)
        return row

    @staticmethod
    def _postfix(row: dict[str, Any]) -> dict[str, str]:
        out = {}
        for key in ("loss", "d_loss"):
            if key in row:
                out[key] = f"{row[key]:.4f}" if row[key] is not None else "nan"
        return out

    # ------------------------------------------------------------ the loop

    def run(self):  # -> RunResult
        from tqdm import tqdm

        from swaplab.train.trainer import RunResult, stop_on_signals

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
            self._finish(result)
            return result

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
        self.module.train()
        with stop_on_signals(flags):
            while self.step < tcfg.steps:
                applied, values = self.train_step()
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
                    log.warning("step %d: non-finite loss or gradient (%s): update skipped", self.step, values)
                else:
                    bad_in_a_row = 0
                if self.step % tcfg.log_every == 0 or bad or self.step == tcfg.steps:
                    now = time.perf_counter()
                    rate = self.samples_per_step * window_steps / max(now - window_start, 1e-9)
                    row = self._log(values, rate, bool(bad), elapsed)
                    window_start, window_steps = now, 0
                    if tcfg.time_budget_s > 0 and self.step > self.start_step:
                        # With a time budget the step cap is usually far away: show the steps the
                        # budget will reach, so the bar's ETA is the budget's end, not hours away.
                        steps_per_s = (self.step - self.start_step) / max(elapsed, 1e-9)
                        reachable = self.step + int(steps_per_s * max(tcfg.time_budget_s - elapsed, 0.0))
                        bar.total = max(self.step, min(tcfg.steps, reachable))
                    bar.set_postfix(
                        **self._postfix(row), **{self.rate_key.removesuffix("_per_s") + "_s": f"{rate:.1f}"}
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
                    window_start, window_steps = time.perf_counter(), 0  # throughput counts training only
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
        result.faces_per_s = self.samples_per_step * (self.step - self.start_step) / max(result.seconds, 1e-9)
        if self.step != last_checkpoint_step:
            result.checkpoint = self._checkpoint()
        self._finish(result)
        return result

    def _wants_final_preview(self, result: Any) -> bool:
        return result.stop_reason != "nothing to do"

    def _finish(self, result: Any) -> None:
        result.step = self.step
        result.metrics = self.last_metrics
        result.skipped_steps = self.skipped_steps
        result.rollbacks = self.rollbacks
        result.warnings = self.warnings
        if result.checkpoint is None:
            found = list_checkpoints(self.run_folder.checkpoints)
            result.checkpoint = found[-1][1] if found else None
        if self.dist.is_main:
            if self._wants_final_preview(result):
                self._preview()
            self.run_folder.end_session(end_step=self.step, reason=result.stop_reason)
            if self.tb is not None:
                self.tb.close()
        self.dist.barrier()


def run_session(trainer_cls: type[TrainingLoop], cfg: Any):  # -> RunResult
    """Join the process group (under torchrun), run ``trainer_cls(cfg, ...)``, leave the group."""
    import torch.distributed as dist

    from swaplab.train.trainer import init_distributed

    dist_info, device = init_distributed(cfg.trainer.device)
    try:
        return trainer_cls(cfg, dist_info, device).run()  # type: ignore[call-arg]
    finally:
        if dist_info.owns_group and dist.is_initialized():
            dist.destroy_process_group()
