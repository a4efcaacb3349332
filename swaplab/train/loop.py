"""The one training loop: a recipe's steps inside budgets, logs, checkpoints, resume and rollbacks.

``train(cfg)`` finds ``cfg``'s recipe, joins the process group under ``torchrun``, and runs
``TrainingLoop``: it opens the run folder (rank 0 saves the resolved config with its recipe's
name), seeds everything, has the recipe build its module and optimisers, resumes exactly from the
latest good checkpoint, then calls ``recipe.train_step`` until ``trainer.steps``, the time budget,
a signal or repeated non-finite steps intervene; around it a tqdm bar, logged rows
(``metrics.jsonl`` and TensorBoard, averaged over ranks), periodic previews and atomic
checkpoints, and rollback to the last good checkpoint with a lower LR. Models, data, losses and
pictures belong to the recipes; this module owns the order in which things happen.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from swaplab.config import ConfigError
from swaplab.io.atomic import remove_stale_temporaries
from swaplab.io.locks import exclusive
from swaplab.system import autocast_dtype
from swaplab.train.checkpoint import (
    Checkpoint,
    list_checkpoints,
    load_latest_good,
    remove_partial,
    restore_rng,
    save_checkpoint,
)
from swaplab.train.recipe import Recipe, Session, recipe_for_config
from swaplab.train.run import RunFolder
from swaplab.train.session import (
    Distributed,
    build_optimizer,
    init_distributed,
    learning_rate,
    seed_everything,
    set_learning_rate,
    stop_on_signals,
)

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What one training session did."""

    run_dir: Path
    start_step: int  # step the session started from (0, or the resumed checkpoint's)
    step: int  # optimiser steps completed at the end
    stop_reason: str  # "steps" | "time_budget" | "signal" | "nothing to do"
    recipe: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)  # the last logged row
    checkpoint: Path | None = None  # the final checkpoint
    resumed_from: Path | None = None
    seconds: float = 0.0  # wall time of the training loop
    samples_per_s: float = 0.0  # samples through forward and backward, all ranks
    skipped_steps: int = 0  # non-finite steps skipped
    rollbacks: int = 0  # restores of the last checkpoint after repeated non-finite steps
    warnings: list[str] = field(default_factory=list)

    @property
    def faces_per_s(self) -> float:  # the name per-pair runs have always reported
        return self.samples_per_s


