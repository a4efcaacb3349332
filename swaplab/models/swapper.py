"""The swapper contract: the one small protocol the swap stage and the evaluator call on any exported model.

A ``Swapper`` takes aligned target faces (N, 3, R, R), float RGB in [0, 1], R = ``resolution``,
aligned with ``template``, and returns a ``SwapOutput`` (the swapped faces and a mask, both at R).

- ``conditions_on``: the name of the identity network (``IDENTITY_ENCODERS``) whose embedding of a
  photo of the source person ``swap`` needs, or None when the model swaps in the one identity it
  was trained on (per-pair models). The caller embeds the source with that network; the model
  never guesses. ``loss_network``: the identity network its training loss used (the evaluator
  warns when it also measures with it).
- ``reconstruction_sides``: which faces it can give back through its own path, for reconstruction
  scores: per-pair models ``("src", "dst")``, identity-conditioned ones ``("self",)`` (a face swapped
  with its own identity).
- ``configure(**options)``: settings of iterative models (a sampler, its steps); models without any
  refuse every option.
- ``generator`` (optional, in ``swap``): the randomness of stochastic models, so results repeat.

Each kind registers in ``SWAPPERS`` and is built from a card by ``load_swapper``; a new model family
that fits an existing kind (a generator ``g(target, identity)``) needs no new kind at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from swaplab.models.card import CardError, build_model, load_weights, read_card
from swaplab.registry import Registry

__all__ = [
    "SWAPPERS",
    "IdentitySwapper",
    "PerPairSwapper",
    "SwapOutput",
    "Swapper",
    "card_takes_a_source",
    "load_swapper",
]

Tensor = torch.Tensor

SWAPPERS: Registry[type[Swapper]] = Registry(
    "swapper kind", providers=("swaplab.models.diffusion_swapper", "swaplab.models.faceshifter", "swaplab.models.fsgan")
)


class SwapOutput(NamedTuple):
    rgb: Tensor  # (N, 3, R, R) in [0, 1]
    mask: Tensor  # (N, 1, R, R) in [0, 1]; all ones when the model draws none


class Swapper(nn.Module):
    """Base of every exported swap model (see the module docstring for the contract)."""

    reconstruction_sides: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: nn.Module, card: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.card = card
        self.resolution = int(card["resolution"])
        self.template = (card.get("alignment") or {}).get("template", "whole_face")
        identity = card.get("identity") or {}
        self.conditions_on: str | None = identity.get("conditions_on")
        self.loss_network: str | None = identity.get("loss_network")

    def swap(
        self, targets: Tensor, source: Tensor | None = None, generator: torch.Generator | None = None
    ) -> SwapOutput:
        """``targets`` rendered with the source identity: ``source`` (N, D) or (1, D) embeddings by
        ``conditions_on`` (None for models that learned their source)."""
        raise NotImplementedError

    def reconstruct(self, faces: Tensor, side: str, identity: Tensor | None = None) -> SwapOutput:
        """``faces`` given back through the model's own path for ``side`` (one of ``reconstruction_sides``)."""
        raise NotImplementedError

    def configure(self, **options: Any) -> None:
        if options:
            raise ValueError(f"this {self.card.get('arch')} model takes no options, got {', '.join(sorted(options))}")

    def forward(self, targets: Tensor, source: Tensor | None = None) -> SwapOutput:
        return self.swap(targets, source)

    def _check_side(self, side: str) -> None:
        if side not in self.reconstruction_sides:
            raise ValueError(f"this model reconstructs {', '.join(self.reconstruction_sides)}, not {side!r}")

    @classmethod
    def from_card(cls, card: dict[str, Any], weights: dict[str, Tensor]) -> Swapper:
        model = build_model(card)
        try:
            model.load_state_dict(weights)
        except RuntimeError as err:  # a card edited to other sizes than the weights have
            first = str(err).strip().splitlines()[-1].strip()
            raise CardError(f"the weights do not fit the model model.json describes ({first})") from None
        return cls(model, card)


@SWAPPERS.register("per-pair")
class PerPairSwapper(Swapper):
    """A per-pair autoencoder (``swaplab.models.per_pair``): its source identity is fixed by training."""

    reconstruction_sides = ("src", "dst")

    def swap(
        self, targets: Tensor, source: Tensor | None = None, generator: torch.Generator | None = None
    ) -> SwapOutput:
        if source is not None:
            raise ValueError("a per-pair model swaps in the identity it was trained on: it takes no source")
        return SwapOutput(*self.model.swap(targets))

    def reconstruct(self, faces: Tensor, side: str, identity: Tensor | None = None) -> SwapOutput:
        self._check_side(side)
        path = self.model.reconstruct_src if side == "src" else self.model.reconstruct_dst
        return SwapOutput(*path(faces))


@SWAPPERS.register("identity-conditioned")
class IdentitySwapper(Swapper):
    """A generator ``model(target, identity)`` that returns the swap, or (swap, mask): SimSwap-style
    one-shot models and any family that conditions on a source embedding."""

    reconstruction_sides = ("self",)

    def swap(
        self, targets: Tensor, source: Tensor | None = None, generator: torch.Generator | None = None
    ) -> SwapOutput:
        out = self.model(targets, self._per_target(targets, source))
        rgb, mask = out if isinstance(out, tuple) else (out, torch.ones_like(out[:, :1]))
        return SwapOutput(rgb, mask)

    def reconstruct(self, faces: Tensor, side: str, identity: Tensor | None = None) -> SwapOutput:
        self._check_side(side)
        return self.swap(faces, identity)

    def _per_target(self, targets: Tensor, source: Tensor | None) -> Tensor:
        """The source embedding(s) as (N, D), one row per target, checked."""
        if source is None:
            raise ValueError(
                f"this model swaps in any person: give the source's {self.conditions_on} embedding (swap: source=PHOTO)"
            )
        source = source.reshape(-1, source.shape[-1]).to(targets.device, targets.dtype)
        if len(source) == 1:
            source = source.expand(len(targets), -1)
        if len(source) != len(targets) or not torch.isfinite(source).all():
            raise ValueError(f"need one finite source embedding or one per target, got {tuple(source.shape)}")
        return source


def card_takes_a_source(card: dict[str, Any]) -> bool:
    """Whether the model of ``card`` swaps in any person (a source photo per swap), read from the
    card and its swapper class alone, without loading weights."""
    if (card.get("identity") or {}).get("conditions_on") is not None:
        return True
    kind = card.get("swapper")
    return bool(kind in SWAPPERS and getattr(SWAPPERS.get(kind), "takes_source_face", False))


def load_swapper(path: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> Swapper:
    """The exported model at ``path`` behind the swapper contract, in eval mode."""
    card, weights = read_card(path)
    kind = card.get("swapper")
    if not kind:
        raise CardError(f"{path}: a {card.get('arch')} model, not a face swapper (its card names no swapper kind)")
    try:
        cls = SWAPPERS.get(kind)
    except KeyError as err:
        raise CardError(f"{path}: {err.args[0]}") from None
    return cls.from_card(card, load_weights(card, weights, verify)).to(device).eval()
