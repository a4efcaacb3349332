"""The identity networks an evaluation measures with, and what to say when one is missing.

Every network registered in ``IDENTITY_ENCODERS`` that can be loaded here is used; one whose
weights are not built on this machine (``swaplab identity build NAME``) is left out with a one-line
warning that names the command, and never built behind the user's back. ``dlib-resnet`` must load:
the distribution distances use it. Also the warning for a model trained with an identity loss on a
network that measures it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from torch import nn

from swaplab.evaluate.results import METRIC_NETWORK
from swaplab.identity.registry import IDENTITY_ENCODERS

__all__ = ["encoder", "identity_loss_warnings", "load_encoders"]


@functools.cache
def encoder(name: str) -> nn.Module:
    """The identity network ``name``, loaded once per process (a missing one is retried on each call)."""
    return IDENTITY_ENCODERS.create(name).eval()


def load_encoders(names: Sequence[str] = ()) -> tuple[dict[str, nn.Module], list[str]]:
    """Every registered identity network (or ``names``) that loads here, and a warning for each that does not."""
    from swaplab.identity.lfw_arcface import IdentityNetworkMissing

    wanted = list(names) or IDENTITY_ENCODERS.names()
    if METRIC_NETWORK not in wanted:
        wanted.insert(0, METRIC_NETWORK)
    encoders, warnings = {}, []
    for name in wanted:
        try:
            encoders[name] = encoder(name)
        except IdentityNetworkMissing as err:
            warnings.append(f"identity network {name!r} not measured: {err}")
        except Exception as err:  # noqa: BLE001 - a damaged weights file is reported, not fatal
            if name == METRIC_NETWORK:
                raise
            warnings.append(f"identity network {name!r} not measured: {type(err).__name__}: {err}")
    return encoders, warnings


def identity_loss_warnings(card: dict[str, Any] | None, metric_networks: Sequence[str]) -> list[str]:
    """Warn when a model was trained with an identity loss on a network the metrics also use.

    The card's ``identity.loss_network`` names it (``loss_config.identity`` gives the weight).
    """
    card = card or {}
    network = (card.get("identity") or {}).get("loss_network")
    weight = float(((card.get("loss_config") or {}).get("identity") or {}).get("weight", 0.0) or 0.0)
    if network and weight > 0 and network in metric_networks:
        others = [n for n in metric_networks if n != network]
        advice = f"read the {', '.join(others)} numbers instead" if others else "no independent network is built here"
        return [
            f"this model was trained with an identity loss (weight {weight:g}) on {network}, the same network "
            f"that measures identity here: its {network} identity numbers are optimised, not measured; {advice}"
        ]
    return []
