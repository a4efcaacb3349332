"""Feature matching: the distance between a discriminator's features of the swap and of the target.

``layers`` picks which of each head's feature maps count: ``weak`` the last k (SimSwap's "weak
feature matching", which leaves the early, appearance-level layers free so the identity can
change), ``full`` all of them (pix2pixHD's), ``early`` the first k. It reads any discriminator
output with a ``features`` attribute (``list[list[Tensor]]``, see
``swaplab.models.parts.discriminators``) or the bare nested list; it runs no discriminator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from swaplab.losses.pixel import Norm, pixel_error
from swaplab.losses.registry import LOSSES

Tensor = torch.Tensor
LayerChoice = Literal["weak", "full", "early"]


def select_layers(features: Sequence[Tensor], layers: LayerChoice, k: int) -> list[Tensor]:
    """The feature maps of one head that feature matching uses (k larger than the head's depth = all)."""
    if layers == "full":
        return list(features)
    if k < 1:
        raise ValueError(f"feature matching needs k >= 1, got {k}")
    if layers == "weak":
        return list(features[-k:])
    if layers == "early":
        return list(features[:k])
    raise ValueError(f"layers must be 'weak', 'full' or 'early', got {layers!r}")


def head_features(output: Any) -> list[list[Tensor]]:
    """``output.features`` of a discriminator output, or ``output`` itself when it is the nested list."""
    features = getattr(output, "features", output)
    if not isinstance(features, Sequence) or not all(isinstance(head, Sequence) for head in features):
        raise TypeError("expected a discriminator output: a list per head of lists of feature maps")
    return [list(head) for head in features]


@LOSSES.register("feature_matching")
class FeatureMatchingLoss(nn.Module):
    """Mean over heads of the mean over the selected layers of mean |F(swap) - F(target)| (or squared).

    ``forward(fake, real)``: discriminator outputs for the swapped faces and the targets; the
    target's features are detached (they are the reference, not something to move). Equal
    weights per layer and head (pix2pixHD weighs by 4 / (n_layers + 1) and 1 / scales, which
    only rescales the term).
    """

    def __init__(self, layers: LayerChoice = "weak", k: int = 2, norm: Norm = "l1") -> None:
        super().__init__()
        select_layers([], layers, k)  # validates the choice early
        if norm not in ("l1", "l2"):
            raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
        self.layers, self.k, self.norm = layers, k, norm

    def forward(self, fake: Any, real: Any) -> Tensor:
        fake_heads, real_heads = head_features(fake), head_features(real)
        if len(fake_heads) != len(real_heads):
            raise ValueError(f"{len(fake_heads)} fake heads against {len(real_heads)} real ones")
        per_head = []
        for fake_maps, real_maps in zip(fake_heads, real_heads):
            chosen = zip(select_layers(fake_maps, self.layers, self.k), select_layers(real_maps, self.layers, self.k))
            errors = [pixel_error(f, r.detach(), self.norm).mean() for f, r in chosen]
            per_head.append(torch.stack(errors).mean())
        return torch.stack(per_head).mean()
