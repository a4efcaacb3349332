"""swaplab's own identity network: a compact ResNet trained with an ArcFace margin on LFW's training split.

The second, independent identity encoder of the evaluator (``IDENTITY_ENCODERS["lfw-arcface"]``),
so that an identity loss on dlib's network and an identity metric never share one network
unnoticed. This module holds the network, the margin head, the weights file format and the user
cache; training and the LFW verification protocol live in ``swaplab.faces.lfw_identity_train``.
It must not detect faces (callers pass chips) and never ships or downloads weights.

Conventions: chips are float32 N x 3 x S x S, RGB, values in [0, 1], cut like ``dlib.get_face_chip``
at the 5 dlib landmarks (``chip_from_landmarks``) with the network's ``chip_size`` and
``chip_padding``; embeddings are L2-normalised rows compared by cosine similarity.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from swaplab.config import ConfigError, from_dict, to_dict
from swaplab.faces.identity import IDENTITY_ENCODERS

__all__ = [
    "ENCODER_NAME",
    "PRESET_ENV",
    "WEIGHTS_ENV",
    "WEIGHTS_FORMAT",
    "BasicBlock",
    "CompactFaceNet",
    "IdentityNetConfig",
    "MarginConfig",
    "MarginHead",
    "load_identity_weights",
    "load_lfw_identity",
    "margin_logits",
    "save_identity_weights",
    "user_cache_dir",
]

log = logging.getLogger(__name__)

ENCODER_NAME = "lfw-arcface"
#: A weights file to use instead of the cached, self-trained one.
WEIGHTS_ENV = "SWAPLAB_LFW_ARCFACE"
#: The training preset whose weights the registered factory loads (or trains): tests set ``test``.
PRESET_ENV = "SWAPLAB_IDNET_PRESET"
WEIGHTS_FORMAT = "swaplab-identity-net"
WEIGHTS_VERSION = 1


# -- configuration --------------------------------------------------------------------------
@dataclass
class IdentityNetConfig:
    """The network's shape and the chip it reads (everything needed to rebuild it from weights)."""

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


@dataclass
class MarginConfig:
    """The additive margin of the classification head (ArcFace or CosFace)."""

    kind: Literal["arcface", "cosface"] = "arcface"
    margin: float = 0.5  # ArcFace: added to the angle (radians); CosFace: subtracted from the cosine
    scale: float = 32.0  # logits = scale * (margined) cosine
    warmup_steps: int = 0  # the margin grows linearly from 0 over these steps (eases training from scratch)

    def __post_init__(self) -> None:
        if self.scale <= 0 or self.margin < 0 or self.warmup_steps < 0:
            raise ConfigError("head.scale must be positive, head.margin and head.warmup_steps non-negative")


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


# -- the margin head ------------------------------------------------------------------------
def margin_logits(
    cosine: torch.Tensor,
    labels: torch.Tensor,
    margin: float,
    scale: float,
    kind: Literal["arcface", "cosface"] = "arcface",
) -> torch.Tensor:
    """Scaled logits with an additive margin on each row's true class.

    ``cosine`` is N x C (cosines between embeddings and class centres), ``labels`` N class indices.
    ArcFace replaces the true class's cos(theta) by cos(theta + margin), with theta + margin capped
    at pi so the logit keeps falling as the angle grows; CosFace by cos(theta) - margin. Every
    logit is multiplied by ``scale``. Computed in float32 whatever the input's dtype.
    """
    cosine = cosine.float()
    target = cosine.gather(1, labels.view(-1, 1))
    if kind == "arcface":
        # acos has an infinite slope at +-1: keep the angle a hair inside.
        theta = torch.acos(target.clamp(-1.0 + 1e-6, 1.0 - 1e-6))
        margined = torch.cos(torch.clamp(theta + margin, max=math.pi))
    elif kind == "cosface":
        margined = target - margin
    else:
        raise ValueError(f"unknown margin kind {kind!r}: 'arcface' or 'cosface'")
    return cosine.scatter(1, labels.view(-1, 1), margined) * scale


class MarginHead(nn.Module):
    """Class centres on the unit sphere and the margin logits of embeddings against them."""

    def __init__(self, embedding_dim: int, num_classes: int, config: MarginConfig | None = None) -> None:
        super().__init__()
        self.config = config or MarginConfig()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """N x C cosines between the embeddings and every class centre (float32)."""
        return F.normalize(embeddings.float(), dim=1) @ F.normalize(self.weight.float(), dim=1).t()

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, margin: float | None = None) -> torch.Tensor:
        """Margin logits N x C; ``margin`` overrides the configured one (for a margin warm-up)."""
        cfg = self.config
        return margin_logits(
            self.cosine(embeddings), labels, cfg.margin if margin is None else margin, cfg.scale, cfg.kind
        )


