"""The swap-detector recipe: a small real-vs-swapped classifier trained on aligned face crops.

The evaluator trains one per model it scores (``swaplab.evaluate.detectability``): it writes the
training crops to a safetensors file (``write_crops``) and runs this recipe on it. Each step draws
half real and half swapped crops, a pure function of (seed, step); with group labels each batch
takes a real crop and a swap of the same groups, so the only difference the gradient sees is the
swap, not who is in the photo. Augmentation re-encodes half the crops as JPEG (both classes
alike: the detector must not learn "no JPEG blocks"), mirrors them and shifts them by whole pixels.

Domain adaptation (DANN; Ganin and Lempitsky, ICML 2015): with ``data.target_crops`` (unlabelled
crops of another domain: another generator's swaps and real faces) and ``adaptation.weight`` > 0,
each step also feeds a target batch, and a domain classifier on the pooled features, behind a
gradient reversal, learns to tell the domains apart while the features learn to hide them:
``L = BCE(real/swapped on source) + weight * BCE(domain on source and target)``, the reversal's
strength rising as ``2 / (1 + exp(-10 p)) - 1`` over the run's progress p (Ganin's schedule).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from swaplab.config import ConfigError, config_group, group_field
from swaplab.models.swap_detector import Crops, SwapDetector, SwapDetectorConfig, prepare_crops
from swaplab.train.augment import AugmentConfig, Augmenter
from swaplab.train.checkpoint import write_tensors
from swaplab.train.config import TrainerConfig, register_trainer
from swaplab.train.data import stream_seed
from swaplab.train.recipe import RECIPES, Recipe, StepResult

Tensor = torch.Tensor


@dataclass
class DetectorDataConfig:
    """The training crops: a file written by ``write_crops``."""

    name: str = "crops"
    crops: str = ""  # safetensors: real, fake (uint8 N x 3 x R x R) and optional real_groups, fake_groups
    paired_batches: bool = True  # with groups: each batch holds a real crop and a swap of the same groups
    target_crops: str = ""  # domain adaptation: crops of the target domain (their labels are not used)


@dataclass
class AdaptationConfig:
    """Domain-adversarial training of the detector (off with weight 0)."""

    weight: float = 0.0  # the domain loss' weight
    schedule: Literal["ganin", "constant"] = "ganin"  # the gradient reversal's strength over the run


config_group("data").register("crops")(DetectorDataConfig)
config_group("augment").register("detector")(
    functools.partial(
        AugmentConfig,
        warp=False,
        rotation_deg=0.0,
        scale=0.0,
        translation=0.0,
        shift_pixels=3,  # alignment jitter in whole pixels: resampling would blur the texture it looks at
        flip_prob=0.5,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue_deg=0.0,
        padding="reflection",
        jpeg_prob=0.5,
        jpeg_quality=(60, 95),
    )
)
register_trainer(
    "detector",
    steps=300,
    batch_size=32,
    optimizer="adamw",
    lr=3e-3,
    betas=(0.9, 0.999),
    weight_decay=5e-4,  # on conv and linear weights only (see ``param_groups``)
    warmup_steps=20,
    schedule="cosine",
    final_lr_ratio=0.0,
    log_every=50,
    preview_every=0,
    checkpoint_every=0,
    keep_last=1,
    progress=False,
)
#: For tests: a few seconds on one thread, fp32 so scores are bit-stable across machines.
register_trainer(
    "detector-test", like="detector", steps=120, batch_size=16, warmup_steps=10, precision="fp32", channels_last=False
)


@dataclass
class DetectorTrainConfig:
    """A swap detector's training run."""

    model: SwapDetectorConfig = group_field(SwapDetectorConfig, "model")
    data: DetectorDataConfig = group_field(DetectorDataConfig, "data")
    augment: AugmentConfig = group_field("detector", "augment")
    trainer: TrainerConfig = group_field("detector", "trainer")
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    run_dir: str = "runs/swap-detector"

    def __post_init__(self) -> None:
        if self.trainer.batch_size < 2:
            raise ConfigError(f"trainer.batch_size must be >= 2 (one of each class), got {self.trainer.batch_size}")
        if self.adaptation.weight > 0 and not self.model.domain_head:
            raise ConfigError("adaptation.weight > 0 needs a domain classifier: model.domain_head > 0")


