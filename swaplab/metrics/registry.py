"""The metric registry, ``compute(name, **inputs)``, directions, and the small result types metrics return.

Every evaluation metric registers here with the direction that counts as better, and so does each
quantity the evaluator measures by composing metrics (a count of faces not found, a detector's AUC):
``direction(key)`` of any metrics.json key is answered here and nowhere else, so reports print
arrows without knowing the metrics. This module computes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple, TypeVar

import numpy as np
import torch

from swaplab.registry import Registry

__all__ = [
    "COMPOSED",
    "METRICS",
    "Better",
    "KernelDistance",
    "PerItem",
    "better",
    "direction",
    "compute",
    "per_item",
    "as_float_array",
    "register_metric",
    "summarize",
]

METRICS: Registry = Registry(
    "metric",
    providers=tuple(
        f"swaplab.metrics.{name}"
        for name in ("attributes", "detection", "distribution", "identity", "reconstruction", "video")
    ),
)

#: Which way a metric improves: "higher", "lower", or "one" for ratios against the target
#: (a swap should be as sharp and as steady as the face it replaces, not more, not less).
Better = Literal["higher", "lower", "one"]
#: A direction, or "reference": a number printed for comparison that is not a score.
Direction = Literal["higher", "lower", "one", "reference"]

#: Quantities that are not metric functions but are scored all the same, with their directions.
COMPOSED: dict[str, Direction] = {
    "no_face_in_swap": "lower",  # swaps in which no face is found where the target's face was
    "target_identity_similarity": "reference",  # the target itself against the source: the floor
    "identity_drift_target": "reference",  # the original clip's own drift: the floor
    "detectability_auc": "lower",  # a real-vs-swapped classifier's held-out AUC (trained per model)
}

F = TypeVar("F", bound=Callable[..., Any])


class PerItem(NamedTuple):
    """A metric measured per item (pair, image, landmark set): the values (N,) and their mean."""

    values: np.ndarray
    mean: float


class KernelDistance(NamedTuple):
    """KID's mean and standard deviation over random subsets."""

    mean: float
    std: float


def as_float_array(values: np.ndarray | torch.Tensor | Sequence, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """``values`` as a float64 numpy array of ``ndim`` dimensions (tensors are detached, moved to CPU)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {array.shape}")
    return array


def per_item(values: np.ndarray) -> PerItem:
    """Wrap per-item values (float64) with their mean (NaN for no items)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return PerItem(values, float(values.mean()) if values.size else float("nan"))


def register_metric(name: str, better: Better) -> Callable[[F], F]:
    """Register a metric function under ``name`` and record which way it improves."""

    def add(fn: F) -> F:
        fn.better = better  # type: ignore[attr-defined]
        return METRICS.register(name)(fn)

    return add


def compute(name: str, /, **inputs: Any) -> Any:
    """Run the metric registered as ``name`` on keyword inputs: ``compute("masked_l1", pred=p, target=t)``."""
    return METRICS.create(name, **inputs)


def better(name: str) -> Better:
    """Which way the metric ``name`` improves: "higher", "lower" or "one" (see ``Better``)."""
    return METRICS.get(name).better


def direction(key: str) -> Direction:
    """Which way a metrics.json key improves ("higher", "lower", "one"), or "reference" (not a score).

    A key is a metric's or composed quantity's name, optionally followed by ``/qualifier`` (the
    identity network, the side) and `` topK``: ``identity_retrieval/lfw-arcface top1``.
    """
    base = key.split("/")[0].split(" ")[0]
    if base in COMPOSED:
        return COMPOSED[base]
    return better(base) if base in METRICS else "reference"


def summarize(result: Any) -> dict[str, float]:
    """The JSON-ready summary numbers of any metric's result (per-item values are dropped).

    float -> ``{"value": x}``; ``PerItem`` -> ``{"mean": m}``; other named tuples and dicts
    -> their fields as floats.
    """
    if isinstance(result, PerItem):
        return {"mean": result.mean}
    if isinstance(result, tuple) and hasattr(result, "_asdict"):
        return {key: float(value) for key, value in result._asdict().items()}
    if isinstance(result, dict):
        return {key: float(value) for key, value in result.items()}
    return {"value": float(result)}
