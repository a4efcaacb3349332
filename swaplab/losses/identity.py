"""Identity loss: 1 - cosine similarity between identity embeddings of prediction and target.

The identity network is passed in as a callable (for example the dlib ResNet port in
``swaplab.identity.dlib_resnet``), so this module depends on no particular network and loads no weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from swaplab.losses.registry import LOSSES

Tensor = torch.Tensor
IdentityEncoder = Callable[[Tensor], Tensor]


@LOSSES.register("identity")
class IdentityLoss(nn.Module):
    """Mean over the batch of 1 - cos(E(pred), E(target)), in [0, 2].

    ``encoder`` maps faces (N, 3, H, W) in [0, 1] to embeddings (N, D); any resizing or
    alignment it needs is its own business. The target's embedding is computed without
    gradients; pass ``target_embedding`` instead of ``target`` to reuse a cached one. Gradients
    flow through the encoder into ``pred`` (freeze the encoder's parameters yourself).
    Takes no weight map: identity is a property of the whole face.
    """

    def __init__(self, encoder: IdentityEncoder) -> None:
        super().__init__()
        if not callable(encoder):
            raise TypeError(f"encoder must be callable (faces -> embeddings), got {type(encoder).__name__}")
        self.encoder = encoder

    def forward(self, pred: Tensor, target: Tensor | None = None, *, target_embedding: Tensor | None = None) -> Tensor:
        if target_embedding is None:
            if target is None:
                raise ValueError("identity loss needs a target image or a target_embedding")
            with torch.no_grad():
                target_embedding = self.encoder(target)
        pred_embedding = self.encoder(pred)
        cosine = F.cosine_similarity(pred_embedding.float(), target_embedding.float().detach(), dim=1)
        return (1.0 - cosine).mean()
