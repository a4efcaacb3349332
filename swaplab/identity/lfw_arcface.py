"""swaplab's own identity network: a compact ResNet trained with an ArcFace margin on LFW's training split.

The second, independent identity network of the evaluator (``IDENTITY_ENCODERS["lfw-arcface"]``),
so that an identity loss on dlib's network and an identity metric never share one network
unnoticed. This module holds the network, its weights file and where built weights are installed.
Loading never trains: without weights it raises ``IdentityNetworkMissing``, whose message names
the command that builds them (the ``identity-net`` training recipe, ``swaplab identity build``).
It must not detect faces (callers pass chips) and never ships or downloads weights.

Conventions: chips are float32 N x 3 x S x S, RGB, values in [0, 1], cut like ``dlib.get_face_chip``
at the 5 dlib landmarks (``swaplab.identity.chips``) with the network's ``chip_size`` and
``chip_padding``; embeddings are L2-normalised rows compared by cosine similarity.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from swaplab.config import ConfigError, from_dict, to_dict
from swaplab.identity.registry import IDENTITY_ENCODERS
from swaplab.system import user_cache_dir

__all__ = [
    "ENCODER_NAME",
    "WEIGHTS_ENV",
    "WEIGHTS_FORMAT",
    "BasicBlock",
    "CompactFaceNet",
    "IdentityNetConfig",
    "IdentityNetworkMissing",
    "find_weights",
    "installed_weights",
    "load_identity_weights",
    "load_lfw_arcface",
    "save_identity_weights",
]

log = logging.getLogger(__name__)

ENCODER_NAME = "lfw-arcface"
#: A weights file to use instead of the installed one.
WEIGHTS_ENV = "SWAPLAB_LFW_ARCFACE"
WEIGHTS_FORMAT = "swaplab-identity-net"
WEIGHTS_VERSION = 1
#: What building the default network costs on the project's 2-core CPU (docs/evaluation.md).
BUILD_COST = "about 20 CPU-minutes"


class IdentityNetworkMissing(FileNotFoundError):
    """An identity network whose weights have not been built (or given) on this machine."""


# -- configuration --------------------------------------------------------------------------
@dataclass
class IdentityNetConfig:
    """The network's shape and the chip it reads (everything needed to rebuild it from weights)."""

    name: str = "lfw-arcface"

    chip_size: int = 64  # side of the dlib-geometry face chip, pixels
    chip_padding: float = 0.2  # dlib's chip padding (0.25 in dlib's own net): context around the face
    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels of each stage; every stage halves the side
    blocks: tuple[int, ...] = (1, 2, 2, 1)  # basic residual blocks per stage
    embedding_dim: int = 128
    dropout: float = 0.0  # before the embedding layer (ArcFace's BN-Dropout-FC-BN output)

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.blocks) or not self.widths:
            raise ConfigError(f"net.widths {self.widths} and net.blocks {self.blocks} must be equally long")
        if min(self.blocks) < 1 or min(self.widths) < 1 or self.embedding_dim < 1:
            raise ConfigError("net.widths, net.blocks and net.embedding_dim must be positive")
        if self.chip_size % (2 ** len(self.widths)):
            raise ConfigError(
                f"net.chip_size={self.chip_size} must be divisible by 2^{len(self.widths)} (one halving per stage)"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"net.dropout must be in [0, 1), got {self.dropout}")


# -- the network ----------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut (1x1 conv + BN when the shape changes), then PReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.act(y + self.shortcut(x))


