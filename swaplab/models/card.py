"""Exported models on disk: ``model.safetensors`` beside a ``model.json`` card, read back without pickle.

The card says what the weights are (``arch`` and the ``model`` config that rebuild the network, the
training recipe that made them), what the swap stage needs (resolution, alignment template, the
``swapper`` kind and the identity networks it conditions on and was trained against), and where
they came from. ``read_card`` checks the format and version and upgrades cards written by older
swaplab versions in one place; ``load_model`` rebuilds the bare network from ``MODELS``. This
module never trains and never reads run folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from swaplab.config import ConfigError, from_dict
from swaplab.io.atomic import sha256_file
from swaplab.models.factory import MODELS

__all__ = ["CARD_FORMAT", "CARD_VERSION", "CardError", "load_model", "load_weights", "read_card"]

CARD_FORMAT = "swaplab-model"
#: 2: cards name their ``recipe``, ``swapper`` and ``identity`` networks (1: ``kind`` only).
CARD_VERSION = 2
#: Version-1 cards said what a model was by a ``kind`` sentence; the swapper kinds they mean.
_V1_SWAPPERS = {"per-pair face swap": "per-pair", "one-shot face swap": "identity-conditioned"}


class CardError(ValueError):
    """A model folder whose card is missing, unreadable, of another format or version, or inconsistent."""


def read_card(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The model card (upgraded to the current version) and the weights' path, from a model folder,
    its ``model.json`` or its ``model.safetensors``."""
    path = Path(path)
    card_path = path / "model.json" if path.is_dir() else path.with_name("model.json")
    if not card_path.is_file():
        if path.is_dir() and (path / "config.yaml").is_file():
            raise CardError(f"{path} is a run folder, not a model: export it first (swaplab export {path} -o MODEL)")
        raise CardError(f"{path}: no model.json here; export a trained run with `swaplab export RUN -o MODEL`")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # ValueError: bad JSON or bad UTF-8
        raise CardError(f"{card_path}: not a readable model card ({err})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise CardError(f"{card_path} is not a swaplab model card (format={found!r})")
    version = card.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > CARD_VERSION:
        raise CardError(
            f"{card_path} is a version {version} model card; this swaplab reads versions up to {CARD_VERSION}: "
            "upgrade swaplab"
        )
    for key in ("weights", "model", "identity", "loss_config"):
        if key in card and card[key] is not None and not isinstance(card[key], dict):
            raise CardError(f"{card_path}: its field {key!r} is a {type(card[key]).__name__}, not an object")
    if version < CARD_VERSION:
        card = _upgrade(card)
    weights = (card.get("weights") or {}).get("file")
    if not weights or not isinstance(weights, str):
        raise CardError(f"{card_path}: names no weights file")
    if Path(weights).name != weights or weights in (".", ".."):
        raise CardError(f"{card_path}: its weights file {weights!r} is not a file beside it")
    return card, card_path.parent / weights


def _upgrade(card: dict[str, Any]) -> dict[str, Any]:
    """A version-1 card as version 2 (the fields the contract reads; nothing is written back)."""
    card = dict(card)
    kind = card.get("kind", "")
    card["swapper"] = _V1_SWAPPERS.get(kind) if isinstance(kind, str) else None
    identity = card.get("identity") or {}
    loss_identity = (card.get("loss_config") or {}).get("identity") or {}
    loss_network = loss_identity.get("network") if isinstance(loss_identity, dict) else None
    conditioned = card["swapper"] == "identity-conditioned"
    card["identity"] = {
        "conditions_on": identity.get("network", "dlib-resnet") if conditioned else None,
        "loss_network": loss_network or ("dlib-resnet" if conditioned else None),
    }
    card["recipe"] = {"per-pair": "per-pair", "identity-conditioned": "oneshot"}.get(card["swapper"] or "")
    card["version"] = CARD_VERSION
    return card


def load_weights(card: dict[str, Any], weights: Path, verify: bool = True) -> dict[str, torch.Tensor]:
    """The weights of a card, checked against the card's sha256 (``verify``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights.is_file():
        raise CardError(f"{weights}: the weights file named by model.json is missing")
    if verify and sha256_file(weights) != (card.get("weights") or {}).get("sha256"):
        raise CardError(f"{weights}: hash mismatch with model.json: the weights file is corrupt or replaced")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise CardError(f"{weights}: not a readable safetensors file ({err})") from None


def build_model(card: dict[str, Any]) -> nn.Module:
    """The network ``card["arch"]`` names, built from ``card["model"]`` (weights not loaded)."""
    try:
        cls = MODELS.get(str(card.get("arch")))
    except KeyError as err:
        raise CardError(f"model card: {err.args[0]}") from None
    if not isinstance(card.get("model"), dict):
        raise CardError("model card: it has no model config (the 'model' object)")
    try:
        config = from_dict(cls.config_type, card["model"], prefix="model")
        return cls(config)
    except (ConfigError, KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        # A hand-edited config can be of the right types yet describe no buildable network.
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CardError(f"model card: its model config does not fit {cls.__name__}: {reason}") from None


def load_model(path: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> nn.Module:
    """The exported network in eval mode, rebuilt from its card alone (no run folder, no pickle)."""
    card, weights = read_card(path)
    model = build_model(card)
    try:
        model.load_state_dict(load_weights(card, weights, verify))
    except RuntimeError as err:  # a card edited to other sizes than the weights have
        first = str(err).strip().splitlines()[-1].strip()
        raise CardError(f"{weights}: the weights do not fit the model model.json describes ({first})") from None
    return model.to(device).eval()
