"""Cycle consistency of two maps between image domains (CycleGAN's L_cyc), built on the pixel loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from swaplab.losses.pixel import Norm
from swaplab.losses.registry import LOSSES

Tensor = torch.Tensor


@LOSSES.register("cycle_consistency")
class CycleConsistencyLoss(nn.Module):
    """The cycle-consistency loss of two maps G: A -> B and F: B -> A (any callables on image batches):

    L_cyc(G, F) = E_a[ |F(G(a)) - a|_1 ] + E_b[ |G(F(b)) - b|_1 ],

    each term the mean absolute (``norm=l1``, CycleGAN's) or squared (``l2``) error per pixel. 0 exactly when
    F inverts G on the a's and G inverts F on the b's. ``terms`` returns the two sides; G(a) and F(b), when
    already computed (for the adversarial terms), can be passed in to save a forward pass.
    """

    def __init__(self, norm: Norm = "l1") -> None:
        super().__init__()
        self.pixel = LOSSES.create("pixel", norm)

    def terms(
        self,
        a_to_b: Callable[[Tensor], Tensor],
        b_to_a: Callable[[Tensor], Tensor],
        a: Tensor,
        b: Tensor,
        fake_b: Tensor | None = None,
        fake_a: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        fake_b = a_to_b(a) if fake_b is None else fake_b
        fake_a = b_to_a(b) if fake_a is None else fake_a
        return self.pixel(b_to_a(fake_b), a), self.pixel(a_to_b(fake_a), b)

    def forward(
        self,
        a_to_b: Callable[[Tensor], Tensor],
        b_to_a: Callable[[Tensor], Tensor],
        a: Tensor,
        b: Tensor,
        fake_b: Tensor | None = None,
        fake_a: Tensor | None = None,
    ) -> Tensor:
        cycle_a, cycle_b = self.terms(a_to_b, b_to_a, a, b, fake_b, fake_a)
        return cycle_a + cycle_b