#: Whole detector runs by name (``swaplab eval --detector NAME``): the evaluator's default and the tests'.
DETECTOR_PRESETS = config_group("detector")
DETECTOR_PRESETS.register("default")(DetectorTrainConfig)
#: Domain-adversarial: adapts to ``data.target_crops`` (the default's settings otherwise). The domain loss'
#: weight 0.1 was chosen with benchmarks/bench_domain_adaptation.py: at 1.0 the reversed gradient wiped out
#: what the detector had learned and its AUC on the target fell below the unadapted one's.
DETECTOR_PRESETS.register("dann")(
    lambda: DetectorTrainConfig(
        model=config_group("model").create("swap-detector-dann"), adaptation=AdaptationConfig(weight=0.1)
    )
)
DETECTOR_PRESETS.register("test")(
    lambda: DetectorTrainConfig(
        model=config_group("model").create("swap-detector-test"),
        trainer=config_group("trainer").create("detector-test"),
    )
)


def _group_ids(groups: Sequence[Hashable] | None, count: int) -> Tensor | None:
    if groups is None:
        return None
    groups = list(groups)
    if len(groups) != count:
        raise ValueError(f"{len(groups)} group labels for {count} crops")
    return torch.tensor(groups, dtype=torch.int64)


def write_crops(
    path: str | Path,
    real: Crops,
    fake: Crops,
    resolution: int,
    real_groups: Sequence[Hashable] | None = None,
    fake_groups: Sequence[Hashable] | None = None,
) -> Path:
    """Write a detector's training crops (at its ``resolution``) and their group labels, atomically.

    Labels may be any hashables; they are stored as integers (equal labels, equal integers)."""
    tensors = {"real": prepare_crops(real, resolution, "real"), "fake": prepare_crops(fake, resolution, "fake")}
    if real_groups is not None and fake_groups is not None:
        index: dict[Hashable, int] = {}
        ids = [index.setdefault(g, len(index)) for g in [*real_groups, *fake_groups]]
        tensors["real_groups"] = _group_ids(ids[: len(real_groups)], len(tensors["real"]))  # type: ignore[assignment]
        tensors["fake_groups"] = _group_ids(ids[len(real_groups) :], len(tensors["fake"]))  # type: ignore[assignment]
    return write_tensors(tensors, path, {"format": "swaplab-detector-crops"})


