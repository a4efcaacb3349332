"""The training loop of one-shot GAN swappers (SimSwap-style): ``train_oneshot(cfg) -> RunResult``.

Each step draws this rank's (target, source) pairs (a pure function of seed and step, from
``peopleDevTrain`` people only), renders the swaps once, then
1. updates the discriminator on the targets (real) and the detached swaps (fake), with the
   gradient penalty every ``gan.gp_every`` steps (lazy regularisation);
2. updates the generator through the updated discriminator: adversarial, identity (through the
   frozen dlib port), same-identity reconstruction and feature-matching terms.
Both players use Adam with SimSwap's lr 4e-4 and betas (0, 0.99) by default, bf16 autocast and
channels-last where the hardware has them, and losses in fp32. The session around the step is
the shared ``swaplab.train.loop.TrainingLoop`` (logs of G and D losses, atomic checkpoints of
both players and both optimisers, exact resume, budgets, signals, non-finite rollbacks); this
module adds the previews on fixed ``peopleDevTest`` pairs. Under ``torchrun`` the gradients of each player are
averaged across processes with ``torch.distributed`` (StyleGAN2-ADA's way: DistributedDataParallel
does not support the gradient penalty's double backward); rank 0 alone writes files.
"""

from __future__ import annotations

import json
import logging
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
from swaplab.train.data import stream_seed
from swaplab.train.loop import TrainingLoop, run_session
from swaplab.train.oneshot_config import OneShotTrainConfig
from swaplab.train.oneshot_data import OneShotBatch, OneShotPairs, eval_pairs, train_pairs
from swaplab.train.preview import compose_grid, save_preview
from swaplab.train.trainer import Distributed, RunResult, learning_rate

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


class OneShotTrainer(TrainingLoop):
    """One training session of a one-shot swapper; ``OneShotTrainer(cfg, ...).run()``."""

    rate_key = "images_per_s"

    def __init__(self, cfg: OneShotTrainConfig, dist_info: Distributed, device: torch.device) -> None:
        if not cfg.data.train:
            raise ConfigError("data.train must name the training faceset folder(s) (peopleDevTrain people)")
        if cfg.trainer.accumulate != 1:
            raise ConfigError("trainer.accumulate must be 1 for one-shot GAN training (use more processes instead)")
        self.cfg, self.tcfg, self.dist, self.device = cfg, cfg.trainer, dist_info, device
        resuming = self._open_run(cfg, OneShotTrainConfig, device)
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
            self.discriminator.parameters(),
            lr=self.d_lr(self.tcfg.lr),
            betas=self.tcfg.betas,
            eps=self.tcfg.eps,
            fused=fused,
        )
        self.optimizers = {"generator": self.g_opt, "discriminator": self.d_opt}
        self.module = self.pair
        self.samples_per_step = self.tcfg.batch_size * self.dist.world_size
        identity = None
        if cfg.loss.identity.weight:
            identity = TemplateChipIdentity(self.data.template, resolution).to(device).eval()
            identity.requires_grad_(False)
        self.objective = SimSwapObjective(cfg.loss, identity_encoder=identity).to(device)

        if resuming:
            self._resume()
        self.start_step = self.step

        self._start_session(
            cfg,
            lambda: {"train": self.data.content_hashes(), "eval": pairs.content_hashes() if cfg.data.eval else []},
        )

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

    def _trainer_state(self) -> dict[str, Any]:
        return {"kind": "oneshot", "pairs_seen": self.step * self.samples_per_step}

    def _fresh_module(self) -> nn.Module:
        return self._build_models()

    def _wants_final_preview(self, result: Any) -> bool:
        # A finished run evaluated again still needs its fixed-pair strips for the study report.
        return super()._wants_final_preview(result) or not (self.run_folder.previews / "eval-swaps.png").is_file()


def train_oneshot(cfg: OneShotTrainConfig) -> RunResult:
    """Train (or resume) the one-shot swapper ``cfg`` describes in ``cfg.run_dir``.

    An existing run folder resumes from its latest good checkpoint; its saved config must match
    ``cfg`` except for ``trainer.steps`` and ``trainer.time_budget_s``. Under ``torchrun`` every
    process calls this; rank 0 alone writes files.
    """
    return run_session(OneShotTrainer, cfg)


def read_eval_pairs(run_dir: str | Path) -> dict[str, Any]:
    """``previews/eval-pairs.json`` of a one-shot run (the fixed pairs its previews show)."""
    return json.loads((Path(run_dir) / "previews" / "eval-pairs.json").read_text(encoding="utf-8"))
