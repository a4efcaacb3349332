"""The loss registry: every loss is a small ``nn.Module`` registered by name.

Image losses share one call signature, ``loss(pred, target, weight=None) -> scalar``, with
``pred``/``target`` (N, C, H, W) in [0, 1] and ``weight`` an optional (N, 1, H, W) map (for
instance the face mask). This module only holds the table.
"""

from __future__ import annotations

from swaplab.registry import Registry

LOSSES: Registry = Registry(
    "loss",
    providers=tuple(
        f"swaplab.losses.{name}"
        for name in (
            "adversarial",
            "cycle",
            "feature_matching",
            "identity",
            "pixel",
            "ssim",
            "regularizers",
            "edge",
            "perceptual",
        )
    ),
)
