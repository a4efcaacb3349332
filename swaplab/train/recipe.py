"""Training recipes: what one model family contributes to the one training loop.

A recipe is a registered class (``RECIPES``) that knows its run config type, how to build the
module it trains and its optimisers' parameter groups, one optimiser step, its pictures, and
what its exported model holds. The loop (``swaplab.train.loop``) owns everything else: the run
folder, seeds, resume, checkpoints, rollbacks, budgets, signals, logs and processes. Adding a
family is one recipe module plus its line in ``RECIPE_MODULES``; nothing else under
``swaplab/train`` changes. See docs/architecture.md, "Add a model family".

A run config is a dataclass with at least ``model`` (a dataclass with a ``name``), ``trainer``
(``TrainerConfig``) and ``run_dir`` fields. ``swaplab train model=NAME`` finds the recipe whose
config's ``model`` field has the type of the ``model`` preset ``NAME``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from swaplab.config import ConfigError, choice_field, config_group
from swaplab.losses import LOSSES
from swaplab.losses.adversarial import CRITERIA
from swaplab.models.parts import DISCRIMINATORS
from swaplab.registry import Registry
from swaplab.system import autocast
from swaplab.train.checkpoint import write_tensors
from swaplab.train.config import TrainerConfig
from swaplab.train.session import Distributed

#: The modules that define recipes. Their import registers each recipe and the presets of its
#: models, losses, data and trainers, so every config group looks here too.
RECIPE_MODULES = (
    "swaplab.train.recipes.per_pair",
    "swaplab.train.recipes.oneshot",
    "swaplab.train.recipes.identity_net",
    "swaplab.train.recipes.swap_detector",
    "swaplab.train.recipes.zoo_autoencoder",
    "swaplab.train.recipes.zoo_autoencoder_variants",
    "swaplab.train.recipes.zoo_vae",
    "swaplab.train.recipes.zoo_gan",
    "swaplab.train.recipes.zoo_stylegan",
    "swaplab.train.recipes.zoo_cyclegan",
    "swaplab.train.recipes.segmenter",
    "swaplab.train.recipes.restorer",
    "swaplab.train.recipes.blender",
    "swaplab.train.recipes.diffusion",
    "swaplab.train.recipes.faceshifter",
    "swaplab.train.recipes.glgan",
    "swaplab.train.recipes.fsgan",
)
RECIPES: Registry[type[Recipe]] = Registry("training recipe", providers=RECIPE_MODULES)
for _group in ("model", "loss", "trainer", "augment", "data"):
    config_group(_group, providers=RECIPE_MODULES)

Tensor = torch.Tensor


@dataclass
class StepResult:
    """One optimiser step: whether every update was applied (all losses and gradients finite) and
    the values to log (``loss``, ``loss/<term>``, ``d_loss`` ..., ``grad_norm``)."""

    applied: bool
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class Session:
    """Where and how a run trains, handed to its recipe by the loop."""

    trainer: TrainerConfig
    dist: Distributed
    device: torch.device
    amp_dtype: torch.dtype | None  # bf16 autocast, or None for fp32
    memory_format: torch.memory_format
    run_dir: Path
    # The run resumes from a checkpoint: weights a recipe starts from (``init``) are not read, since
    # the checkpoint replaces them, so a resumed run needs neither them nor the file they came from.
    resuming: bool = False

    def autocast(self):
        """The run's autocast context (bf16 where the hardware has it, else a no-op)."""
        return autocast(self.device, self.amp_dtype)

    @property
    def previews(self) -> Path:
        return self.run_dir / "previews"