class CompactFaceNet(nn.Module):
    """A small ResNet face embedder, sized for a 2-core CPU (2.1 M parameters by default).

    Stem conv3x3 (stride 1) - BN - PReLU, then one stage of :class:`BasicBlock` per width, each
    starting with a stride-2 block, then ArcFace's "E" output (BN - dropout - flatten - FC - BN;
    Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019):
    the fully connected layer sees the whole final map, which keeps where features are on the
    face. A plain residual net rather than MobileFaceNet because depthwise convolutions train
    2.2-2.7x slower here per 64 px chip in bf16 (benchmarks/bench_identity_net.py).

    ``forward`` maps N x 3 x S x S RGB chips in [0, 1] (S = ``chip_size``) to L2-normalised
    N x ``embedding_dim`` embeddings; with ``flip_average`` (default) it averages the raw
    embeddings of the chip and its mirror image first. ``embedding`` is the raw training-time
    output, ``features`` the globally pooled last feature map (N x widths[-1]) for distribution
    distances. Gradients reach the chips (identity losses); the factory freezes the parameters.
    """

    def __init__(self, config: IdentityNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or IdentityNetConfig()
        self.chip_size = cfg.chip_size
        self.chip_padding = cfg.chip_padding
        self.embedding_dim = cfg.embedding_dim
        self.feature_dim = cfg.widths[-1]
        self.flip_average = True
        # Cosine above which two chips show the same person, calibrated on people held out of
        # training (None when unknown); the evaluator itself needs no threshold.
        self.cosine_threshold: float | None = None
        stem = cfg.widths[0]
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.PReLU(stem))
        blocks, channels = [], stem
        for width, count in zip(cfg.widths, cfg.blocks):
            for index in range(count):
                blocks.append(BasicBlock(channels, width, stride=2 if index == 0 else 1))
                channels = width
        self.body = nn.Sequential(*blocks)
        side = cfg.chip_size // 2 ** len(cfg.widths)
        self.output_bn = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(channels * side * side, cfg.embedding_dim)
        self.embedding_bn = nn.BatchNorm1d(cfg.embedding_dim)

    def _check(self, chips: torch.Tensor) -> None:
        if chips.ndim != 4 or chips.shape[1] != 3 or chips.shape[2:] != (self.chip_size, self.chip_size):
            raise ValueError(
                f"expected N x 3 x {self.chip_size} x {self.chip_size} chips, got {tuple(chips.shape)}: cut them "
                f"with chip_from_landmarks(images, landmarks5, size={self.chip_size}, padding={self.chip_padding})"
            )

    def feature_map(self, chips: torch.Tensor) -> torch.Tensor:
        """The normalised last feature map, N x widths[-1] x S/2^k x S/2^k."""
        self._check(chips)
        return self.output_bn(self.body(self.stem((chips - 0.5) * 2.0)))

    def embedding(self, chips: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) N x D embeddings: what the margin head trains."""
        return self.embedding_bn(self.fc(self.dropout(self.feature_map(chips)).flatten(1)))

    def features(self, chips: torch.Tensor) -> torch.Tensor:
        """Penultimate features for FD/KID: the last feature map averaged over space, N x widths[-1]."""
        return self.feature_map(chips).mean((2, 3))

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """L2-normalised N x D identity embeddings of N x 3 x S x S RGB chips in [0, 1]."""
        raw = self.embedding(chips)
        if self.flip_average:
            raw = raw + self.embedding(chips.flip(-1))
        return F.normalize(raw.float(), dim=1)


# -- weights files and where built weights live -----------------------------------------------
def installed_weights(name: str = ENCODER_NAME) -> Path:
    """``<user cache>/identity/<name>/model.safetensors``: where ``swaplab identity build`` installs."""
    return user_cache_dir() / "identity" / name / "model.safetensors"


def _legacy_weights() -> Path | None:
    """Weights cached by swaplab before training became a recipe (``identity/lfw-arcface-<key>/``):
    the ``default`` preset's, when one is there."""
    for card in sorted((user_cache_dir() / "identity").glob(f"{ENCODER_NAME}-*/model.json")):
        try:
            document = json.loads(card.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if (document.get("config") or {}).get("name") == "default" and card.with_suffix(".safetensors").is_file():
            return card.with_suffix(".safetensors")
    return None


def find_weights() -> Path | None:
    """The weights ``load_lfw_arcface`` would use: ``$SWAPLAB_LFW_ARCFACE``, the installed ones, or an
    older cache's; None when there are none."""
    given = os.environ.get(WEIGHTS_ENV)
    if given:
        return Path(given).expanduser()
    installed = installed_weights()
    if metadata_path(installed).is_file():
        return installed
    return _legacy_weights()


def save_identity_weights(net: CompactFaceNet, path: str | os.PathLike[str], metadata: dict[str, Any]) -> Path:
    """Write ``path`` (safetensors: the weights, and the net config in its header) and ``path``.json.

    Both are written atomically; the JSON holds ``metadata`` plus the format, the net config and
    the weights' sha256, and is written last, so its presence means the pair is complete.
    """
    from safetensors.torch import save_file

    from swaplab.io.atomic import atomic_path, atomic_write_json, sha256_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": WEIGHTS_FORMAT, "net": json.dumps(to_dict(net.config), sort_keys=True)}
    if net.cosine_threshold is not None:
        header["cosine_threshold"] = repr(float(net.cosine_threshold))
    with atomic_path(path) as tmp:
        tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}
        save_file(tensors, str(tmp), metadata=header)
        tmp.chmod(0o644)  # safetensors writes owner-only files; a cache is for reading
    document = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_VERSION,
        "encoder": ENCODER_NAME,
        "net": to_dict(net.config),
        "cosine_threshold": net.cosine_threshold,
        "weights": path.name,
        "sha256": sha256_file(path),
        **metadata,
    }
    atomic_write_json(metadata_path(path), document)
    return path


