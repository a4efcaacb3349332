"""The per-pair recipe: DeepFakes and DeepFaceLab's LIAE autoencoders trained on two facesets.

``TrainConfig`` = ``model`` (a per-pair preset: ``model=liae-cpu``), ``data`` (the two facesets
and the held-out split), ``loss`` (``loss=dfl``), ``augment``, ``trainer`` (``trainer=cpu-quick``)
and ``run_dir``. Each step draws both sides' batches (a pure function of seed, step, micro-step
and rank), warps and jitters them, reconstructs both through the shared parts in one forward
(what DistributedDataParallel wraps), and sums both sides' losses; gradient accumulation and DDP
are exact. Previews show src, dst, their reconstructions, the swap and the masks on held-out faces.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from swaplab.config import ConfigError, group_field, to_dict
from swaplab.losses import LossConfig, LossTerms, ReconstructionObjective
from swaplab.models import ModelConfig, create_model
from swaplab.train.augment import AugmentConfig, Augmenter
from swaplab.train.config import TrainerConfig
from swaplab.train.data import PairData, stream_seed, to_float
from swaplab.train.preview import preview_grid, save_preview
from swaplab.train.recipe import RECIPES, Recipe, StepResult

Tensor = torch.Tensor


@dataclass
class DataConfig:
    """The two facesets of a pair and how they are split and held."""

    src: str = ""  # faceset folder of the source identity (the face that will appear)
    dst: str = ""  # faceset folder of the destination (the face that gets replaced)
    holdout: float = 4  # faces per side kept out for previews/evaluation: >= 1 a count, < 1 a fraction
    seed: int = 0  # seeds the held-out split and the sample order
    cache: bool = True  # decode every crop once into memory (uint8); False decodes per batch
    allow_damaged: bool = False  # train on a faceset's intact faces when some of its shards are damaged


@dataclass
class TrainConfig:
    """Everything a per-pair training run depends on; saved as the run's ``config.yaml``."""

    model: ModelConfig = group_field("liae-cpu", "model")
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = group_field("dfl", "loss")
    augment: AugmentConfig = group_field(AugmentConfig, "augment")
    trainer: TrainerConfig = group_field(TrainerConfig, "trainer")
    run_dir: str = "runs/default"

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir)


