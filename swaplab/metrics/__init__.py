"""swaplab.metrics: the pure metric functions every model and ablation is scored with, by name.

``compute("masked_ssim", pred=..., target=..., mask=...)`` runs one by name, ``better(name)`` and
``direction(key)`` say which way a number improves. Identity (similarity, retrieval), attributes
(pose, expression), reconstruction and sharpness, distribution distances (FD, KID), video
stability, and ROC AUC. Functions of arrays and tensors only: they find no faces, run no
identity network and train nothing; orchestration lives in ``swaplab.evaluate``.
"""

from swaplab.metrics.attributes import EXPRESSION_ALIGN_68, EXPRESSION_POINTS_68, expression_error, pose_error
from swaplab.metrics.detection import roc_auc
from swaplab.metrics.distribution import frechet_distance, kernel_distance, polynomial_mmd2
from swaplab.metrics.identity import identity_retrieval, identity_similarity
from swaplab.metrics.occlusion import occluder_error
from swaplab.metrics.reconstruction import (
    laplacian_variance,
    masked_l1,
    masked_mean,
    masked_psnr,
    masked_ssim,
    sharpness_ratio,
)
from swaplab.metrics.registry import (
    COMPOSED,
    METRICS,
    KernelDistance,
    PerItem,
    better,
    compute,
    direction,
    per_item,
    summarize,
)
from swaplab.metrics.video import IdentityDrift, flicker, identity_drift, landmark_jitter, warped_flicker

__all__ = [
    "COMPOSED",
    "EXPRESSION_ALIGN_68",
    "EXPRESSION_POINTS_68",
    "METRICS",
    "IdentityDrift",
    "KernelDistance",
    "PerItem",
    "better",
    "compute",
    "direction",
    "expression_error",
    "flicker",
    "frechet_distance",
    "identity_drift",
    "identity_retrieval",
    "identity_similarity",
    "kernel_distance",
    "landmark_jitter",
    "laplacian_variance",
    "masked_l1",
    "masked_mean",
    "masked_psnr",
    "masked_ssim",
    "occluder_error",
    "per_item",
    "polynomial_mmd2",
    "pose_error",
    "roc_auc",
    "sharpness_ratio",
    "summarize",
    "warped_flicker",
]
