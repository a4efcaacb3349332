"""Detectability: how well a detector's scores tell swapped faces from real ones (ROC AUC).

A pure numpy function of two score arrays; it trains and runs no detector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from swaplab.metrics.registry import as_float_array, register_metric

__all__ = ["average_ranks", "roc_auc"]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` (1-D), tied values sharing the mean of their ranks (float64)."""
    order = np.argsort(values, kind="stable")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return ranks


@register_metric("roc_auc", better="lower")
def roc_auc(
    scores_real: np.ndarray | torch.Tensor | Sequence[float],
    scores_fake: np.ndarray | torch.Tensor | Sequence[float],
) -> float:
    """Area under the ROC curve of a detector whose score is higher for faces it thinks are swapped.

    ``scores_real`` (n,) are its scores on real faces, ``scores_fake`` (m,) on swaps. Computed as
    the Mann-Whitney U statistic: the probability that a random swap outscores a random real face,
    ties counting one half (ranks of tied scores are averaged). In [0, 1]: 1 means the detector
    separates them perfectly, 0.5 is chance (the swaps are undetectable to it), below 0.5 the
    detector is inverted. For a swap model, lower (towards 0.5) is better.
    """
    real = as_float_array(scores_real, "scores_real", 1)
    fake = as_float_array(scores_fake, "scores_fake", 1)
    if len(real) == 0 or len(fake) == 0:
        raise ValueError(f"need scores of both classes, got {len(real)} real and {len(fake)} fake")
    if np.isnan(real).any() or np.isnan(fake).any():
        raise ValueError("scores contain NaN")
    ranks = average_ranks(np.concatenate([real, fake]))
    u_fake = ranks[len(real) :].sum() - len(fake) * (len(fake) + 1) / 2.0
    return float(u_fake / (len(real) * len(fake)))