@RECIPES.register("swap-detector")
class SwapDetectorRecipe(Recipe):
    """Trains ``SwapDetector`` on the crops in ``data.crops``."""

    name = "swap-detector"
    config_type = DetectorTrainConfig

    def __init__(self, cfg: DetectorTrainConfig, session: Any) -> None:
        super().__init__(cfg, session)
        if not cfg.data.crops or not Path(cfg.data.crops).is_file():
            raise ConfigError(f"data.crops must name a crops file written by write_crops, got {cfg.data.crops!r}")
        tensors = load_file(cfg.data.crops)
        self.real, self.fake = tensors["real"], tensors["fake"]
        if self.real.shape[-1] != cfg.model.resolution or self.fake.shape[-1] != cfg.model.resolution:
            raise ConfigError(f"{cfg.data.crops}: crops are not {cfg.model.resolution} px (model.resolution)")
        self.pairs = None
        if cfg.data.paired_batches and "real_groups" in tensors:
            self.pairs = _group_pairs(tensors["real_groups"].tolist(), tensors["fake_groups"].tolist())
        self.augmenter = Augmenter(cfg.augment)
        self.target: Tensor | None = None
        if cfg.adaptation.weight > 0:
            if not cfg.data.target_crops or not Path(cfg.data.target_crops).is_file():
                raise ConfigError("adaptation.weight > 0 needs data.target_crops: crops of the domain to adapt to")
            target = load_file(cfg.data.target_crops)
            self.target = torch.cat([target["real"], target["fake"]])

    def build(self) -> nn.Module:
        return SwapDetector(self.cfg.model)

    def param_groups(self, module: nn.Module) -> dict[str, list[dict[str, Any]]]:
        # Weight decay on conv and linear weights only, not on norms or biases.
        decay = [p for p in module.parameters() if p.ndim > 1]
        no_decay = [p for p in module.parameters() if p.ndim <= 1]
        return {"model": [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]}

    def _indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        half = self.session.trainer.batch_size // 2
        rng = np.random.default_rng(stream_seed("detector-batch", self.session.trainer.seed, step))
        if self.pairs:
            chosen = rng.choice(len(self.pairs), half, replace=len(self.pairs) < half)
            real = np.array([rng.choice(self.pairs[g][0]) for g in chosen])
            fake = np.array([rng.choice(self.pairs[g][1]) for g in chosen])
            return real, fake
        n_real, n_fake = len(self.real), len(self.fake)
        return rng.choice(n_real, half, replace=n_real < half), rng.choice(n_fake, half, replace=n_fake < half)

    def _augmented(self, crops: Tensor, step: int, stream: str) -> Tensor:
        session = self.session
        generator = torch.Generator().manual_seed(stream_seed(stream, session.trainer.seed, step))
        batch = self.augmenter({"image": crops.float().div(255.0)}, generator)["target"]
        return batch.to(session.device).contiguous(memory_format=session.memory_format)

    def reversal(self, step: int) -> float:
        """The gradient reversal's strength at ``step`` (Ganin's schedule rises from 0 to 1)."""
        if self.cfg.adaptation.schedule == "constant":
            return 1.0
        progress = step / max(1, self.session.trainer.steps)
        return float(2.0 / (1.0 + np.exp(-10.0 * progress)) - 1.0)

    def train_step(self, step: int) -> StepResult:
        from swaplab.train.session import apply_gradients

        session, detector = self.session, self.module
        real_idx, fake_idx = self._indices(step)
        batch = self._augmented(torch.cat([self.real[real_idx], self.fake[fake_idx]]), step, "detector-augment")
        half = len(real_idx)
        labels = torch.cat([torch.zeros(half), torch.ones(half)]).to(session.device)
        values: dict[str, float] = {}
        target = None
        if self.target is not None:
            rows = np.random.default_rng(stream_seed("detector-target", session.trainer.seed, step))
            picked = torch.from_numpy(rows.choice(len(self.target), len(batch), replace=len(self.target) < len(batch)))
            target = self._augmented(self.target[picked], step, "detector-target-augment")
        with session.autocast():
            # Source and target in one forward pass: batch norm then sees the mixture in training, as its
            # running statistics (which mix both) present it when scoring either domain.
            pooled = detector.features(batch if target is None else torch.cat([batch, target]))
            loss = F.binary_cross_entropy_with_logits(detector.classify(pooled[: len(batch)]).float(), labels)
            if target is not None:
                domains = torch.cat([torch.zeros(len(batch)), torch.ones(len(target))]).to(session.device)
                strength = self.reversal(step)
                domain_loss = F.binary_cross_entropy_with_logits(
                    detector.domain_logits(pooled, strength).float(), domains
                )
                values.update({"loss/detection": float(loss.detach()), "loss/domain": float(domain_loss.detach())})
                values["reversal"] = strength
                loss = loss + self.cfg.adaptation.weight * domain_loss
        loss.backward()
        applied, grad_norm = apply_gradients(self.optimizers["model"], loss.detach(), session.trainer.grad_clip)
        return StepResult(applied, {"loss": float(loss.detach()), "grad_norm": grad_norm, **values})

    def data_hashes(self) -> dict[str, Any]:
        from swaplab.io.atomic import sha256_file

        return {"crops": {"path": self.cfg.data.crops, "sha256": sha256_file(self.cfg.data.crops)}}

    @classmethod
    def export(
        cls, cfg: DetectorTrainConfig, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]
    ) -> dict[str, Any]:
        super().export(cfg, tensors, out_dir, state)
        return {"swapper": None, "conventions": "crops N x 3 x R x R RGB in [0, 1] -> logits N of 'swapped'"}


def _group_pairs(real_groups: list[int], fake_groups: list[int]) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """For each group holding both classes: (its real indices, its swapped indices), in first-seen order."""
    real_of: dict[int, list[int]] = {}
    fake_of: dict[int, list[int]] = {}
    for i, label in enumerate(real_groups):
        real_of.setdefault(label, []).append(i)
    for i, label in enumerate(fake_groups):
        fake_of.setdefault(label, []).append(i)
    both = [label for label in real_of if label in fake_of]
    return [(np.array(real_of[label]), np.array(fake_of[label])) for label in both] or None