# -- weights files and the cache --------------------------------------------------------------
def user_cache_dir() -> Path:
    """swaplab's user cache: ``$SWAPLAB_CACHE``, else ``$XDG_CACHE_HOME/swaplab``, else ``~/.cache/swaplab``."""
    env = os.environ.get("SWAPLAB_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "swaplab"


def save_identity_weights(net: CompactFaceNet, path: str | os.PathLike[str], metadata: dict[str, Any]) -> Path:
    """Write ``path`` (safetensors: the weights, and the net config in its header) and ``path``.json.

    Both are written atomically; the JSON holds ``metadata`` plus the format, the net config and
    the weights' sha256, and is written last, so its presence means the pair is complete.
    """
    from safetensors.torch import save_file

    from swaplab.io.atomic import atomic_path, atomic_write_json
    from swaplab.train.checkpoint import model_tensors, sha256_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": WEIGHTS_FORMAT, "net": json.dumps(to_dict(net.config), sort_keys=True)}
    if net.cosine_threshold is not None:
        header["cosine_threshold"] = repr(float(net.cosine_threshold))
    with atomic_path(path) as tmp:
        save_file(model_tensors(net), str(tmp), metadata=header)
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
    """Rebuild a :class:`CompactFaceNet` from a weights file written by :func:`save_identity_weights`.

    The architecture comes from the safetensors header (or, failing that, the JSON beside it);
    the load is strict, so a file of another shape fails with the names of the mismatched tensors.
    The sha256 recorded in the JSON, when there is one, is checked.
    """
    from safetensors import SafetensorError, safe_open

    from swaplab.train.checkpoint import sha256_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such identity-network weights file")
    meta_file = metadata_path(path)
    document = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    if document.get("sha256") and document["sha256"] != sha256_file(path):
        raise ValueError(f"{path}: sha256 differs from {meta_file.name}'s: a damaged or replaced weights file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    net_dict = json.loads(header["net"]) if "net" in header else document.get("net")
    if net_dict is None:
        raise ValueError(f"{path}: records no network config (neither in its header nor in {meta_file.name})")
    net = CompactFaceNet(from_dict(IdentityNetConfig, net_dict, prefix="net"))
    net.load_state_dict(tensors, strict=True)
    threshold = header.get("cosine_threshold", document.get("cosine_threshold"))
    net.cosine_threshold = None if threshold is None else float(threshold)
    return net


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path``: two processes never train the same weights at once."""
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prepared(net: CompactFaceNet, device: str | torch.device, channels_last: bool) -> CompactFaceNet:
    net = net.requires_grad_(False).eval()
    return net.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@IDENTITY_ENCODERS.register(ENCODER_NAME)
def load_lfw_identity(
    path: str | os.PathLike[str] | None = None,
    *,
    preset: str | None = None,
    train_if_missing: bool = True,
    device: str | torch.device = "cpu",
    channels_last: bool = True,
    progress: bool = True,
) -> CompactFaceNet:
    """swaplab's LFW-trained identity network, frozen, in eval mode.

    Where the weights come from, in order: ``path``; the file named by ``$SWAPLAB_LFW_ARCFACE``;
    the user cache (:func:`user_cache_dir` ``/identity/lfw-arcface-<key>/model.safetensors``),
    where ``<key>`` hashes the training config of ``preset`` (default ``$SWAPLAB_IDNET_PRESET``,
    else ``"default"``). With no cached weights and ``train_if_missing``, the network trains
    itself first from the LFW data under ``swaplab.data.fetch.data_root()`` (about 20 CPU-minutes
    for ``default``, seconds for ``test``; progress shown and logged, resumable after a kill) and
    caches the result. Raises ``FileNotFoundError`` naming ``swaplab data fetch lfw`` when the
    LFW data is missing.
    """
    given = path if path is not None else os.environ.get(WEIGHTS_ENV) or None
    if given is not None:
        return _prepared(load_identity_weights(given), device, channels_last)

    from swaplab.faces.lfw_identity_train import preset_config, train_and_export, weights_path

    cfg = preset_config(preset or os.environ.get(PRESET_ENV) or "default")
    weights = weights_path(cfg)
    if not metadata_path(weights).is_file():
        if not train_if_missing:
            raise FileNotFoundError(
                f"no trained {ENCODER_NAME} weights at {weights}: train them with "
                f"`python -m swaplab.faces.lfw_identity_train train`, or give a file with ${WEIGHTS_ENV}"
            )
        with _exclusive(weights.parent / ".lock"):
            if not metadata_path(weights).is_file():  # another process may have finished meanwhile
                log.warning(
                    "%s: no cached weights at %s; training them now (preset %r, resumable if interrupted)",
                    ENCODER_NAME,
                    weights,
                    cfg.name,
                )
                train_and_export(cfg, progress=progress)
    return _prepared(load_identity_weights(weights), device, channels_last)
