"""The generative-model contract: what ``swaplab sample`` and the zoo study may ask of a model that makes images.

A ``GenerativeModel`` declares its ``capabilities`` (a subset of ``CAPABILITIES``) and implements
the matching methods; images are float (N, C, R, R) in [0, 1], ``image_shape`` = (C, R, R):

- ``sample(n, generator, labels)``: new images (conditional models take ``labels`` (n,), class or
  identity indices below ``num_classes``);
- ``reconstruct(x)``: the images given back through the model (autoencoders);
- ``encode(x)`` / ``decode(z)``: to and from the code, which ``interpolate`` walks linearly;
- ``configure(**options)``: settings of iterative models (a sampler and its steps); none by default.

The exported card lists the capabilities (``generative.capabilities``), so callers ask the card,
never the object. Nothing here trains.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["CAPABILITIES", "GenerativeModel"]

Tensor = torch.Tensor

CAPABILITIES = ("sample", "reconstruct", "interpolate", "conditional")


class GenerativeModel(nn.Module):
    """Base of the zoo's models (see the module docstring)."""

    capabilities: ClassVar[tuple[str, ...]] = ()
    image_shape: tuple[int, int, int] = (1, 8, 8)
    num_classes: int = 0

    def sample(self, n: int, generator: torch.Generator | None = None, labels: Tensor | None = None) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not sample")

    def reconstruct(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not reconstruct")

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no code to encode to")

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no code to decode from")

    def interpolate(self, a: Tensor, b: Tensor, steps: int = 8) -> Tensor:
        """(steps, C, R, R): the decodings along the straight line between the codes of images ``a`` and ``b``."""
        za, zb = self.encode(a[None]), self.encode(b[None])
        weights = torch.linspace(0.0, 1.0, steps, device=za.device).view(-1, *([1] * (za.ndim - 1)))
        return self.decode(za + weights * (zb - za))

    def configure(self, **options: Any) -> None:
        if options:
            raise ValueError(f"{type(self).__name__} takes no options, got {', '.join(sorted(options))}")

    def noise(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
        """Standard normal noise on the model's device (drawn on the CPU when ``generator`` is a CPU one)."""
        device = next(self.parameters()).device
        if generator is not None and generator.device.type != device.type:
            return torch.randn(shape, generator=generator).to(device)
        return torch.randn(shape, generator=generator, device=device)
