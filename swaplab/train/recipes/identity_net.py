"""The identity-network recipe: swaplab's own face embedder (``lfw-arcface``) trained with an ArcFace
margin on LFW's ``peopleDevTrain`` people (``swaplab train model=lfw-arcface``).

Each step draws a seeded batch of chips (``swaplab.train.identity_chips``), augments them (mirror,
small rotation, zoom and shift, brightness, contrast, greyscale), embeds them and takes the
cross-entropy of margin logits against the people (the margin grows over ``head.warmup_steps``).
Validation on held-out people calibrates the same-person cosine threshold the exported network
carries. ``swaplab identity build lfw-arcface`` trains this recipe into the user cache and
installs the result where ``IDENTITY_ENCODERS["lfw-arcface"]`` loads it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swaplab.config import config_group, from_dict, group_field, to_dict
from swaplab.identity.lfw_arcface import WEIGHTS_FORMAT, CompactFaceNet, IdentityNetConfig
from swaplab.losses.margin import MarginConfig, MarginHead, margin_logits
from swaplab.train.augment import AugmentConfig, Augmenter
from swaplab.train.checkpoint import write_tensors
from swaplab.train.config import TEST_SETTINGS, TrainerConfig, register_trainer
from swaplab.train.data import stream_seed
from swaplab.train.identity_chips import (
    ChipSet,
    IdentityDataConfig,
    batch_indices,
    build_chip_set,
    check_training_people,
    lfw_dir,
    split_validation,
)
from swaplab.train.recipe import RECIPES, Recipe, StepResult

Tensor = torch.Tensor

# -- presets ----------------------------------------------------------------------------------
config_group("model").register("lfw-arcface")(IdentityNetConfig)
#: For tests: a 2-stage net on 32 px chips, trained for seconds.
config_group("model").register("lfw-arcface-test")(
    lambda: IdentityNetConfig(name="lfw-arcface-test", chip_size=32, widths=(8, 16), blocks=(1, 1), embedding_dim=16)
)
config_group("data").register("lfw-identity")(IdentityDataConfig)
config_group("data").register("lfw-identity-test")(
    lambda: IdentityDataConfig(
        name="lfw-identity-test", min_images=3, max_people=12, max_images_per_person=4, val_people=3, val_pairs=5
    )
)
#: Chips stay near dlib's geometry: small rotations, zooms and shifts, mirrored half the time.
config_group("augment").register("identity-chips")(
    functools.partial(
        AugmentConfig,
        warp=False,
        rotation_deg=6.0,
        scale=0.05,
        translation=0.03,
        flip_prob=0.5,
        brightness=0.1,
        contrast=0.2,
        saturation=0.0,
        hue_deg=0.0,
        padding="reflection",
        grayscale_prob=0.1,
    )
)
#: The real run: 20 CPU-minutes on one thread of the project's 2-vCPU machine (bf16 autocast).
register_trainer(
    "identity",
    steps=1600,
    batch_size=128,
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    weight_decay=5e-4,
    warmup_steps=100,
    schedule="cosine",
    final_lr_ratio=0.01,
    log_every=25,
    preview_every=0,
    checkpoint_every=200,
    keep_last=2,
)
register_trainer(
    "identity-test",
    like="identity",
    steps=6,
    batch_size=8,
    lr=0.05,
    warmup_steps=1,
    checkpoint_every=3,
    **TEST_SETTINGS,
)


@dataclass
class IdentityTrainConfig:
    """Everything an identity network's weights depend on; saved as the run's ``config.yaml``."""

    model: IdentityNetConfig = group_field(IdentityNetConfig, "model")
    head: MarginConfig = field(default_factory=lambda: MarginConfig(warmup_steps=400))
    data: IdentityDataConfig = group_field(IdentityDataConfig, "data")
    augment: AugmentConfig = group_field("identity-chips", "augment")
    trainer: TrainerConfig = group_field("identity", "trainer")
    run_dir: str = "runs/lfw-arcface"


#: ``swaplab identity build NAME [--preset P]``: the overrides of each named build.
BUILDS: dict[str, dict[str, list[str]]] = {
    "lfw-arcface": {
        "default": [],
        "test": [
            "model=lfw-arcface-test",
            "data=lfw-identity-test",
            "trainer=identity-test",
            "head.margin=0.3",
            "head.scale=16",
            "head.warmup_steps=2",
        ],
    }
}


class Trainee(nn.Module):
    """The network and its margin head, checkpointed together."""

    def __init__(self, net: CompactFaceNet, head: MarginHead) -> None:
        super().__init__()
        self.net = net
        self.head = head


@RECIPES.register("identity-net")
class IdentityNetRecipe(Recipe):
    """Trains ``CompactFaceNet`` with a margin head on chips of ``peopleDevTrain`` people."""

    name = "identity-net"
    config_type = IdentityTrainConfig

    def __init__(self, cfg: IdentityTrainConfig, session: Any, chips: ChipSet | None = None) -> None:
        super().__init__(cfg, session)
        root = lfw_dir(cfg.data)
        if chips is None:
            chips = build_chip_set(
                cfg.data, cfg.model.chip_size, cfg.model.chip_padding, progress=session.trainer.progress
            )
        check_training_people(chips.people, root, cfg.data)
        self.train_set, self.val_set, self.val_pairs = split_validation(chips, cfg.data)
        self.augmenter = Augmenter(cfg.augment)
        self.window: dict[str, float] = {}

    def build(self) -> nn.Module:
        cfg = self.cfg
        return Trainee(
            CompactFaceNet(cfg.model), MarginHead(cfg.model.embedding_dim, len(self.train_set.people), cfg.head)
        )

    def data_hashes(self) -> dict[str, Any]:
        summary = self.train_set.summary()
        return {"lfw": {**summary, "validation_people": len(self.val_set.people) if self.val_set else 0}}

    def _chips(self, rows: np.ndarray) -> Tensor:
        chips = self.train_set.chips[rows]
        return torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float().div(255.0).contiguous()

    def train_step(self, step: int) -> StepResult:
        from swaplab.train.session import apply_gradients

        cfg, session = self.cfg, self.session
        tcfg = session.trainer
        rows = batch_indices(len(self.train_set), tcfg.batch_size, step, tcfg.seed)
        generator = torch.Generator().manual_seed(stream_seed("identity-augment", tcfg.seed, step))
        x = self.augmenter({"image": self._chips(rows)}, generator)["target"]
        x = x.to(session.device).contiguous(memory_format=session.memory_format)
        labels = torch.from_numpy(self.train_set.labels[rows]).to(session.device)
        margin = (
            cfg.head.margin * min(1.0, (step + 1) / cfg.head.warmup_steps) if cfg.head.warmup_steps else cfg.head.margin
        )
        trainee: Trainee = self.module  # type: ignore[assignment]
        with session.autocast():
            embeddings = trainee.net.embedding(x)
        cosine = trainee.head.cosine(embeddings)
        loss = F.cross_entropy(margin_logits(cosine, labels, margin, cfg.head.scale, cfg.head.kind), labels)
        loss.backward()
        applied, grad_norm = apply_gradients(self.optimizers["model"], loss.detach(), tcfg.grad_clip)
        accuracy = float((cosine.detach().argmax(1) == labels).float().mean())
        return StepResult(
            applied,
            {"loss": float(loss.detach()), "train_accuracy": accuracy, "margin": margin, "grad_norm": grad_norm},
        )

    def validate(self, step: int) -> dict[str, float]:
        """Accuracy, AUC and the best cosine threshold on the held-out people's pairs."""
        if self.val_set is None:
            return {}
        from swaplab.metrics.detection import roc_auc
        from swaplab.metrics.verification import best_threshold, pair_scores

        net: CompactFaceNet = self.module.net  # type: ignore[union-attr]
        chips = self.val_set.chips
        with torch.inference_mode():
            floats = torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float().div(255.0)
            embeddings = torch.cat(
                [net(floats[i : i + 256].to(self.session.device)).float().cpu() for i in range(0, len(floats), 256)]
            )
        pairs = self.val_pairs
        scores = pair_scores(embeddings[pairs[:, 0]].numpy(), embeddings[pairs[:, 1]].numpy())
        same = pairs[:, 2].astype(bool)
        threshold, accuracy = best_threshold(scores, same)
        return {"val/accuracy": accuracy, "val/auc": roc_auc(scores[~same], scores[same]), "val/threshold": threshold}

    @classmethod
    def export(
        cls, cfg: IdentityTrainConfig, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]
    ) -> dict[str, Any]:
        """The network alone (no head), its config and calibrated threshold in the weights' header,
        so ``swaplab.identity.lfw_arcface.load_identity_weights`` reads it without the card."""
        import json

        net = {k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")}
        threshold = (state.get("metrics") or {}).get("val/threshold")
        # One metadata key: safetensors writes several in a random order, and the file's hash is
        # the model's identity (its watermark, its card).
        described = {"net": to_dict(cfg.model), "cosine_threshold": threshold}
        write_tensors(net, out_dir / "model.safetensors", {WEIGHTS_FORMAT: json.dumps(described, sort_keys=True)})
        return {
            "swapper": None,
            "identity_network": {"name": "lfw-arcface", "cosine_threshold": threshold},
            "split": {"trained_on": cfg.data.people, "evaluate_on": "peopleDevTest.txt"},
            "conventions": "chips N x 3 x S x S RGB in [0, 1] cut at the 5 dlib landmarks -> unit N x D embeddings",
        }


def identity_config(name: str, preset: str = "default", overrides: list[str] | None = None) -> IdentityTrainConfig:
    """The run config of ``swaplab identity build NAME --preset PRESET`` (plus ``overrides``)."""
    from swaplab.config import apply_overrides

    if name not in BUILDS or preset not in BUILDS[name]:
        known = ", ".join(f"{n} ({', '.join(p)})" for n, p in BUILDS.items())
        raise KeyError(f"no identity-network build {name!r} with preset {preset!r}; known: {known}")
    return apply_overrides(from_dict(IdentityTrainConfig, {}), [*BUILDS[name][preset], *(overrides or [])])


def build_identity_network(
    name: str = "lfw-arcface",
    preset: str = "default",
    overrides: list[str] | None = None,
    *,
    progress: bool = True,
) -> Path:
    """Train the identity network ``name`` (resuming its run if one was stopped) and install it where
    ``IDENTITY_ENCODERS[name]`` loads from (``swaplab.identity.lfw_arcface.installed_weights``).

    The run lives in ``<user cache>/identity/<name>/run``; a finished run is only exported again.
    Returns the installed weights file.
    """
    import dataclasses

    from swaplab.identity.lfw_arcface import installed_weights
    from swaplab.train.export import export_model
    from swaplab.train.loop import train

    cfg = identity_config(name, preset, overrides)
    target = installed_weights(name)
    run_dir = target.parent / "run"
    cfg = dataclasses.replace(cfg, run_dir=str(run_dir), trainer=dataclasses.replace(cfg.trainer, progress=progress))
    result = train(cfg)
    if result.stop_reason == "signal":
        raise KeyboardInterrupt(f"{name} training stopped at step {result.step}; run the command again to resume")
    export_model(run_dir, target.parent, overwrite=True)
    return target
