"""Face verification: same-person scores of pairs, accuracy at a threshold, and the best threshold.

Pure numpy functions of embeddings and labels, for LFW's verification protocol and for the
held-out calibration of an identity network's threshold. No networks run here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["best_threshold", "pair_scores", "verification_accuracy"]


def pair_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` (N, D) with the same row of ``b``."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(1)


def verification_accuracy(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Share of pairs judged right when "same person" means ``score > threshold``."""
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    return float(((scores > threshold) == same).mean())


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy): the cosine threshold that classifies these pairs best.

    Candidates are the midpoints between consecutive distinct scores, plus one below the lowest
    and the highest (everything "same" / nothing "same"); among equally good ones the middle one
    is taken, so a wide gap between the classes gives a threshold in its middle.
    """
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    if scores.shape != same.shape or scores.ndim != 1 or not len(scores):
        raise ValueError(f"scores {scores.shape} and labels {same.shape} must be equally long vectors")
    values = np.unique(scores)
    candidates = np.concatenate([[np.nextafter(values[0], -np.inf)], (values[:-1] + values[1:]) / 2, [values[-1]]])
    positives, negatives = np.sort(scores[same]), np.sort(scores[~same])
    true_same = len(positives) - np.searchsorted(positives, candidates, side="right")
    true_different = np.searchsorted(negatives, candidates, side="right")
    accuracy = (true_same + true_different) / len(scores)
    best = np.flatnonzero(accuracy == accuracy.max())
    choice = best[(len(best) - 1) // 2]
    return float(candidates[choice]), float(accuracy[choice])
