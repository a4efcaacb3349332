"""One entry point for every trainer: ``key=value`` words -> the right config -> the right loop.

The model decides the loop: a SimSwap preset (``model=simswap-tiny``, arch ``simswap``) trains a
one-shot GAN swapper (``swaplab.train.oneshot``), anything else a per-pair autoencoder
(``swaplab.train.trainer``). The study's switch names are accepted as aliases of the config's
own keys (``ablation.encoder=none`` is ``model.parts.encoder=none``, ``loss.fm.layers=full`` is
``loss.feature_matching.layers=full``), so study files read like the study. No training here.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import yaml

from swaplab.config import ConfigError, apply_overrides, config_group, load_config

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


def saved_arch(config_path: str | Path) -> str:
    """The ``model.arch`` of a saved training config (``config.yaml``)."""
    tree = yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) or {}
    return str((tree.get("model") or {}).get("arch", ""))


def is_oneshot_arch(arch: str) -> bool:
    return arch == "simswap"


def config_class(overrides: list[str]) -> type:
    """``OneShotTrainConfig`` when the (last) model named is a one-shot swapper, else ``TrainConfig``."""
    from swaplab.train.config import TrainConfig
    from swaplab.train.oneshot_config import OneShotTrainConfig

    base_path, rest = _split_base(overrides)
    arch = saved_arch(base_path) if base_path else ""
    for item in rest:
        key, _, value = item.partition("=")
        if key.strip().lstrip("+") == "model" and not value.strip().startswith("{"):
            try:
                arch = str(getattr(config_group("model").create(value.strip()), "arch", ""))
            except KeyError as err:
                raise ConfigError(f"model: {err.args[0]}") from None
        elif key.strip() == "model.arch":
            arch = value.strip()
    return OneShotTrainConfig if is_oneshot_arch(arch) else TrainConfig


def build_any_config(overrides: list[str]) -> Any:
    """A ``TrainConfig`` or ``OneShotTrainConfig`` from ``key=value`` strings.

    ``config=path.yaml`` starts from a saved config; ``run_dir=X`` of an existing run starts from
    that run's ``config.yaml`` (so ``run_dir=X trainer.steps=5000`` extends a run); then the
    remaining overrides (aliases resolved) apply in order.
    """
    overrides = resolve_aliases(list(overrides))
    cls = config_class(overrides)
    base_path, rest = _split_base(overrides)
    base = load_config(cls, base_path) if base_path else cls()
    return apply_overrides(base, rest)


def train_any(cfg: Any):  # -> RunResult
    """Run the loop ``cfg``'s type belongs to."""
    from swaplab.train.oneshot_config import OneShotTrainConfig

    if isinstance(cfg, OneShotTrainConfig):
        from swaplab.train.oneshot import train_oneshot

        return train_oneshot(cfg)
    from swaplab.train.trainer import train

    return train(cfg)


def main_from_overrides(overrides: list[str]):  # -> RunResult
    """``python -m swaplab.train key=value ...`` (also under ``torchrun``): build the config and train."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = train_any(build_any_config(overrides))
    if int(os.environ.get("RANK", "0")) == 0:
        loss = result.metrics.get("loss")
        print(
            f"{result.run_dir}: step {result.step} ({result.stop_reason}), "
            f"loss {loss if loss is not None else 'n/a'}, {result.faces_per_s:.1f} images/s, "
            f"checkpoint {result.checkpoint}"
        )
    return result
