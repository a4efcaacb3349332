"""The run folder: the resolved config, a manifest, checkpoints, previews, logs and curves.

Layout::

    config.yaml        the resolved run config, with the name of its recipe (``read_run_config``)
    manifest.json      code revision, config hash, seed, faceset hashes, versions, machine, sessions
    checkpoints/       see swaplab.train.checkpoint
    previews/          step-0000123.png grids (swaplab.train.preview) and latest.png
    tb/                TensorBoard scalars
    metrics.jsonl      one JSON object per logged step (curves without TensorBoard)
    curves.png         each loss component over steps

Only rank 0 of a distributed run writes here. This module owns files, not training.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

from swaplab.config import ConfigError, config_hash, fill_absent, from_dict, to_dict
from swaplab.io.atomic import atomic_path, atomic_write_json, atomic_write_text
from swaplab.system import machine_description

#: Config keys that may change between sessions of one run (the budgets); anything else refuses.
RESUMABLE_CHANGES = ("trainer.steps", "trainer.time_budget_s")


class RunConfigMismatch(ValueError):
    """Resuming a run folder with a config that differs in more than the step/time budget."""


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def config_differences(saved: Any, current: Any) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two configs (dataclasses or plain trees)."""
    a, b = _flatten(to_dict(saved)), _flatten(to_dict(current))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def read_run_config(run_dir: str | Path) -> tuple[Any, Any]:
    """(recipe class, run config) of a run folder's ``config.yaml``.

    Runs saved before recipes were named on disk have no ``recipe`` key: the one recipe whose
    config type reads the file is theirs. Settings added since the run was saved take the value
    that reproduces it where their field declares one (``swaplab.config.since_field``), else their
    default.
    """
    recipe, body, _, _ = _read_saved(run_dir)
    return recipe, from_dict(recipe.config_type, body)


def _read_saved(run_dir: str | Path) -> tuple[Any, dict[str, Any], list[str], list[str]]:
    """(recipe class, the saved tree with absent settings filled, the keys so filled, the absent
    keys that have no value before they existed)."""
    import yaml

    from swaplab.train.recipe import recipe_for_tree

    path = Path(run_dir) / "config.yaml"
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not a readable run config ({err})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: not a run config (a mapping of settings)")
    try:
        recipe = recipe_for_tree(tree)
    except (KeyError, LookupError) as err:
        raise ConfigError(f"{path}: {err.args[0] if err.args else err}") from None
    return recipe, *fill_absent(recipe.config_type, {k: v for k, v in tree.items() if k != "recipe"})


