"""The typed config of a one-shot (SimSwap-style) GAN training run, composed from groups.

``OneShotTrainConfig`` = ``model`` (a SimSwap preset: ``model=simswap-tiny``), ``data`` (aligned
LFW facesets: ``peopleDevTrain`` people to train on, ``peopleDevTest`` people for the fixed
preview/evaluation pairs), ``loss`` (``loss=simswap`` or ``simswap-l2``), ``gan`` (what only a
two-player loop needs), ``trainer`` (the shared loop settings, with one-shot presets
``trainer=oneshot-tiny``) and ``run_dir``. Defaults live here; this module builds no tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from swaplab.config import ConfigError, choice_field, group_field
from swaplab.identity.registry import IDENTITY_ENCODERS
from swaplab.losses.adversarial import SimSwapLossConfig
from swaplab.models.simswap import SimSwapConfig
from swaplab.train.config import TEST_SETTINGS, TrainerConfig, register_trainer


@dataclass
class OneShotDataConfig:
    """Where the training and evaluation faces come from and how pairs are drawn."""

    train: list[str] = field(default_factory=list)  # faceset folders of peopleDevTrain.txt people
    eval: str = ""  # faceset of peopleDevTest.txt people: fixed preview pairs ("" = training pairs)
    same_identity_ratio: float = 0.5  # share of pairs whose source is the target's person (SimSwap: 0.5)
    schedule: Literal["per_sample", "alternate"] = "per_sample"  # alternate: SimSwap's whole-batch flip
    flip: bool = True  # mirror targets at random (the source identity is mirror-invariant)
    eval_pairs: int = 6  # fixed evaluation pairs in previews and the study report
    lists_dir: str = ""  # folder of the LFW people lists ("" = <data root>/lfw)
    seed: int = 0
    cache: bool = True  # decode every crop once into memory (uint8)

    def __post_init__(self) -> None:
        if not 0.0 <= self.same_identity_ratio <= 1.0:
            raise ConfigError(f"data.same_identity_ratio must be in [0, 1], got {self.same_identity_ratio}")
        if self.eval_pairs < 1:
            raise ConfigError(f"data.eval_pairs must be >= 1, got {self.eval_pairs}")


@dataclass
class GanConfig:
    """The parts of a two-player loop the per-pair trainer does not have."""

    d_lr: float = 0.0  # the discriminator's learning rate (0 = trainer.lr, SimSwap's choice)
    # Lazy regularisation (Karras et al. 2020): the gradient penalty, a second backward through D,
    # runs every ``gp_every`` discriminator steps with its weight multiplied by ``gp_every``.
    gp_every: int = 4
    # The identity loss' frozen network. The generator is conditioned on the dlib descriptors the
    # faceset stored; a loss on another network keeps the evaluator's dlib numbers honest.
    identity_network: str = choice_field("dlib-resnet", IDENTITY_ENCODERS)

    def __post_init__(self) -> None:
        if self.d_lr < 0:
            raise ConfigError(f"gan.d_lr must be >= 0, got {self.d_lr}")
        if self.gp_every < 1:
            raise ConfigError(f"gan.gp_every must be >= 1, got {self.gp_every}")


# SimSwap's optimiser for both players: Adam (AdamW without decay), lr 4e-4, betas (0, 0.99).
register_trainer("oneshot", lr=4e-4, betas=(0.0, 0.99), warmup_steps=0, keep_last=2)
#: SimSwap's schedule for GPU runs (its released code: batch 16 (we use 8 per GPU), 640k steps).
register_trainer("oneshot-paper", like="oneshot", steps=640_000, preview_every=1000, checkpoint_every=5000)
#: The CPU ablation study: with ``model=simswap-tiny`` about 0.5 s a step on one core, so
#: 500 steps is a few minutes per run; each study run is capped by its time budget as well.
register_trainer("oneshot-tiny", like="oneshot", steps=600, log_every=10, preview_every=100, checkpoint_every=100)
#: For tests: a handful of steps.
register_trainer("oneshot-test", like="oneshot", steps=4, batch_size=4, checkpoint_every=2, **TEST_SETTINGS)


@dataclass
class OneShotTrainConfig:
    """Everything a one-shot training run depends on; saved as the run's ``config.yaml``."""

    model: SimSwapConfig = group_field("simswap-tiny", "model")
    data: OneShotDataConfig = field(default_factory=OneShotDataConfig)
    loss: SimSwapLossConfig = group_field("simswap", "loss")
    gan: GanConfig = field(default_factory=GanConfig)
    trainer: TrainerConfig = group_field("oneshot-tiny", "trainer")
    run_dir: str = "runs/oneshot"

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir)
