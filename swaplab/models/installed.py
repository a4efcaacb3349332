"""Networks swaplab builds itself and the swap stage loads: where their weights live, and loading them.

A built network (the face segmenter, the face restorer, the learned blender) is trained by a
recipe through ``swaplab nets build NAME`` into ``<user cache>/nets/NAME/`` and loaded from there
(or from the file named by its environment variable). Loading never trains: a missing network
raises ``NetworkMissing`` naming the command that builds it. Weights are safetensors with the
network's config as JSON in the header, so a file rebuilds its network without anything else.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from swaplab.config import from_dict, to_dict
from swaplab.registry import Registry
from swaplab.system import user_cache_dir

__all__ = [
    "BUILT_NETWORKS",
    "BuiltNetwork",
    "NetworkMissing",
    "installed_weights",
    "load_built",
    "read_built",
    "weights_header",
]

#: The header key of a built network's weights file: JSON ``{"network": NAME, "config": {...}}``.
HEADER_KEY = "swaplab-built-network"


class NetworkMissing(FileNotFoundError):
    """A built network whose weights are not on this machine."""


@dataclass(frozen=True)
class BuiltNetwork:
    """How one built network is made and found: its module class and config type, the variable
    that may name a weights file, and what building it costs."""

    name: str
    module: Callable[[Any], nn.Module]  # config -> freshly initialised network
    config_type: type
    env: str
    build_cost: str


#: name -> ``BuiltNetwork``; the providers register theirs on import.
BUILT_NETWORKS: Registry[BuiltNetwork] = Registry(
    "built network",
    providers=(
        "swaplab.models.segmentation",
        "swaplab.models.restoration",
        "swaplab.models.learned_blend",
        "swaplab.models.glgan_blend",
        "swaplab.models.glgan_smooth",
    ),
)


def installed_weights(name: str) -> Path:
    """``<user cache>/nets/<name>/model.safetensors``: where ``swaplab nets build NAME`` installs."""
    return user_cache_dir() / "nets" / name / "model.safetensors"


def find_weights(name: str) -> Path | None:
    spec = BUILT_NETWORKS.get(name)
    given = os.environ.get(spec.env)
    if given:
        return Path(given).expanduser()
    path = installed_weights(name)
    return path if path.is_file() else None


def weights_header(name: str, config: Any) -> dict[str, str]:
    """The safetensors header of a built network's weights (one key, so the file's hash is stable)."""
    return {HEADER_KEY: json.dumps({"network": name, "config": to_dict(config)}, sort_keys=True)}


def read_built(path: str | os.PathLike[str]) -> tuple[str, nn.Module]:
    """(name, network) rebuilt from a weights file written with ``weights_header``; strict load."""
    from safetensors import SafetensorError, safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    if HEADER_KEY not in header:
        raise ValueError(f"{path}: not a swaplab built network (no {HEADER_KEY} header)")
    described = json.loads(header[HEADER_KEY])
    spec = BUILT_NETWORKS.get(described["network"])
    net = spec.module(from_dict(spec.config_type, described["config"], prefix="model"))
    net.load_state_dict(tensors, strict=True)
    return spec.name, net


@functools.lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int) -> tuple[str, nn.Module]:
    # Built outside inference mode even when first asked for inside it (the swap stage runs so):
    # guidance differentiates through a cached network, which inference tensors would refuse.
    with torch.inference_mode(False):
        name, net = read_built(path)
    return name, net.requires_grad_(False).eval()


def load_built(name: str, path: str | os.PathLike[str] | None = None) -> nn.Module:
    """The built network ``name``, frozen in eval mode, from ``path`` or where it is installed.

    Loaded once per file (and file version) per process: the swap stage asks for it per face.
    Raises ``NetworkMissing`` with the command that builds it when there are no weights.
    """
    spec = BUILT_NETWORKS.get(name)
    weights = Path(path) if path is not None else find_weights(name)
    if weights is None:
        raise NetworkMissing(
            f"network {name} is not built on this machine: `swaplab nets build {name}` trains it "
            f"({spec.build_cost}), or set ${spec.env} to a weights file"
        )
    if not weights.is_file():
        raise NetworkMissing(f"{weights}: no such weights file for network {name}")
    found, net = _cached(str(weights.resolve()), weights.stat().st_mtime_ns)
    if found != name:
        raise ValueError(f"{weights} holds network {found}, not {name}")
    return net


def save_built(name: str, net: nn.Module, config: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``net``'s weights with its header, atomically."""
    from safetensors.torch import save_file

    from swaplab.io.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}
        save_file(tensors, str(tmp), metadata=weights_header(name, config))
        tmp.chmod(0o644)
    return path


def as_batch(images: Any, device: torch.device | str = "cpu") -> torch.Tensor:
    """RGB uint8 (H, W, 3) or (N, H, W, 3) arrays -> float N x 3 x H x W in [0, 1]."""
    tensor = torch.as_tensor(images)
    if tensor.ndim == 3:
        tensor = tensor[None]
    return tensor.permute(0, 3, 1, 2).float().div(255.0).contiguous().to(device)
