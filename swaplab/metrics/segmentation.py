"""Segmentation scores: intersection over union of one class between predicted and true label maps.

Pure numpy over integer label maps of any (matching) shape; it runs no network.
"""

from __future__ import annotations

import numpy as np

__all__ = ["class_iou"]


def class_iou(predicted: np.ndarray, truth: np.ndarray, label: int) -> float:
    """|predicted == label and truth == label| / |either|, pooled over every pixel of every map;
    1.0 when neither holds the class anywhere."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if predicted.shape != truth.shape:
        raise ValueError(f"label maps differ in shape: {predicted.shape} and {truth.shape}")
    ours, theirs = predicted == label, truth == label
    union = np.count_nonzero(ours | theirs)
    return 1.0 if union == 0 else float(np.count_nonzero(ours & theirs) / union)
