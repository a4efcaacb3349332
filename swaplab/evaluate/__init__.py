"""swaplab.evaluate: the metrics every model and ablation is scored with, by name.

Importing this package registers every metric in ``METRICS``; ``compute("masked_ssim", pred=...,
target=..., mask=...)`` runs one by name and ``better(name)`` says which way it improves. Identity
(similarity, retrieval), attributes (pose, expression), reconstruction and sharpness, distribution
distances (FD, KID on dlib ResNet features), video stability, and detectability (ROC AUC).
"""

from swaplab.evaluate.attributes import (
    EXPRESSION_ALIGN_68,
    EXPRESSION_POINTS_68,
    expression_error,
    pose_error,
)
from swaplab.evaluate.detectability import detectability_auc, measure_detectability
from swaplab.evaluate.detection import roc_auc
from swaplab.evaluate.distribution import frechet_distance, kernel_distance, polynomial_mmd2
from swaplab.evaluate.identity import identity_features, identity_retrieval, identity_similarity
from swaplab.evaluate.reconstruction import (
    laplacian_variance,
    masked_l1,
    masked_mean,
    masked_psnr,
    masked_ssim,
    sharpness_ratio,
)
from swaplab.evaluate.registry import METRICS, KernelDistance, PerItem, better, compute, summarize
from swaplab.evaluate.video import IdentityDrift, flicker, identity_drift, landmark_jitter

__all__ = [
    "EXPRESSION_ALIGN_68",
    "detectability_auc",
    "measure_detectability",
    "EXPRESSION_POINTS_68",
    "METRICS",
    "IdentityDrift",
    "KernelDistance",
    "PerItem",
    "better",
    "compute",
    "expression_error",
    "flicker",
    "frechet_distance",
    "identity_drift",
    "identity_features",
    "identity_retrieval",
    "identity_similarity",
    "kernel_distance",
    "landmark_jitter",
    "laplacian_variance",
    "masked_l1",
    "masked_mean",
    "masked_psnr",
    "masked_ssim",
    "polynomial_mmd2",
    "pose_error",
    "roc_auc",
    "sharpness_ratio",
    "summarize",
]

# The evaluator and its pinned protocols (they import the metrics above, so they come last).
from swaplab.evaluate.evaluator import (  # noqa: E402
    Comparison,
    EvalOptions,
    EvalResult,
    evaluate,
    evaluate_many,
    expand_targets,
)
from swaplab.evaluate.protocol import Protocol, build_protocol, load_protocol  # noqa: E402

__all__ += [
    "Comparison",
    "EvalOptions",
    "EvalResult",
    "Protocol",
    "build_protocol",
    "evaluate",
    "evaluate_many",
    "expand_targets",
    "load_protocol",
]
