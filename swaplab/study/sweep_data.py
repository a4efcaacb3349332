"""A sweep folder as the study reports read it: each run's records, logged rows and curves.

``load_study_data(sweep_dir)`` gives a ``StudyData`` (the study's name, how it scores its runs, one
``RunView`` per run from sweep.json, study.yaml, metrics.jsonl, manifest.json and eval/metrics.json);
``final_value`` and ``final_validation`` read numbers off a run's rows; ``plot_curves`` draws one
logged quantity for every run. Shared by the ablation report (``swaplab.study.report``) and the
zoo page (``swaplab.study.zoo_report``); it judges nothing and writes only the figures asked for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from swaplab.evaluate.results import headline_numbers
from swaplab.io.atomic import atomic_path
from swaplab.study.study import RESERVED_NAMES, StudyError, load_study

__all__ = [
    "DISCRIMINATOR_KEYS",
    "FINAL_SHARE",
    "GENERATOR_KEYS",
    "RunView",
    "StudyData",
    "curve_keys",
    "final_validation",
    "final_value",
    "load_study_data",
    "plot_curves",
    "read_rows",
    "smooth",
]

#: Generator quantities in the order of the original report, then the discriminator's.
GENERATOR_KEYS = ("loss", "loss/identity", "loss/reconstruction", "loss/feature_matching", "loss/adversarial")
DISCRIMINATOR_KEYS = ("d_loss", "d_loss/real", "d_loss/fake", "d_loss/gradient_penalty")
#: The share of logged steps at the end whose mean is a run's "final" value of a loss.
FINAL_SHARE = 0.1


@dataclass
class RunView:
    """What the report knows about one run."""

    name: str
    path: Path
    own_overrides: list[str] = field(default_factory=list)
    status: str = "unknown"
    rows: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    eval_doc: dict[str, Any] | None = None  # eval/metrics.json
    eval_status: str = "off"
    seconds: float | None = None
    config_hash: str | None = None
    also_docs: dict[str, dict[str, Any]] = field(default_factory=dict)  # eval-<protocol>/metrics.json (eval.also)

    @property
    def summary(self) -> dict[str, float]:
        """The evaluator's headline numbers (one per column), or {} when the run is not scored; the
        numbers of each further protocol (``eval.also``) follow as ``<metric> @<protocol>``."""
        if not self.eval_doc:
            return {}
        numbers = headline_numbers(self.eval_doc["metrics"])
        for name, doc in self.also_docs.items():
            numbers.update({f"{key} @{name}": v for key, v in headline_numbers(doc["metrics"]).items()})
        return numbers

    @property
    def final_step(self) -> int | None:
        if "final_step" in self.manifest:
            return self.manifest["final_step"]
        return self.rows[-1].get("step") if self.rows else None

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of a logged quantity; rows without a finite value are left out."""
        pts = [
            (row["step"], float(row[key]))
            for row in self.rows
            if isinstance(row.get(key), (int, float)) and math.isfinite(row[key]) and "step" in row
        ]
        if not pts:
            return np.zeros(0), np.zeros(0)
        steps, values = zip(*pts)
        return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


@dataclass
class StudyData:
    name: str
    description: str
    sweep_dir: Path
    runs: list[RunView]
    baseline: str
    warnings: list[str] = field(default_factory=list)
    eval_source: str = "off"  # how the study scores its runs: off, protocol or validation

    @property
    def by_validation(self) -> bool:
        return self.eval_source == "validation"

    def run(self, name: str) -> RunView | None:
        return next((r for r in self.runs if r.name == name), None)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of ``path/metrics.jsonl`` (a line torn by a kill is skipped); [] when there is none."""
    from swaplab.train.run import RunFolder

    return RunFolder(path).read_metrics()


def _is_run_folder(path: Path) -> bool:
    return (
        path.is_dir()
        and path.name not in RESERVED_NAMES
        and ((path / "config.yaml").is_file() or (path / "metrics.jsonl").is_file())
    )


def also_eval_dir(run_dir: str | Path, protocol: str) -> Path:
    """Where a run's scores on a further protocol of the study (``eval.also``) are written."""
    return Path(run_dir) / f"eval-{Path(protocol).stem}"


def _also_docs(run_dir: Path, protocols: Sequence[str]) -> dict[str, dict[str, Any]]:
    docs = {}
    for protocol in protocols:
        doc = _read_json(also_eval_dir(run_dir, protocol) / "metrics.json")
        if doc and "metrics" in doc:
            docs[Path(protocol).stem] = doc
    return docs