def metadata_path(weights: str | os.PathLike[str]) -> Path:
    return Path(weights).with_suffix(".json")


def load_identity_weights(path: str | os.PathLike[str]) -> CompactFaceNet:
    """Rebuild a :class:`CompactFaceNet` from its weights file: one exported by the ``identity-net``
    recipe (a model folder's ``model.safetensors``) or written by :func:`save_identity_weights`.

    The architecture comes from the safetensors header (or, failing that, the JSON beside it);
    the load is strict, so a file of another shape fails with the names of the mismatched tensors.
    The sha256 recorded in the JSON beside it, when there is one, is checked.
    """
    from safetensors import SafetensorError, safe_open

    from swaplab.io.atomic import sha256_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such identity-network weights file")
    meta_file = metadata_path(path)
    document = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    recorded = document.get("sha256") or (document.get("weights") or {}).get("sha256")
    if recorded and recorded != sha256_file(path):
        raise ValueError(f"{path}: sha256 differs from {meta_file.name}'s: a damaged or replaced weights file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    if WEIGHTS_FORMAT in header:  # exported by the identity-net recipe: one key, a JSON document
        described = json.loads(header[WEIGHTS_FORMAT])
        header = {"net": json.dumps(described["net"]), "cosine_threshold": described.get("cosine_threshold")}
    net_dict = json.loads(header["net"]) if "net" in header else document.get("net") or document.get("model")
    if net_dict is None:
        raise ValueError(f"{path}: records no network config (neither in its header nor in {meta_file.name})")
    net = CompactFaceNet(from_dict(IdentityNetConfig, net_dict, prefix="net"))
    net.load_state_dict(tensors, strict=True)
    threshold = header.get("cosine_threshold", document.get("cosine_threshold"))
    net.cosine_threshold = None if threshold is None else float(threshold)
    return net


def _prepared(net: CompactFaceNet, device: str | torch.device, channels_last: bool) -> CompactFaceNet:
    net = net.requires_grad_(False).eval()
    return net.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@IDENTITY_ENCODERS.register(ENCODER_NAME)
def load_lfw_arcface(
    path: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "cpu",
    channels_last: bool = True,
) -> CompactFaceNet:
    """swaplab's LFW-trained identity network, frozen, in eval mode.

    The weights come from ``path``, else ``find_weights()``. Loading never trains: without weights
    this raises ``IdentityNetworkMissing`` naming the command that builds them.
    """
    weights = Path(path) if path is not None else find_weights()
    if weights is None:
        raise IdentityNetworkMissing(
            f"identity network {ENCODER_NAME} is not built on this machine: `swaplab identity build "
            f"{ENCODER_NAME}` trains it on LFW's peopleDevTrain people ({BUILD_COST}), or set "
            f"${WEIGHTS_ENV} to a weights file"
        )
    return _prepared(load_identity_weights(weights), device, channels_last)