def code_revision() -> dict[str, Any]:
    """``git rev-parse HEAD`` of the swaplab checkout (and whether it is dirty), else the version."""
    from swaplab._version import __version__

    repo = Path(__file__).resolve().parents[2]  # the checkout holding swaplab/
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return {"revision": head, "dirty": bool(status.strip()), "source": "git"}
    except (OSError, subprocess.SubprocessError):
        return {"revision": f"swaplab {__version__}", "dirty": None, "source": "package version"}


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunFolder:
    """Paths and small writers of one run folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config_path = self.root / "config.yaml"
        self.manifest_path = self.root / "manifest.json"
        self.checkpoints = self.root / "checkpoints"
        self.previews = self.root / "previews"
        self.tb = self.root / "tb"
        self.metrics_path = self.root / "metrics.jsonl"
        self.curves_path = self.root / "curves.png"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def create(self) -> None:
        for folder in (self.root, self.checkpoints, self.previews, self.tb):
            folder.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ config

    def check_resumable(self, cfg: Any, recipe: Any) -> None:
        """Raise ``RunConfigMismatch`` unless ``cfg`` equals the saved config up to the budgets.

        A folder without any checkpoint holds no training to resume (a run that failed before its
        first checkpoint): its config is simply replaced, so fixing a command and running it again
        works.
        """
        saved_recipe, body, filled, lacking = _read_saved(self.root)
        saved = from_dict(saved_recipe.config_type, body)
        if saved_recipe is not recipe:
            diffs = {"recipe": (saved_recipe.name, recipe.name)}
        else:
            # run_dir is this folder, however it is spelt now (relative, absolute, moved).
            ignored = (*RESUMABLE_CHANGES, "run_dir")
            diffs = {k: v for k, v in config_differences(saved, cfg).items() if k not in ignored}
        if not diffs:
            if lacking:
                logging.getLogger(__name__).warning(
                    "%s was saved before the settings %s existed: resuming with their defaults",
                    self.root,
                    ", ".join(lacking),
                )
            return
        if not any(self.checkpoints.glob("step-*")):
            logging.getLogger(__name__).warning(
                "%s has no checkpoint yet: its saved config is replaced by this one", self.root
            )
            return
        lines = "\n".join(
            f"  {k}: saved {a!r}{' (the value before the setting existed)' if k in filled else ''}, now {b!r}"
            for k, (a, b) in diffs.items()
        )
        raise RunConfigMismatch(
            f"{self.root} holds a run with a different config; resuming may change only "
            f"{', '.join(RESUMABLE_CHANGES)}. Differences:\n{lines}\n"
            "Use a new run_dir, or repeat the saved settings (see config.yaml there)."
        )

    def save_config(self, cfg: Any, recipe: str) -> None:
        """Write ``config.yaml``: the recipe's name, then the resolved config."""
        import yaml

        text = yaml.safe_dump({"recipe": recipe, **to_dict(cfg)}, sort_keys=False, allow_unicode=True)
        atomic_write_text(self.config_path, text)

    # ------------------------------------------------------------ manifest

    def start_session(
        self, cfg: Any, *, seed: int, facesets: dict[str, dict[str, Any]], world_size: int, start_step: int
    ) -> dict:
        """Create or extend ``manifest.json`` with a new session (start time, world size, step)."""
        manifest = self.read_manifest() or {
            "created": now_iso(),
            "code": code_revision(),
            "config_hash": config_hash(cfg),
            "seed": seed,
            "facesets": facesets,
            "sessions": [],
        }
        manifest["machine"] = machine_description()
        manifest["world_size"] = world_size
        manifest["config_hash"] = config_hash(cfg)
        manifest["sessions"].append(
            {
                "start": now_iso(),
                "end": None,
                "start_step": start_step,
                "end_step": None,
                "world_size": world_size,
                "code": code_revision(),
            }
        )
        atomic_write_json(self.manifest_path, manifest)
        return manifest

    def end_session(self, *, end_step: int, reason: str, seconds: float = 0.0, cpu_seconds: float = 0.0) -> None:
        """Close the session: its end, step and reason, and the wall and CPU seconds its training took."""
        manifest = self.read_manifest()
        if not manifest or not manifest.get("sessions"):
            return
        manifest["sessions"][-1].update(
            end=now_iso(),
            end_step=end_step,
            stop_reason=reason,
            train_seconds=round(seconds, 3),
            train_cpu_seconds=round(cpu_seconds, 3),
        )
        sessions = manifest["sessions"]
        manifest["final_step"] = end_step
        manifest["train_seconds"] = round(sum(s.get("train_seconds") or 0.0 for s in sessions), 3)
        manifest["train_cpu_seconds"] = round(sum(s.get("train_cpu_seconds") or 0.0 for s in sessions), 3)
        atomic_write_json(self.manifest_path, manifest)

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    # ------------------------------------------------------------ metrics

    def read_metrics(self) -> list[dict[str, Any]]:
        rows = []
        if self.metrics_path.is_file():
            for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line torn by a kill mid-write
        return rows

    def truncate_metrics(self, after_step: int) -> None:
        """Drop rows past ``after_step``: a killed session logged steps its checkpoint does not hold."""
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= after_step]
        with atomic_path(self.metrics_path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def plot_curves(self) -> Path | None:
        """``curves.png``: every logged loss component over steps (log scale), and the LR."""
        rows = self.read_metrics()
        if not rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        keys = sorted({k for r in rows for k in r if k in ("loss", "d_loss") or k.startswith(("loss/", "d_loss/"))})
        fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=(3, 1))
        steps = [r["step"] for r in rows]
        for key in keys:
            pts = [(s, r[key]) for s, r in zip(steps, rows) if isinstance(r.get(key), (int, float))]
            if pts:
                xs, ys = zip(*pts)
                ax_loss.plot(xs, ys, label=key, linewidth=2 if key in ("loss", "d_loss") else 1)
        values = [r[k] for r in rows for k in keys if isinstance(r.get(k), (int, float))]
        if values and min(values) > 0:
            ax_loss.set_yscale("log")
        elif values:  # a GAN's adversarial terms go negative: log-like, through zero
            ax_loss.set_yscale("symlog", linthresh=1e-2)
        ax_loss.set_ylabel("loss")
        ax_loss.legend(fontsize=7, loc="upper right")
        ax_loss.grid(alpha=0.3)
        ax_lr.plot(steps, [r.get("lr", float("nan")) for r in rows], color="gray")
        ax_lr.set_ylabel("lr")
        ax_lr.set_xlabel("step")
        ax_lr.grid(alpha=0.3)
        fig.suptitle(self.root.name)
        fig.tight_layout()
        with atomic_path(self.curves_path) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        plt.close(fig)
        return self.curves_path
