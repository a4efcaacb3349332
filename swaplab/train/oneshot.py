"""The training loop of one-shot GAN swappers (SimSwap-style): ``train_oneshot(cfg) -> RunResult``.

Each step draws this rank's (target, source) pairs (a pure function of seed and step, from
``peopleDevTrain`` people only), renders the swaps once, then
1. updates the discriminator on the targets (real) and the detached swaps (fake), with the
   gradient penalty every ``gan.gp_every`` steps (lazy regularisation);
2. updates the generator through the updated discriminator: adversarial, identity (through the
   frozen dlib port), same-identity reconstruction and feature-matching terms.
Both players use Adam with SimSwap's lr 4e-4 and betas (0, 0.99) by default, bf16 autocast and
channels-last where the hardware has them, and losses in fp32. Around the loop, the per-pair
trainer's machinery: metrics.jsonl and TensorBoard (G and D losses), previews on fixed
``peopleDevTest`` pairs, atomic checkpoints of both players and both optimisers, exact resume,
budgets, signals, non-finite rollbacks. Under ``torchrun`` the gradients of each player are
averaged across processes with ``torch.distributed`` (StyleGAN2-ADA's way: DistributedDataParallel
does not support the gradient penalty's double backward); rank 0 alone writes files.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from swaplab.config import ConfigError
from swaplab.io.atomic import atomic_write_json
from swaplab.io.images import write_image
from swaplab.losses import LossTerms
from swaplab.losses.adversarial import SimSwapObjective
from swaplab.models.simswap import SimSwapGenerator, TemplateChipIdentity, create_discriminator
from swaplab.system import autocast_dtype
from swaplab.train.checkpoint import (
    Checkpoint,
    list_checkpoints,
    load_latest_good,
    remove_partial,
    restore_rng,
    save_checkpoint,
)
from swaplab.train.data import stream_seed
from swaplab.train.oneshot_config import OneShotTrainConfig
from swaplab.train.oneshot_data import OneShotBatch, OneShotPairs, eval_pairs, train_pairs
from swaplab.train.preview import compose_grid, save_preview
from swaplab.train.run import RunFolder
from swaplab.train.trainer import (
    Distributed,
    RunResult,
    init_distributed,
    learning_rate,
    seed_everything,
    stop_on_signals,
)

log = logging.getLogger(__name__)

Tensor = torch.Tensor

PREVIEW_COLUMNS = ("source", "target", "swap", "self-swap")


class GanPair(nn.Module):
    """The two players in one module, so one state dict (``generator.*``, ``discriminator.*``)
    checkpoints both."""

    def __init__(self, generator: SimSwapGenerator, discriminator: nn.Module) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator


def _to_hwc_uint8(images: Tensor) -> np.ndarray:
    return (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def _row(images: np.ndarray) -> np.ndarray:
    """(K, R, R, 3) -> one (R, K*R, 3) strip."""
    return np.concatenate(list(images), axis=1)


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


class OneShotTrainer:
    """One training session of a one-shot swapper; ``OneShotTrainer(cfg, ...).run()``."""

    def __init__(self, cfg: OneShotTrainConfig, dist_info: Distributed, device: torch.device) -> None:
        if not cfg.data.train:
            raise ConfigError("data.train must name the training faceset folder(s) (peopleDevTrain people)")
        if cfg.trainer.accumulate != 1:
            raise ConfigError("trainer.accumulate must be 1 for one-shot GAN training (use more processes instead)")
        self.cfg, self.tcfg, self.dist, self.device = cfg, cfg.trainer, dist_info, device
        self.run_folder = RunFolder(cfg.run_dir)
        self.warnings: list[str] = []
        self.lr_scale = 1.0
        self.skipped_steps = 0
        self.rollbacks = 0
        self.last_metrics: dict[str, Any] = {}

        resuming = self.run_folder.exists()
        if resuming:
            self.run_folder.check_resumable(cfg, OneShotTrainConfig)
        if self.dist.is_main:
            self.run_folder.create()
            self.run_folder.save_config(cfg)
        self.dist.barrier()

        self.amp_dtype = autocast_dtype(self.tcfg.precision, device)
        self.memory_format = torch.channels_last if self.tcfg.channels_last else torch.contiguous_format
        seed_everything(self.tcfg.seed)
        lists_dir = cfg.data.lists_dir or None
        resolution = cfg.model.resolution
        self.data = train_pairs(
            cfg.data.train,
            resolution,
            same_identity_ratio=cfg.data.same_identity_ratio,
            schedule=cfg.data.schedule,
            seed=cfg.data.seed,
            lists_dir=lists_dir,
            cache=cfg.data.cache,
        )
        self.eval_source = "peopleDevTest"
        if cfg.data.eval:
            pairs: OneShotPairs = eval_pairs(cfg.data.eval, resolution, seed=cfg.data.seed, lists_dir=lists_dir)
        else:
            pairs, self.eval_source = self.data, "peopleDevTrain (no data.eval given)"
        self.eval_batch = pairs.batch(0, batch_size=cfg.data.eval_pairs)
        if pairs is self.data:  # training pairs: show real swaps, not same-identity ones
            self.eval_batch = self._different_identity(self.eval_batch, pairs)

        self.pair = self._build_models()
        self.generator, self.discriminator = self.pair.generator, self.pair.discriminator
        self.param_names = {
            "generator": [f"generator.{n}" for n, _ in self.generator.named_parameters()],
            "discriminator": [f"discriminator.{n}" for n, _ in self.discriminator.named_parameters()],
        }
        fused = device.type in ("cpu", "cuda")
        self.g_opt = torch.optim.Adam(
            self.generator.parameters(), lr=self.tcfg.lr, betas=self.tcfg.betas, eps=self.tcfg.eps, fused=fused
        )
        self.d_opt = torch.optim.Adam(
            self.discriminator.parameters(), lr=self.d_lr(1.0), betas=self.tcfg.betas, eps=self.tcfg.eps, fused=fused
        )
        self.optimizers = {"generator": self.g_opt, "discriminator": self.d_opt}
        identity = None
        if cfg.loss.identity.weight:
            identity = TemplateChipIdentity(self.data.template, resolution).to(device).eval()
            identity.requires_grad_(False)
        self.objective = SimSwapObjective(cfg.loss, identity_encoder=identity).to(device)

        self.step = 0
        self.resumed_from: Path | None = None
        if resuming:
            self._resume()
        self.start_step = self.step

        self.tb = None
        if self.dist.is_main:
            hashes = self.data.content_hashes()
            self.run_folder.start_session(
                cfg,
                seed=self.tcfg.seed,
                facesets={"train": hashes, "eval": pairs.content_hashes() if cfg.data.eval else []},  # type: ignore[dict-item]
                world_size=self.dist.world_size,
                start_step=self.step,
            )
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_folder.tb), purge_step=self.step + 1 if self.step else None)

    # ------------------------------------------------------------ setup helpers

    @staticmethod
    def _different_identity(batch: OneShotBatch, pairs: OneShotPairs) -> OneShotBatch:
        """Replace same-identity sources of a fixed batch with another person's face (seeded)."""
        sources = []
        for k, same in enumerate(batch.same_identity.tolist()):
            target = pairs.ids.index(batch.target_ids[k])
            sources.append(pairs.source_for(target, 10**9 + k, False) if same else pairs.ids.index(batch.source_ids[k]))
        return batch._replace(
            source=pairs._images(sources),
            source_identity=pairs.identities[sources],
            same_identity=torch.zeros(len(sources), dtype=torch.bool),
            source_ids=[pairs.ids[s] for s in sources],
        )

    def d_lr(self, lr: float) -> float:
        """The discriminator's LR for a generator LR ``lr`` (same unless ``gan.d_lr`` is set)."""
        return lr * (self.cfg.gan.d_lr / self.tcfg.lr) if self.cfg.gan.d_lr else lr

    def _build_models(self) -> GanPair:
        torch.manual_seed(self.tcfg.seed)  # the initial weights depend on the seed alone
        pair = GanPair(SimSwapGenerator(self.cfg.model), create_discriminator(self.cfg.model))
        return pair.to(self.device).to(memory_format=self.memory_format)

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
        missing, unexpected = self.pair.load_state_dict(ckpt.model, strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"{ckpt.path}: the checkpoint does not fit this model "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]}); was model.* changed?"
            )
        if set(ckpt.optimizer) != set(self.optimizers):
            raise ConfigError(f"{ckpt.path}: not a one-shot GAN checkpoint (optimisers {sorted(ckpt.optimizer)})")
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(ckpt.optimizer[name])
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

    # ------------------------------------------------------------ one step

    def _autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )

    def _inputs(self, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """This rank's targets (N, 3, R, R), source identities (N, 128) and same-identity flags."""
        tcfg = self.tcfg
        batch = self.data.batch(step, batch_size=tcfg.batch_size, rank=self.dist.rank, world_size=self.dist.world_size)
        target = batch.target.to(self.device)
        if self.cfg.data.flip:
            generator = torch.Generator().manual_seed(stream_seed("oneshot-flip", self.tcfg.seed, step, self.dist.rank))
            flip = torch.rand(len(target), generator=generator) < 0.5
            target = torch.where(flip.view(-1, 1, 1, 1).to(self.device), target.flip(-1), target)
        target = target.contiguous(memory_format=self.memory_format)
        return target, batch.source_identity.to(self.device), batch.same_identity.to(self.device)

    def _set_lr(self, step: int) -> float:
        lr = learning_rate(step, self.tcfg, self.lr_scale)
        for group in self.g_opt.param_groups:
            group["lr"] = lr
        for group in self.d_opt.param_groups:
            group["lr"] = self.d_lr(lr)
        return lr

    def _apply(self, optimizer: torch.optim.Optimizer, module: nn.Module, total: Tensor) -> tuple[bool, float]:
        """Average this player's gradients across ranks, check them, step. Returns (finite, grad norm)."""
        params = [p for p in module.parameters() if p.requires_grad]
        average_gradients(params, self.dist.world_size)
        grads = [p.grad for p in params if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        finite = bool(torch.isfinite(total)) and bool(torch.isfinite(grad_norm))
        if finite:
            if self.tcfg.grad_clip > 0:
                torch.nn.utils.clip_grads_with_norm_(params, self.tcfg.grad_clip, grad_norm)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return finite, float(grad_norm)

    def train_step(self) -> tuple[bool, dict[str, float]]:
        """One discriminator and one generator update. Returns (both applied, logged values)."""
        step = self.step
        self._set_lr(step)
        target, source_identity, same = self._inputs(step)
        objective = self.objective
        with self._autocast():
            fake = self.generator(target, source_identity)

        # 1. the discriminator, on the detached swaps
        gp_every = self.cfg.gan.gp_every
        penalty = gp_every if step % gp_every == 0 else None
        with self._autocast():
            d_terms = objective.discriminator_loss(self.discriminator, target, fake.float(), penalty_every=penalty)
        d_terms.total.backward()
        d_ok, d_norm = self._apply(self.d_opt, self.discriminator, d_terms.total.detach())

        # 2. the generator, through the discriminator just updated (its weights frozen meanwhile)
        self.discriminator.requires_grad_(False)
        try:
            with self._autocast():
                fake_out = self.discriminator(fake) if objective.needs_fake_output else None
                real_out = None
                if objective.needs_real_output:
                    with torch.no_grad():
                        real_out = self.discriminator(target)
                g_terms: LossTerms = objective.generator_loss(
                    fake.float(), target.float(), source_identity, same, fake_out, real_out
                )
            g_terms.total.backward()
        finally:
            self.discriminator.requires_grad_(True)
        g_ok, g_norm = self._apply(self.g_opt, self.generator, g_terms.total.detach())

        values = {"loss": float(g_terms.total.detach()), "d_loss": float(d_terms.total.detach())}
        values.update({f"loss/{k}": float(v) for k, v in g_terms.components.items()})
        values.update({f"d_loss/{k}": float(v) for k, v in d_terms.components.items()})
        values.update(grad_norm=g_norm, d_grad_norm=d_norm)
        return d_ok and g_ok, values

    # ------------------------------------------------------------ outputs

    def _log(self, values: dict[str, float], images_per_s: float, skipped: bool, elapsed: float) -> dict[str, Any]:
        keys = sorted(values)
        reduced = self.dist.reduce_mean([values[k] for k in keys])
        row: dict[str, Any] = {"step": self.step}
        row.update({k: (v if math.isfinite(v) else None) for k, v in zip(keys, reduced)})
        row.update(
            lr=learning_rate(self.step - 1, self.tcfg, self.lr_scale),
            lr_scale=self.lr_scale,
            images_per_s=round(images_per_s, 3),
            time_s=round(elapsed, 3),
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

    @torch.no_grad()
    def render_eval_pairs(self) -> dict[str, np.ndarray]:
        """The fixed pairs' sources, targets, swaps and self-swaps as (K, R, R, 3) uint8 arrays."""
        batch = self.eval_batch
        was_training = self.generator.training
        self.generator.eval()
        try:
            target = batch.target.to(self.device).contiguous(memory_format=self.memory_format)
            with self._autocast():
                swap = self.generator(target, batch.source_identity.to(self.device))
                self_swap = self.generator(target, batch.target_identity.to(self.device))
        finally:
            self.generator.train(was_training)
        return {
            "source": _to_hwc_uint8(batch.source),
            "target": _to_hwc_uint8(batch.target),
            "swap": _to_hwc_uint8(swap),
            "self-swap": _to_hwc_uint8(self_swap),
        }

    def _preview(self) -> Path | None:
        if not self.dist.is_main:
            return None
        from swaplab.provenance import Provenance, write_marked_image

        images = self.render_eval_pairs()
        grid = compose_grid([images[c] for c in PREVIEW_COLUMNS], names=PREVIEW_COLUMNS, title=f"step {self.step}")
        path = save_preview(grid, self.run_folder.previews, self.step, model_id="swaplab-oneshot-training")
        folder = self.run_folder.previews
        # Strips for the study report: every run of a study shows the same pairs in the same order.
        provenance = Provenance.create("swaplab-oneshot-training", content=f"eval swaps step {self.step}")
        write_marked_image(folder / "eval-swaps.png", _row(images["swap"]), provenance)
        write_image(folder / "eval-sources.png", _row(images["source"]))
        write_image(folder / "eval-targets.png", _row(images["target"]))
        batch = self.eval_batch
        atomic_write_json(
            folder / "eval-pairs.json",
            {
                "resolution": self.cfg.model.resolution,
                "step": self.step,
                "people": self.eval_source,
                "pairs": [{"source": s, "target": t} for s, t in zip(batch.source_ids, batch.target_ids)],
            },
        )
        self.run_folder.plot_curves()
        return path

    def _checkpoint(self) -> Path | None:
        path = None
        if self.dist.is_main:
            path = save_checkpoint(
                self.run_folder.checkpoints,
                self.step,
                model=self.pair,
                optimizer=self.optimizers,
                param_names=self.param_names,
                state={
                    "scheduler": {"lr_scale": self.lr_scale, "schedule": self.tcfg.schedule, "base_lr": self.tcfg.lr},
                    "trainer": {
                        "kind": "oneshot",
                        "pairs_seen": self.step * self.tcfg.batch_size * self.dist.world_size,
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
        """Back to the last good checkpoint (or the initial weights) with a lower LR."""
        new_scale = self.lr_scale * self.tcfg.nan_lr_factor
        skipped, rollbacks = self.skipped_steps, self.rollbacks
        ckpt, warnings = load_latest_good(self.run_folder.checkpoints)
        self.warnings += warnings
        if ckpt is not None:
            self._load_checkpoint(ckpt)
            where = f"checkpoint {ckpt.path.name}"
        else:
            self.pair.load_state_dict(self._build_models().state_dict())
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
            self._finish(result)
            return result

        from tqdm import tqdm

        images_per_step = tcfg.batch_size * self.dist.world_size
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
        self.pair.train()
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
                    rate = images_per_step * window_steps / max(now - window_start, 1e-9)
                    row = self._log(values, rate, bool(bad), elapsed)
                    window_start, window_steps = now, 0
                    if tcfg.time_budget_s > 0 and self.step > self.start_step:
                        steps_per_s = (self.step - self.start_step) / max(elapsed, 1e-9)
                        reachable = self.step + int(steps_per_s * max(tcfg.time_budget_s - elapsed, 0.0))
                        bar.total = max(self.step, min(tcfg.steps, reachable))
                    bar.set_postfix(
                        g=f"{row['loss']:.3f}" if row.get("loss") is not None else "nan",
                        d=f"{row['d_loss']:.3f}" if row.get("d_loss") is not None else "nan",
                        img_s=f"{rate:.1f}",
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
                    window_start, window_steps = time.perf_counter(), 0
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
        result.faces_per_s = images_per_step * (self.step - self.start_step) / max(result.seconds, 1e-9)
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
            if result.stop_reason != "nothing to do" or not (self.run_folder.previews / "eval-swaps.png").is_file():
                self._preview()
            self.run_folder.end_session(end_step=self.step, reason=result.stop_reason)
            if self.tb is not None:
                self.tb.close()
        self.dist.barrier()


def train_oneshot(cfg: OneShotTrainConfig) -> RunResult:
    """Train (or resume) the one-shot swapper ``cfg`` describes in ``cfg.run_dir``.

    An existing run folder resumes from its latest good checkpoint; its saved config must match
    ``cfg`` except for ``trainer.steps`` and ``trainer.time_budget_s``. Under ``torchrun`` every
    process calls this; rank 0 alone writes files.
    """
    dist_info, device = init_distributed(cfg.trainer.device)
    try:
        return OneShotTrainer(cfg, dist_info, device).run()
    finally:
        if dist_info.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def read_eval_pairs(run_dir: str | Path) -> dict[str, Any]:
    """``previews/eval-pairs.json`` of a one-shot run (the fixed pairs its previews show)."""
    return json.loads((Path(run_dir) / "previews" / "eval-pairs.json").read_text(encoding="utf-8"))
