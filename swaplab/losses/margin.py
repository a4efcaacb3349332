"""Additive-margin softmax heads (ArcFace, CosFace) for training identity networks.

``MarginHead`` holds one unit-length centre per class and turns embeddings into logits whose
true class is penalised by a margin; cross-entropy on them trains a face embedder whose cosines
separate people. Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition"
(CVPR 2019); Wang et al., "CosFace" (CVPR 2018). Training-time only: no network ships a head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from swaplab.config import ConfigError

__all__ = ["MarginConfig", "MarginHead", "margin_logits"]


@dataclass
class MarginConfig:
    """The additive margin of the classification head (ArcFace or CosFace)."""

    kind: Literal["arcface", "cosface"] = "arcface"
    margin: float = 0.5  # ArcFace: added to the angle (radians); CosFace: subtracted from the cosine
    scale: float = 32.0  # logits = scale * (margined) cosine
    warmup_steps: int = 0  # the margin grows linearly from 0 over these steps (eases training from scratch)

    def __post_init__(self) -> None:
        if self.scale <= 0 or self.margin < 0 or self.warmup_steps < 0:
            raise ConfigError("head.scale must be positive, head.margin and head.warmup_steps non-negative")


def margin_logits(
    cosine: torch.Tensor,
    labels: torch.Tensor,
    margin: float,
    scale: float,
    kind: Literal["arcface", "cosface"] = "arcface",
) -> torch.Tensor:
    """Scaled logits with an additive margin on each row's true class.

    ``cosine`` is N x C (cosines between embeddings and class centres), ``labels`` N class indices.
    ArcFace replaces the true class's cos(theta) by cos(theta + margin), with theta + margin capped
    at pi so the logit keeps falling as the angle grows; CosFace by cos(theta) - margin. Every
    logit is multiplied by ``scale``. Computed in float32 whatever the input's dtype.
    """
    cosine = cosine.float()
    target = cosine.gather(1, labels.view(-1, 1))
    if kind == "arcface":
        # acos has an infinite slope at +-1: keep the angle a hair inside.
        theta = torch.acos(target.clamp(-1.0 + 1e-6, 1.0 - 1e-6))
        margined = torch.cos(torch.clamp(theta + margin, max=math.pi))
    elif kind == "cosface":
        margined = target - margin
    else:
        raise ValueError(f"unknown margin kind {kind!r}: 'arcface' or 'cosface'")
    return cosine.scatter(1, labels.view(-1, 1), margined) * scale


class MarginHead(nn.Module):
    """Class centres on the unit sphere and the margin logits of embeddings against them."""

    def __init__(self, embedding_dim: int, num_classes: int, config: MarginConfig | None = None) -> None:
        super().__init__()
        self.config = config or MarginConfig()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """N x C cosines between the embeddings and every class centre (float32)."""
        return F.normalize(embeddings.float(), dim=1) @ F.normalize(self.weight.float(), dim=1).t()

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, margin: float | None = None) -> torch.Tensor:
        """Margin logits N x C; ``margin`` overrides the configured one (for a margin warm-up)."""
        cfg = self.config
        return margin_logits(
            self.cosine(embeddings), labels, cfg.margin if margin is None else margin, cfg.scale, cfg.kind
        )