class Recipe:
    """One model family's training. Subclasses set ``name`` and ``config_type`` and implement
    ``build``, ``train_step``; the rest has defaults.

    Life of a session: ``Recipe(cfg, session)`` loads data (no models); the loop seeds the RNG
    with ``trainer.seed`` and calls ``build()`` for the module it checkpoints, then
    ``param_groups(module)`` for each optimiser, restores a checkpoint if there is one, calls
    ``start()``, then ``train_step(step)`` until done, with ``preview(step)`` now and then.
    """

    name: ClassVar[str]
    config_type: ClassVar[type]
    #: The unit of the throughput the loop logs (``<rate_key>`` in metrics.jsonl).
    rate_key: ClassVar[str] = "images_per_s"
    #: Config sections that training never reads and export only writes into the card as the
    #: swapper's defaults (a sampler, swap settings): runs that differ only there train identical
    #: weights, so a study trains them once (``swaplab.study.sweep``).
    swap_time_sections: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Any, session: Session) -> None:
        self.cfg = cfg
        self.session = session
        self.module: nn.Module | None = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    # ------------------------------------------------------------ the model
    def build(self) -> nn.Module:
        """The freshly initialised module the loop trains and checkpoints (all players, one state dict)."""
        raise NotImplementedError

    def param_groups(self, module: nn.Module) -> dict[str, list[dict[str, Any]]]:
        """Parameter groups per optimiser name; a group may carry ``lr_scale`` or ``weight_decay``.
        Default: one optimiser, ``model``, over every parameter."""
        return {"model": [{"params": [p for p in module.parameters() if p.requires_grad]}]}

    def start(self) -> None:
        """Called once the module and optimisers hold their resumed state (wrap for DDP here)."""

    def complete_checkpoint(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A checkpoint's model tensors before the module loads them: a recipe that has added state
        since older runs were written (an average of the weights) fills it in here."""
        return tensors

    # ------------------------------------------------------------ one step
    @property
    def samples_per_step(self) -> int:
        """Samples through forward and backward per optimiser step, all processes."""
        t = self.session.trainer
        return t.batch_size * t.accumulate * self.session.dist.world_size

    def train_step(self, step: int) -> StepResult:
        """One optimiser step of every optimiser (the loop has set their learning rates)."""
        raise NotImplementedError

    # ------------------------------------------------------------ records
    def preview(self, step: int) -> Path | None:
        """Write the preview pictures of ``step`` under ``session.previews`` (rank 0 only)."""
        return None

    def data_hashes(self) -> dict[str, Any]:
        """Content hashes of the data, for the run's manifest (computed on rank 0 only)."""
        return {}

    def log_extra(self, step: int) -> dict[str, Any]:
        return {}

    def trainer_state(self, step: int) -> dict[str, Any]:
        """Extra JSON state stored in each checkpoint."""
        return {}

    def validate(self, step: int) -> dict[str, float]:
        """Numbers measured on held-out data at preview times and at the end (logged, kept in checkpoints)."""
        return {}

    def wants_final_preview(self, stop_reason: str) -> bool:
        return stop_reason != "nothing to do"

    # ------------------------------------------------------------ export
    @classmethod
    def export(cls, cfg: Any, tensors: dict[str, Tensor], out_dir: Path, state: dict[str, Any]) -> dict[str, Any]:
        """Write an exported model's files into ``out_dir`` and return its card's family-specific
        fields (``swapper``, ``identity``, ``conventions`` ...); ``swaplab.train.export`` adds the
        common ones. ``tensors`` are the checkpoint's weights, ``state`` its state.json (the last
        logged metrics are under ``metrics``). The default ships every tensor as ``model.safetensors``."""
        write_tensors(tensors, out_dir / "model.safetensors", {"format": "swaplab-model"})
        return {}


@dataclass
class GanTermConfig:
    """An adversarial term beside a recipe's own losses (DeepFaceLab's "GAN power").

    ``power`` 0 (the default) builds no discriminator and changes nothing. Otherwise the
    generator's loss gains ``power`` x the generator side of ``criterion`` on a ``discriminator``
    (any registered one) that sees real and generated images (the per-pair recipe: targets and
    reconstructions inside the softened face mask; the restorer: clean and restored patches), and
    that discriminator trains at ``lr_scale`` x the LR.
    """

    power: float = 0.0
    discriminator: str = choice_field("multiscale", DISCRIMINATORS)
    criterion: str = choice_field("lsgan", LOSSES)
    dims: int = 32
    n_layers: int = 3
    scales: int = 1
    norm: Literal["instance", "batch", "none"] = "none"
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.power < 0:
            raise ConfigError(f"gan.power must be >= 0, got {self.power}")
        if self.criterion not in CRITERIA:
            raise ConfigError(f"gan.criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}")

    def build_discriminator(self, resolution: int) -> nn.Module:
        return DISCRIMINATORS.create(
            self.discriminator,
            in_channels=3,
            resolution=resolution,
            dims=self.dims,
            n_layers=self.n_layers,
            scales=self.scales,
            norm=self.norm,
        )


class GanPair(nn.Module):
    """A generator and its discriminator(s) in one module, so one state dict (``generator.*``,
    ``discriminator.*``) checkpoints both; recipes export the generator alone."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator

    @staticmethod
    def generator_weights(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """The generator's tensors of a ``GanPair`` state dict, named as the generator alone names
        them; the state dict of a model trained without a discriminator, unchanged."""
        if not any(key.startswith("generator.") for key in tensors):
            return tensors
        return {k.removeprefix("generator."): v for k, v in tensors.items() if k.startswith("generator.")}


def model_type(recipe: type[Recipe]) -> type:
    """The type of the ``model`` field of a recipe's run config."""
    return typing.get_type_hints(recipe.config_type)["model"]


def recipe_for_model(model_cfg: Any) -> type[Recipe]:
    """The recipe that trains ``model_cfg`` (a ``model`` preset): the one whose run config's ``model``
    field has its type."""
    matches = [RECIPES.get(n) for n in RECIPES.names() if isinstance(model_cfg, model_type(RECIPES.get(n)))]
    if len(matches) != 1:
        found = ", ".join(r.name for r in matches) or "none"
        raise LookupError(f"{type(model_cfg).__name__} is trained by {found} recipe(s); exactly one must claim it")
    return matches[0]


def recipe_for_config(cfg: Any) -> type[Recipe]:
    """The recipe of a run config object (by its type)."""
    for name in RECIPES.names():
        if type(cfg) is RECIPES.get(name).config_type:
            return RECIPES.get(name)
    raise LookupError(f"no training recipe has the run config type {type(cfg).__name__}")


def recipe_for_tree(tree: dict[str, Any]) -> type[Recipe]:
    """The recipe of a saved config tree: its ``recipe`` key, or, for runs saved before recipes had
    names on disk, the one recipe whose run config parses it."""
    from swaplab.config import ConfigError, from_dict

    if "recipe" in tree:
        return RECIPES.get(str(tree["recipe"]))
    body = {k: v for k, v in tree.items() if k != "recipe"}
    fits = []
    for name in RECIPES.names():
        try:
            from_dict(RECIPES.get(name).config_type, body)
        except (ConfigError, KeyError, TypeError, ValueError):
            continue
        fits.append(RECIPES.get(name))
    if len(fits) != 1:
        raise LookupError(f"a saved config that {len(fits)} training recipes can read: give its recipe")
    return fits[0]


def replace_trainer(cfg: Any, **changes: Any) -> Any:
    """``cfg`` with ``trainer`` fields replaced (``replace_trainer(cfg, steps=10)``)."""
    return dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, **changes))
