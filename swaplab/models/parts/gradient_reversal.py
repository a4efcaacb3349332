"""Gradient reversal: the identity going forward, the gradient times ``-scale`` going back.

The layer of domain-adversarial training (Ganin and Lempitsky, "Unsupervised Domain Adaptation by
Backpropagation", ICML 2015; DANN): features pass unchanged to a domain classifier, whose gradient
is reversed on its way into the feature extractor, so the features learn to hide the domain.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``x`` unchanged; its gradient multiplied by ``-scale``."""
    return _Reverse.apply(x, scale)


class GradientReversal(nn.Module):
    """``reverse_gradient`` as a layer; ``scale`` may change during training (DANN's schedule)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.scale)