@RECIPES.register("per-pair")
class PerPairRecipe(Recipe):
    """Trains one per-pair model on ``data.src`` and ``data.dst``."""

    name = "per-pair"
    config_type = TrainConfig
    rate_key = "faces_per_s"

    def __init__(self, cfg: TrainConfig, session: Any) -> None:
        super().__init__(cfg, session)
        if not cfg.data.src or not cfg.data.dst:
            raise ConfigError("data.src and data.dst must name the two faceset folders (data.src=... data.dst=...)")
        self.data = PairData(
            cfg.data.src,
            cfg.data.dst,
            cfg.model.resolution,
            holdout=cfg.data.holdout,
            seed=cfg.data.seed,
            cache=cfg.data.cache,
            allow_damaged=cfg.data.allow_damaged,
        )
        self.objective = ReconstructionObjective(cfg.loss).to(session.device)
        self.augmenter = Augmenter(cfg.augment)
        self.ddp: nn.Module | None = None
        self.forward: nn.Module | None = None

    def build(self) -> nn.Module:
        return create_model(self.cfg.model)

    def start(self) -> None:
        # DDP wraps the model's forward(src, dst), which runs both reconstructions; compile wraps DDP.
        session, forward = self.session, self.module
        if session.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [session.device.index] if session.device.type == "cuda" else None
            self.ddp = forward = DistributedDataParallel(self.module, device_ids=device_ids)
        self.forward = torch.compile(forward) if session.trainer.compile else forward
        self.preview_faces = {
            side: to_float({side: faces}, session.device, session.trainer.channels_last)[side]
            for side, faces in self.data.preview_faces(session.trainer.preview_faces).items()
        }

    @property
    def samples_per_step(self) -> int:
        return 2 * super().samples_per_step  # both sides

    # ------------------------------------------------------------ one step

    def _augment(self, floats: dict[str, Tensor], step: int, micro: int) -> dict[str, dict[str, Tensor]]:
        """Both sides' augmented batches; random draws are seeded by (seed, step, micro, rank, side)."""
        session, out = self.session, {}
        for side, other in (("src", "dst"), ("dst", "src")):
            generator = torch.Generator(device=session.device)
            generator.manual_seed(stream_seed("augment", session.trainer.seed, step, micro, session.dist.rank, side))
            out[side] = self.augmenter(
                {"image": floats[side], "mask": floats[f"{side}_mask"], "eyes_mouth": floats[f"{side}_features"]},
                generator,
                reference=floats[other],
                reference_mask=floats[f"{other}_mask"],
            )
        return out

    def _loss(self, step: int, micro: int) -> LossTerms:
        session, tcfg = self.session, self.session.trainer
        raw = self.data.batch(
            step,
            batch_size=tcfg.batch_size,
            micro=micro,
            accumulate=tcfg.accumulate,
            rank=session.dist.rank,
            world_size=session.dist.world_size,
        )
        sides = self._augment(to_float(raw, session.device, tcfg.channels_last), step, micro)
        src_in = sides["src"]["warped"].contiguous(memory_format=session.memory_format)
        dst_in = sides["dst"]["warped"].contiguous(memory_format=session.memory_format)
        with session.autocast():
            out = self.forward(src_in, dst_in)
        # Losses in fp32: SSIM's variances are differences of nearly equal numbers.
        return self.objective.pair(
            (out.src_rgb.float(), out.src_mask.float()),
            (out.dst_rgb.float(), out.dst_mask.float()),
            sides["src"],
            sides["dst"],
        )

    def train_step(self, step: int) -> StepResult:
        """One optimiser step (with accumulation): loss, loss/<term>, grad_norm."""
        from swaplab.train.session import apply_gradients

        accumulate = self.session.trainer.accumulate
        total = torch.zeros((), device=self.session.device)
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
        applied, grad_norm = apply_gradients(self.optimizers["model"], total, self.session.trainer.grad_clip)
        values = {f"loss/{key}": float(value) for key, value in components.items()}
        values.update(loss=float(total), grad_norm=grad_norm)
        return StepResult(applied, values)

    # ------------------------------------------------------------ records

    def samples_seen(self, step: int) -> int:
        """Global samples per side drawn by ``step`` (all ranks, all micro-steps)."""
        tcfg = self.session.trainer
        return step * tcfg.accumulate * self.session.dist.world_size * tcfg.batch_size

    def preview(self, step: int) -> Path | None:
        if not len(self.preview_faces["src"]):
            return None
        with self.session.autocast():
            grid = preview_grid(self.module, self.preview_faces["src"], self.preview_faces["dst"], step)
        return save_preview(grid, self.session.previews, step)

    def data_hashes(self) -> dict[str, Any]:
        return self.data.content_hashes()

    def log_extra(self, step: int) -> dict[str, Any]:
        return {"epoch": {k: round(v, 4) for k, v in self.data.epochs(self.samples_seen(step)).items()}}

    def trainer_state(self, step: int) -> dict[str, Any]:
        return {"samples_per_side": self.samples_seen(step), "epochs": self.data.epochs(self.samples_seen(step))}

    # ------------------------------------------------------------ export

    @classmethod
    def export(
        cls, cfg: TrainConfig, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]
    ) -> dict[str, Any]:
        super().export(cfg, tensors, out_dir, state)
        return {
            "swapper": "per-pair",
            "identity": {"conditions_on": None, "loss_network": "dlib-resnet" if cfg.loss.identity.weight else None},
            "alignment": alignment_of(cfg.data.dst),
            "loss_config": to_dict(cfg.loss),
            "conventions": "input/output: float32 RGB (N, 3, R, R) in [0, 1]; swap(dst) -> (rgb, mask)",
        }


def alignment_of(faceset: str) -> dict[str, Any]:
    """The template and crop size a training faceset was aligned with: the swap stage must align alike."""
    from swaplab.facesets.format import FacesetError, read_header

    try:
        header = read_header(faceset)
    except FacesetError:
        return {"template": "whole_face"}
    return {"template": header.template, "faceset_crop_size": header.size}