def load_study_data(sweep_dir: str | Path) -> StudyData:
    """The runs of a sweep folder, in study order: from sweep.json, plus run folders it does not list."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such sweep folder")
    sweep = _read_json(root / "sweep.json") or {}
    warnings: list[str] = []
    study_name, description, baseline = sweep.get("study") or root.name, sweep.get("description", ""), ""
    spec = sweep.get("eval")
    eval_source = "off" if not spec else spec.get("source", "protocol")
    if (root / "study.yaml").is_file():
        try:
            study = load_study(root / "study.yaml")
            study_name, description, baseline = study.name, study.description, study.baseline_name()
            if "eval" not in sweep:  # a sweep.json from before the first run (or none): the file says
                eval_source = "off" if study.eval is None else study.eval.source
        except StudyError as err:
            warnings.append(f"study.yaml does not load: {err}")
    baseline = sweep.get("baseline") or baseline
    records = {r["name"]: r for r in sweep.get("runs", [])}
    names = list(records) + sorted(p.name for p in root.iterdir() if _is_run_folder(p) and p.name not in records)
    runs = []
    for name in names:
        record = records.get(name, {})
        path = root / name
        if not path.is_dir() and not record:
            continue
        eval_dir = path / "eval"
        eval_doc = _read_json(eval_dir / "metrics.json")
        runs.append(
            RunView(
                name=name,
                path=path,
                own_overrides=list(record.get("own_overrides", [])),
                status=record.get("status", "unknown" if record else "not in sweep.json"),
                rows=read_rows(path) if path.is_dir() else [],
                manifest=_read_json(path / "manifest.json") or {},
                eval_doc=eval_doc if eval_doc and "metrics" in eval_doc else None,
                also_docs=_also_docs(path, ((sweep.get("eval") or {}).get("also") or [])),
                eval_status=("done" if eval_doc else (record.get("eval") or {}).get("status", "off")),
                seconds=record.get("seconds"),
                config_hash=record.get("config_hash"),
            )
        )
    if not runs:
        raise FileNotFoundError(f"{root} holds no runs (no sweep.json entries, no run folders with config.yaml)")
    names = [r.name for r in runs]
    if baseline not in names:
        baseline = "baseline" if "baseline" in names else names[0]
    return StudyData(study_name, description, root, runs, baseline, warnings, eval_source)


# ---------------------------------------------------------------- numbers


def smooth(values: np.ndarray, span: int) -> np.ndarray:
    """Bias-corrected exponential moving average over ``span`` points (GAN losses are noisy)."""
    if span <= 1 or len(values) < 3:
        return values.astype(np.float64)
    alpha = 2.0 / (span + 1.0)
    out = np.empty(len(values))
    acc, weight = 0.0, 0.0
    for i, value in enumerate(values):
        acc = (1 - alpha) * acc + alpha * value
        weight = (1 - alpha) * weight + alpha
        out[i] = acc / weight
    return out


def _span(n: int) -> int:
    return max(1, n // 12)


def final_value(run: RunView, key: str) -> float:
    """Mean of the last ``FINAL_SHARE`` of a quantity's logged values (at least one); NaN if never logged."""
    _, values = run.series(key)
    if not len(values):
        return float("nan")
    return float(values[-max(1, int(math.ceil(len(values) * FINAL_SHARE))) :].mean())


def final_validation(rows: Sequence[dict[str, Any]]) -> tuple[int | None, dict[str, float]]:
    """(step, values) of a run's own held-out numbers: the last logged value of each ``val/*`` key
    (the trainer validates right before its final checkpoint) and the step of the last row holding one."""
    values: dict[str, float] = {}
    step = None
    for row in rows:
        found = {k: v for k, v in row.items() if k.startswith("val/") and isinstance(v, (int, float))}
        if found:
            values.update(found)
            step = row.get("step", step)
    return step, values


# ---------------------------------------------------------------- figures


def _colours(runs: Sequence[RunView], baseline: str) -> dict[str, Any]:
    import matplotlib

    palette = matplotlib.colormaps["tab10" if len(runs) <= 10 else "tab20"].colors
    others = [r.name for r in runs if r.name != baseline]
    colours: dict[str, Any] = {name: palette[i % len(palette)] for i, name in enumerate(others)}
    colours[baseline] = "black"
    return colours


def curve_keys(runs: Sequence[RunView]) -> tuple[list[str], list[str]]:
    """(generator keys, discriminator keys) logged by any run, in the original report's order."""
    present = {k for run in runs for row in run.rows for k, v in row.items() if isinstance(v, (int, float))}
    losses = sorted(k for k in present if k == "loss" or k.startswith("loss/"))
    generator = [k for k in GENERATOR_KEYS if k in present] + [k for k in losses if k not in GENERATOR_KEYS]
    d_losses = sorted(k for k in present if k == "d_loss" or k.startswith("d_loss/"))
    discriminator = [k for k in DISCRIMINATOR_KEYS if k in present] + [
        k for k in d_losses if k not in DISCRIMINATOR_KEYS
    ]
    return generator, discriminator


def plot_curves(runs: Sequence[RunView], key: str, path: Path, baseline: str, title: str) -> tuple[Path, list[str]]:
    """One figure: ``key`` against steps, one line per run (raw faint, smoothed solid); returns the
    path and the runs that never logged it (a term with weight 0)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    colours = _colours(runs, baseline)
    crowded = len(runs) > 8  # the legend goes beside the axes, where it hides no line
    fig, ax = plt.subplots(figsize=(10 if crowded else 8, 4.2))
    absent, lows, highs = [], [], []
    for run in runs:
        steps, values = run.series(key)
        if not len(steps):
            absent.append(run.name)
            continue
        width = 2.2 if run.name == baseline else 1.4
        span = _span(len(values))
        if span > 1:
            ax.plot(steps, values, color=colours[run.name], alpha=0.18, linewidth=0.8)
        # A handful of points (validation numbers) gets markers: one point alone draws no line.
        marker = "o" if len(values) < 8 else None
        ax.plot(
            steps, smooth(values, span), color=colours[run.name], linewidth=width, label=run.name, marker=marker, ms=3
        )
        lows.append(values.min())
        highs.append(values.max())
    if lows and min(lows) > 0 and max(highs) / min(lows) > 30:
        ax.set_yscale("log")
    ax.set_xlabel("iteration (optimiser step)")
    ax.set_ylabel(key)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    if lows and crowded:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    elif lows:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path, absent