class TrainingLoop:
    """One session of one run: ``TrainingLoop(recipe_cls, cfg, dist, device).run()``."""

    def __init__(self, recipe_cls: type[Recipe], cfg: Any, dist: Distributed, device: torch.device) -> None:
        self.cfg, self.tcfg, self.dist, self.device = cfg, cfg.trainer, dist, device
        self.recipe_cls = recipe_cls
        if self.tcfg.threads:
            torch.set_num_threads(self.tcfg.threads)
        self.run_folder = RunFolder(cfg.run_dir)
        self.warnings: list[str] = []
        self.lr_scale, self.skipped_steps, self.rollbacks, self.step = 1.0, 0, 0, 0
        self.cpu_seconds = 0.0  # CPU time of this session's steps
        self.last_metrics: dict[str, Any] = {}
        self.resumed_from: Path | None = None
        # A time budget counts the whole run: the seconds trained up to the checkpoint resumed from
        # (kept in each checkpoint), plus this session's, so a killed run does not get a fresh budget.
        self.prior_seconds = 0.0
        self.session_started: float | None = None
        # One process trains a run at a time: rank 0 holds the run folder's lock for the session.
        self.lock = contextlib.ExitStack()
        if dist.is_main and self.run_folder.root.is_dir():
            self._hold_lock()
        resuming = self.run_folder.exists()
        if resuming:
            self.run_folder.check_resumable(cfg, recipe_cls)
        session = Session(
            trainer=self.tcfg,
            dist=dist,
            device=device,
            amp_dtype=autocast_dtype(self.tcfg.precision, device),
            memory_format=torch.channels_last if self.tcfg.channels_last else torch.contiguous_format,
            run_dir=self.run_folder.root,
            resuming=resuming,
        )
        seed_everything(self.tcfg.seed)
        self.recipe = recipe_cls(cfg, session)
        # Checked before anything is written, so a command that cannot start leaves no run folder.
        if dist.is_main:
            self.run_folder.create()
            if not self.locked:  # a new folder: locked as soon as it exists
                self._hold_lock()
            self.run_folder.save_config(cfg, recipe_cls.name)
        dist.barrier()
        self.module = self._fresh_module()
        groups = self.recipe.param_groups(self.module)
        # A group's ``lr_scale`` is the recipe's to set and stays out of checkpoints: the schedule
        # applies it at every step, so a checkpoint written before a scale changed resumes right.
        self.lr_scales = {name: [g.pop("lr_scale", 1.0) for g in group_list] for name, group_list in groups.items()}
        self.optimizers = {name: build_optimizer(self.tcfg, group_list, device) for name, group_list in groups.items()}
        self.param_names = self._param_names()
        self.recipe.module, self.recipe.optimizers = self.module, self.optimizers
        if resuming:
            self._resume()
        self.start_step = self.step
        self.recipe.start()
        self._start_session()

    locked = False

    def _hold_lock(self) -> None:
        self.lock.enter_context(exclusive(self.run_folder.root / ".lock", f"run {self.run_folder.root}"))
        self.locked = True
        # Holding the lock, nothing else writes here: temporaries of a killed run can go.
        for folder in (self.run_folder.root, self.run_folder.checkpoints, self.run_folder.previews):
            for path in remove_stale_temporaries(folder):
                log.warning("removed a temporary file left by a killed process: %s", path)

    def _fresh_module(self) -> nn.Module:
        torch.manual_seed(self.tcfg.seed)  # the initial weights depend on the seed alone
        module = self.recipe.build()
        return module.to(self.device).to(memory_format=self.recipe.session.memory_format)

    def _param_names(self) -> dict[str, list[str]]:
        names = {id(p): n for n, p in self.module.named_parameters()}
        return {
            key: [names[id(p)] for group in opt.param_groups for p in group["params"]]
            for key, opt in self.optimizers.items()
        }

    def _start_session(self) -> None:
        """Rank 0 records the session in ``manifest.json`` and opens TensorBoard after the resumed step."""
        self.tb = None
        if self.dist.is_main:
            self.run_folder.start_session(
                self.cfg,
                seed=self.tcfg.seed,
                facesets=self.recipe.data_hashes(),
                world_size=self.dist.world_size,
                start_step=self.step,
            )
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_folder.tb), purge_step=self.step + 1 if self.step else None)

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
            self.prior_seconds = float(ckpt.state.get("trainer", {}).get("train_seconds", 0.0))
            log.info("resuming %s from %s (step %d)", self.run_folder.root, ckpt.path.name, ckpt.step)
        if self.dist.is_main:
            self.run_folder.truncate_metrics(self.step)

    def _load_checkpoint(self, ckpt: Checkpoint) -> None:
        missing, unexpected = self.module.load_state_dict(self.recipe.complete_checkpoint(ckpt.model), strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"{ckpt.path}: the checkpoint does not fit this model "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]}); was model.* changed?"
            )
        states = {next(iter(self.optimizers)): ckpt.optimizer} if self._single_optimizer else ckpt.optimizer
        if set(states) != set(self.optimizers):
            raise ConfigError(
                f"{ckpt.path}: holds optimisers {sorted(states)}, this recipe has {sorted(self.optimizers)}"
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
                        **self.recipe.trainer_state(self.step),
                        "recipe": self.recipe_cls.name,
                        "skipped_steps": self.skipped_steps,
                        "rollbacks": self.rollbacks,
                        "world_size": self.dist.world_size,
                        "train_seconds": self._trained_seconds(),
                    },
                    "metrics": self.last_metrics,
                },
                keep_last=self.tcfg.keep_last,
                keep_every=self.tcfg.keep_every,
            )
        self.dist.barrier()
        return path

    def _trained_seconds(self) -> float:
        """Seconds of training so far over every session (what a time budget counts)."""
        session = 0.0 if self.session_started is None else time.perf_counter() - self.session_started
        return round(self.prior_seconds + session, 3)

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
        keys = sorted(values)
        reduced = self.dist.reduce_mean([values[k] for k in keys])
        row: dict[str, Any] = {"step": self.step}
        row.update({k: (v if math.isfinite(v) else None) for k, v in zip(keys, reduced)})
        row.update(
            {
                "lr": learning_rate(self.step - 1, self.tcfg, self.lr_scale),
                "lr_scale": self.lr_scale,
                self.recipe.rate_key: round(rate, 3),
                **self.recipe.log_extra(self.step),
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

    def _preview(self) -> None:
        if self.dist.is_main:
            self.module.eval()
            try:
                self.recipe.preview(self.step)
            finally:
                self.module.train()
            self.run_folder.plot_curves()

    def _validate(self) -> None:
        """The recipe's held-out numbers, logged as a row of their own and kept for the checkpoint."""
        if not self.dist.is_main:
            return
        self.module.eval()
        try:
            values = self.recipe.validate(self.step)
        finally:
            self.module.train()
        if values:
            log.info("step %d: %s", self.step, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
            self.run_folder.append_metrics({"step": self.step, **values})
            self.last_metrics = {**self.last_metrics, **values}

    # ------------------------------------------------------------ the loop

    def _timed_stretch_due(self, elapsed: float) -> bool:
        """Whether a time budget's final stretch starts now: ``trainer.final_stretch`` of the budget
        is left and the step-based stretch has not begun (a budget usually ends a run long before
        its step count would)."""
        t = self.tcfg
        return bool(
            t.final_stretch
            and t.time_budget_s > 0
            and not t.in_final_stretch(self.step)
            and elapsed >= (1 - t.final_stretch) * t.time_budget_s
        )

    def _begin_timed_stretch(self):
        """Start the final stretch at this step by ending the run where the stretch is the last
        ``final_stretch`` of its steps (``steps = step / (1 - final_stretch)``): at the rate so far,
        that is where the budget ends. The loop, the LR schedule and the recipe see the new count."""
        t = self.tcfg
        steps = max(self.step + 1, round(self.step / (1 - t.final_stretch)))
        self.tcfg = self.recipe.session.trainer = replace(t, steps=steps)
        log.info("final stretch from step %d of the time budget (trainer.steps now %d)", self.step, steps)
        return self.tcfg

    def run(self) -> RunResult:
        from tqdm import tqdm

        tcfg = self.tcfg
        result = RunResult(
            run_dir=self.run_folder.root,
            start_step=self.start_step,
            step=self.step,
            stop_reason="steps",
            recipe=self.recipe_cls.name,
        )
        result.resumed_from = self.resumed_from
        budget_spent = tcfg.time_budget_s > 0 and self.prior_seconds >= tcfg.time_budget_s
        if self.step >= tcfg.steps or budget_spent:
            log.info(
                "%s is already at step %d (trainer.steps=%d, %.0f of trainer.time_budget_s=%g s): nothing to do",
                self.run_folder.root,
                self.step,
                tcfg.steps,
                self.prior_seconds,
                tcfg.time_budget_s,
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
        started = window_start = self.session_started = time.perf_counter()
        cpu_started = time.process_time()
        window_steps = 0
        rate_label = self.recipe.rate_key.removesuffix("_per_s") + "_s"
        self.module.train()
        with stop_on_signals(flags):
            while self.step < tcfg.steps:
                lr = learning_rate(self.step, tcfg, self.lr_scale)
                for name, optimizer in self.optimizers.items():
                    set_learning_rate(optimizer, lr, self.lr_scales[name])
                outcome = self.recipe.train_step(self.step)
                self.step += 1
                window_steps += 1
                bar.update(1)
                elapsed = time.perf_counter() - started
                trained = self.prior_seconds + elapsed  # what the budget counts
                out_of_time = tcfg.time_budget_s > 0 and trained >= tcfg.time_budget_s
                stretch_due = self._timed_stretch_due(trained)
                flagged = [not outcome.applied, bool(flags.get("signal")), out_of_time, stretch_due]
                bad, signalled, timed_out, stretch_now = self.dist.reduce_max([float(f) for f in flagged])
                if stretch_now and not timed_out:
                    tcfg = self._begin_timed_stretch()
                    bar.total = tcfg.steps
                if bad:
                    self.skipped_steps += 1
                    bad_in_a_row += 1
                    log.warning("step %d: non-finite loss or gradient (%s): update skipped", self.step, outcome.values)
                else:
                    bad_in_a_row = 0
                stopping = bool(signalled or timed_out)  # the last step of a session is always logged
                if self.step % tcfg.log_every == 0 or bad or self.step == tcfg.steps or stopping:
                    now = time.perf_counter()
                    rate = self.recipe.samples_per_step * window_steps / max(now - window_start, 1e-9)
                    row = self._log(outcome.values, rate, bool(bad), elapsed)
                    window_start, window_steps = now, 0
                    if tcfg.time_budget_s > 0 and self.step > self.start_step:
                        # With a time budget the step cap is usually far away: show the steps the
                        # budget will reach, so the bar's ETA is the budget's end, not hours away.
                        steps_per_s = (self.step - self.start_step) / max(elapsed, 1e-9)
                        reachable = self.step + int(steps_per_s * max(tcfg.time_budget_s - trained, 0.0))
                        bar.total = max(self.step, min(tcfg.steps, reachable))
                    bar.set_postfix(**self._postfix(row), **{rate_label: f"{rate:.1f}"})
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
                    self._validate()
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
        self.cpu_seconds = time.process_time() - cpu_started
        result.samples_per_s = self.recipe.samples_per_step * (self.step - self.start_step) / max(result.seconds, 1e-9)
        if self.step != last_checkpoint_step:
            self._validate()  # before the final checkpoint, which keeps the numbers
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
            if self.recipe.wants_final_preview(result.stop_reason):
                self._preview()
            self.run_folder.end_session(
                end_step=self.step,
                reason=result.stop_reason,
                seconds=result.seconds,
                cpu_seconds=self.cpu_seconds,
            )
            if self.tb is not None:
                self.tb.close()
        self.dist.barrier()


def train(cfg: Any) -> RunResult:
    """Train (or resume) the run ``cfg`` describes in ``cfg.run_dir``, with the recipe of its type.

    An existing run folder resumes from its latest good checkpoint; its saved config must match
    ``cfg`` except for ``trainer.steps`` and ``trainer.time_budget_s``. Under ``torchrun`` every
    process calls this; rank 0 alone writes files.
    """
    import torch.distributed as dist

    recipe_cls = recipe_for_config(cfg)
    dist_info, device = init_distributed(cfg.trainer.device)
    loop = None
    try:
        loop = TrainingLoop(recipe_cls, cfg, dist_info, device)
        return loop.run()
    finally:
        if loop is not None:
            loop.lock.close()
        if dist_info.owns_group and dist.is_initialized():
            dist.destroy_process_group()
