"""One entry point for every recipe: ``key=value`` words -> the right run config -> the one loop.

``model=NAME`` picks the recipe (the one whose run config's ``model`` field has the type of the
``model`` preset ``NAME``); ``config=FILE`` or ``run_dir=`` of an existing run starts from a saved
config (whose ``recipe`` key names its recipe). Study switch names are accepted as aliases of the
config's own keys (``ablation.encoder=none`` is ``model.parts.encoder=none``, ``loss.fm.layers=full``
is ``loss.feature_matching.layers=full``), so study files read like the study. Nothing here names
a model family.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any

import yaml

from swaplab.config import ConfigError, apply_overrides, config_group, fill_absent, from_dict
from swaplab.train.config import UNBOUNDED_STEPS
from swaplab.train.loop import RunResult, train
from swaplab.train.recipe import RECIPES, Recipe, recipe_for_model, recipe_for_tree

#: Study switch names -> config keys (prefix rewrites, longest first).
ALIASES: dict[str, str] = {
    "ablation.encoder": "model.parts.encoder",
    "ablation.bottleneck": "model.parts.bottleneck",
    "ablation.decoder": "model.parts.decoder",
    "ablation.discriminator": "model.parts.discriminator",
    "loss.recon": "loss.reconstruction",
    "loss.fm": "loss.feature_matching",
    "loss.id": "loss.identity",
    "loss.adv": "loss.adversarial",
    "loss.gp": "loss.gradient_penalty",
}
_NAME = re.compile(r"^[A-Za-z][\w-]*$")
#: The recipe of ``swaplab train`` without a model: per-pair autoencoders, swaplab's first family.
DEFAULT_RECIPE = "per-pair"


def resolve_aliases(overrides: list[str]) -> list[str]:
    """Rewrite study switch names to config keys; ``model.discriminator=NAME`` picks the part."""
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        bare = key.strip().lstrip("+")
        for alias, target in sorted(ALIASES.items(), key=lambda kv: -len(kv[0])):
            if bare == alias or bare.startswith(alias + "."):
                bare = target + bare[len(alias) :]
                break
        if bare == "model.discriminator" and _NAME.match(value.strip()):
            bare = "model.parts.discriminator"  # a discriminator by name, not its sizes
        out.append(f"{bare}{sep}{value}" if sep else item)
    return out


def _split_base(overrides: list[str]) -> tuple[Path | None, list[str]]:
    base_path, rest = None, []
    for item in overrides:
        if item.startswith("config="):
            base_path = Path(item.split("=", 1)[1])
        else:
            rest.append(item)
    run_dirs = [item.split("=", 1)[1] for item in rest if item.startswith("run_dir=")]
    if base_path is None and run_dirs and (Path(run_dirs[-1]) / "config.yaml").is_file():
        base_path = Path(run_dirs[-1]) / "config.yaml"
    return base_path, rest


def _read_tree(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"config={path}: not a readable YAML file ({err})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config={path}: not a mapping of settings")
    return tree


def choose_recipe(overrides: list[str]) -> tuple[type[Recipe], dict[str, Any] | None, list[str]]:
    """(recipe, saved config tree or None, the remaining overrides) for ``key=value`` words."""
    base_path, rest = _split_base(overrides)
    tree = _read_tree(base_path) if base_path else None
    recipe = None
    if tree is not None:
        try:
            recipe = recipe_for_tree(tree)
        except (KeyError, LookupError) as err:
            raise ConfigError(f"{base_path}: {err.args[0] if err.args else err}") from None
    for item in rest:
        key, _, value = item.partition("=")
        if key.strip().lstrip("+") == "model" and not value.strip().startswith("{"):
            try:
                preset = config_group("model").create(value.strip())
            except KeyError as err:
                raise ConfigError(f"model: {err.args[0]}") from None
            recipe = recipe_for_model(preset)
    if tree is not None and recipe is not recipe_for_tree(tree):
        tree = None  # a model of another family: start from its recipe's defaults
    elif tree is not None and base_path.name == "config.yaml" and (base_path.parent / "checkpoints").is_dir():
        # A run's saved config: settings added since keep the values that run trained with.
        tree, _, _ = fill_absent(recipe.config_type, {k: v for k, v in tree.items() if k != "recipe"})
    return recipe or RECIPES.get(DEFAULT_RECIPE), tree, rest


def build_config(overrides: list[str] | tuple[str, ...]) -> Any:
    """The run config of ``key=value`` strings, of the recipe they name.

    ``config=path.yaml`` starts from a saved config; ``run_dir=X`` of an existing run starts from
    that run's ``config.yaml`` (so ``run_dir=X trainer.steps=5000`` extends a run); then the
    remaining overrides (aliases resolved) apply in order. ``trainer.time_budget_s`` given without
    ``trainer.steps`` makes the budget the stop (a preset's step count would otherwise end it first).
    """
    recipe, tree, rest = choose_recipe(resolve_aliases(list(overrides)))
    if tree is not None:
        base = from_dict(recipe.config_type, {k: v for k, v in tree.items() if k != "recipe"})
    else:
        base = recipe.config_type()
    cfg = apply_overrides(base, rest)
    given = {item.partition("=")[0].strip().lstrip("+") for item in rest}
    if "trainer.time_budget_s" in given and "trainer.steps" not in given and cfg.trainer.time_budget_s > 0:
        # A time budget the user gives is the stop: a preset's step count must not end the run first.
        cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, steps=UNBOUNDED_STEPS))
    return cfg


def main_from_overrides(overrides: list[str]) -> RunResult:
    """``python -m swaplab.train key=value ...`` (also under ``torchrun``): build the config and train."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = train(build_config(overrides))
    if int(os.environ.get("RANK", "0")) == 0:
        loss = result.metrics.get("loss")
        print(
            f"{result.run_dir}: step {result.step} ({result.stop_reason}), "
            f"loss {loss if loss is not None else 'n/a'}, {result.samples_per_s:.1f} samples/s, "
            f"checkpoint {result.checkpoint}"
        )
    return result
