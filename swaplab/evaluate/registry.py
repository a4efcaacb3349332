"""The metric registry, ``compute(name, **inputs)``, and the small result types metrics return.

Every evaluation metric registers here with the direction that counts as better, so the evaluator
can look metrics up by name and print arrows without knowing them. This module computes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple, TypeVar

import numpy as np

from swaplab.registry import Registry

__all__ = [
    "METRICS",
    "Better",
    "KernelDistance",
    "PerItem",
    "better",
    "compute",
    "per_item",
    "register_metric",
    "summarize",
]

METRICS: Registry = Registry("metric")

#: Which way a metric improves: "higher", "lower", or "one" for ratios against the target
#: (a swap should be as sharp and as steady as the face it replaces, not more, not less).
Better = Literal["higher", "lower", "one"]

F = TypeVar("F", bound=Callable[..., Any])


class PerItem(NamedTuple):
    """A metric measured per item (pair, image, landmark set): the values (N,) and their mean."""

    values: np.ndarray
    mean: float


class KernelDistance(NamedTuple):
    """KID's mean and standard deviation over random subsets."""

    mean: float
    std: float


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
