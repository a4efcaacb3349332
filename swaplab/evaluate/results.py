"""What an evaluation is asked and what it returns: options, results, timings, and writing them.

``EvalOptions`` says how much of a protocol to score and with what; ``EvalResult`` is what one
evaluation measured (``metrics.json``'s content and the per-item rows); ``write_result`` writes
the files every evaluation writes. The shared vocabulary of ``swaplab.evaluate``'s modules; it
scores nothing itself.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from swaplab.config import choice_field, config_group
from swaplab.identity.registry import IDENTITY_ENCODERS

__all__ = [
    "METRIC_NETWORK",
    "RESULT_FORMAT",
    "Comparison",
    "EvalOptions",
    "EvalResult",
    "Measured",
    "Timer",
    "headline_numbers",
    "json_safe",
]

#: The swap detectors' training presets (``EvalOptions.detector``), registered with their recipe.
DETECTOR_PRESETS = config_group("detector", providers=("swaplab.train.recipes.swap_detector",))

RESULT_FORMAT = "swaplab-eval"
RESULT_VERSION = 1
#: The identity network whose 256-d penultimate features feed the distribution distances.
METRIC_NETWORK = "dlib-resnet"


@dataclass
class EvalOptions:
    """How much of a protocol to score, and with what (``swaplab eval --limit N`` sets ``limit``)."""

    limit: int = 0  # score only the first N pairs (and N held-out faces per side; N clips for video); 0 = all
    reference_limit: int = 0  # real faces of the source for FD / KID (0 = every pinned one)
    gallery_limit: int = 0  # gallery identities besides the sources being scored (0 = every pinned one)
    gallery_images: int = 0  # photos per gallery identity (0 = every pinned one)
    frames: int = 0  # video protocols: frames per clip (0 = the protocol's count)
    # Identity networks to measure with (empty = every registered one that is built here).
    encoders: tuple[str, ...] = choice_field((), IDENTITY_ENCODERS)
    grid: int = 8  # pairs shown in the report's source | target | swap grid
    worst: int = 6  # worst cases shown per criterion
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    device: str = "cpu"
    swap_config: Any = None  # a SwapConfig for model swaps (default: SwapConfig(precision="fp32"))
    # Detectability: how many of the protocol's detector-training pairs (peopleDevTrain people) to
    # swap and train the real-vs-swapped classifier on (0 = all, or max(limit, 20) when ``limit``
    # is set; -1 = skip it), and the classifier's preset (swaplab.evaluate.detectability).
    detector_pairs: int = 0
    detector: str = choice_field("default", DETECTOR_PRESETS)
    report: bool = True  # write report.html with figures and grids


@dataclass
class EvalResult:
    """What one evaluation measured; ``metrics`` is metrics.json's content, ``items`` per_item.json's."""

    name: str
    out_dir: Path
    metrics: dict[str, Any]
    items: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    report: Path | None = None

    @property
    def summary(self) -> dict[str, float]:
        """One number per column: ``{"pose_error": 3.1, "identity_retrieval/dlib-resnet top1": 0.8, ...}``."""
        return headline_numbers(self.metrics["metrics"])

    @property
    def protocol(self) -> str:
        return self.metrics["protocol"]["name"]


@dataclass
class Comparison:
    """Several results scored on one protocol, and the comparison report."""

    results: list[EvalResult]
    out_dir: Path
    report: Path | None = None


def headline_numbers(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Flatten metrics.json's ``metrics`` to one float per column (std, counts and labels dropped)."""
    out: dict[str, float] = {}
    for key, entry in metrics.items():
        for name, value in entry.items():
            if name in ("mean", "value"):
                out[key] = _float(value)
            elif name.startswith("top"):
                out[f"{key} {name}"] = _float(value)
    return out


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


class Timer:
    """Wall time per part of an evaluation: ``with timer("faces"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - start


def finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class Measured:
    """What a scoring pass found, ready to be written: the ``metrics.json`` sections and the items."""

    target_info: dict[str, Any]
    networks: list[str]  # identity networks measured with
    samples: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    items: list[dict[str, Any]]
    recon_items: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def json_safe(value: Any) -> Any:
    """NaN and infinities become None (JSON has neither); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value
