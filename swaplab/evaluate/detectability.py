"""Detectability: train a small real-vs-swapped CNN on aligned face crops and report its held-out ROC AUC.

The detector, its typed config and presets (``config_group("detector")``), training, scoring,
safetensors + JSON persistence, and pair-aware train/test splits. It finds no faces and makes no
swaps: callers pass aligned crops (the evaluator builds them), and the AUC itself is ``roc_auc``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import cv2
import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn
from torch.nn import functional as F

from swaplab.config import ConfigError, config_group, from_dict, to_dict
from swaplab.evaluate.detection import roc_auc
from swaplab.evaluate.registry import register_metric
from swaplab.io.atomic import atomic_write_bytes, atomic_write_json
from swaplab.system import autocast_dtype

__all__ = [
    "DetectabilityResult",
    "DetectorConfig",
    "GroupSplit",
    "SwapDetector",
    "detectability_auc",
    "holdout_detectability",
    "measure_detectability",
    "prepare_crops",
    "split_groups",
    "train_detector",
]

#: What the evaluator and users may pass as a set of crops: uint8 or float [0, 1] N x 3 x H x W
#: tensors, a uint8 N x H x W x 3 RGB array, or a list of uint8 H x W x 3 RGB arrays.
Crops = torch.Tensor | np.ndarray | Sequence[np.ndarray]
Groups = Sequence[Hashable] | None

WEIGHTS_FILE = "detector.safetensors"
CARD_FILE = "detector.json"
FORMAT_VERSION = 1

# The three fixed high-pass kernels of the SRM residual models (Fridrich & Kodovsky, "Rich Models
# for Steganalysis of Digital Images", as used by RGB-N for manipulation detection): a 2nd-order
# 3x3 Laplacian-like, the 5x5 "KV" square, and a horizontal 2nd-order difference. Each kernel sums
# to zero, so flat colour gives no response and only fine texture, noise and edges remain.
_SRM_KERNELS = (
    [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]],
    [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]],
    [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
)
_SRM_SCALES = (4.0, 12.0, 2.0)
#: Residuals are truncated at this many grey levels (SRM's truncation): beyond it a residual is an
#: edge of the image content, not the noise texture that blending and upsampling change.
SRM_TRUNCATION = 3.0


# ------------------------------------------------------------------------------------------ config


@dataclass
class DetectorConfig:
    """How the detector is built and trained. Defaults are the ``default`` preset (CPU evaluation)."""

    name: str = "default"
    resolution: int = 64  # crops are resized to this square size (area when shrinking, bilinear when growing)
    widths: tuple[int, ...] = (16, 32, 64, 128)  # channels per stage; each stage after the first halves H, W
    convs_per_stage: int = 2  # 3x3 convs per stage (the first stage's first is the stem)
    high_pass: bool = True  # add the fixed SRM high-pass branch beside RGB
    dropout: float = 0.2  # before the linear head
    steps: int = 300  # optimiser steps (a fixed budget, whatever the number of crops)
    batch_size: int = 32  # crops per step, half real and half swapped
    lr: float = 3e-3  # AdamW peak learning rate (linear warmup, cosine decay to 0)
    warmup_steps: int = 20
    weight_decay: float = 5e-4  # on conv and linear weights only (not norms or biases)
    flip: bool = True  # random horizontal flips (faces are roughly symmetric; seams are not side-specific)
    shift: int = 3  # random translation of up to this many pixels at ``resolution`` (alignment jitter)
    jpeg_prob: float = 0.5  # share of training crops re-encoded as JPEG, real and swapped alike
    jpeg_quality: tuple[int, int] = (60, 95)  # JPEG quality drawn uniformly from this range (inclusive)
    paired_batches: bool = True  # with groups: each batch holds a real crop and a swap of the same groups
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast where the CPU/GPU has it
    channels_last: bool = True
    score_batch: int = 256  # crops per forward pass when scoring
    seed: int = 0  # weights, batch order, augmentation and the holdout split
    device: str = "cpu"

    def __post_init__(self) -> None:
        for key in ("resolution", "convs_per_stage", "steps", "batch_size", "score_batch"):
            if getattr(self, key) < 1:
                raise ConfigError(f"detector.{key} must be >= 1, got {getattr(self, key)}")
        if self.batch_size < 2:
            raise ConfigError(f"detector.batch_size must be >= 2 (one of each class), got {self.batch_size}")
        if not self.widths or min(self.widths) < 1:
            raise ConfigError(f"detector.widths must be positive channel counts, got {self.widths}")
        if self.high_pass and self.widths[0] < 2:
            raise ConfigError("detector.widths[0] must be >= 2 with high_pass (half of it is the high-pass branch)")
        if self.resolution < 2 ** (len(self.widths) - 1):
            raise ConfigError(f"detector.resolution {self.resolution} is too small for {len(self.widths)} stages")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.shift < 0:
            raise ConfigError("detector.lr must be > 0; weight_decay, warmup_steps and shift >= 0")
        if not 0 <= self.dropout < 1 or not 0 <= self.jpeg_prob <= 1:
            raise ConfigError("detector.dropout must be in [0, 1) and detector.jpeg_prob in [0, 1]")
        low, high = self.jpeg_quality
        if not 1 <= low <= high <= 100:
            raise ConfigError(f"detector.jpeg_quality must be 1 <= low <= high <= 100, got {self.jpeg_quality}")


config_group("detector").register("default")(DetectorConfig)
#: For tests: a few seconds on one thread, fp32 so scores are bit-stable across machines with and
#: without bf16.
config_group("detector").register("test")(
    functools.partial(
        DetectorConfig,
        name="test",
        resolution=48,
        widths=(8, 16, 32),
        steps=120,
        batch_size=16,
        warmup_steps=10,
        precision="fp32",
        channels_last=False,
    )
)


# ------------------------------------------------------------------------------------------ inputs


def _crop_batches(crops: Crops, name: str, chunk: int = 64) -> Iterator[torch.Tensor]:
    """Yield float32 N x 3 x H x W chunks in [0, 1] of ``crops``, validating types and ranges."""
    if isinstance(crops, torch.Tensor):
        if crops.ndim != 4 or crops.shape[1] != 3:
            raise ValueError(f"{name}: expected an N x 3 x H x W tensor, got shape {tuple(crops.shape)}")
        if crops.is_floating_point() and crops.numel():
            low, high = float(crops.min()), float(crops.max())
            if low < 0 or high > 1 or math.isnan(low + high):
                raise ValueError(f"{name}: float crops must lie in [0, 1], got [{low:.3g}, {high:.3g}]")
        elif crops.dtype != torch.uint8 and not crops.is_floating_point():
            raise ValueError(f"{name}: tensor crops must be uint8 or float in [0, 1], got {crops.dtype}")
        for start in range(0, len(crops), chunk):
            part = crops[start : start + chunk].detach().to("cpu")
            yield part.float() / 255.0 if part.dtype == torch.uint8 else part.float()
        return
    if isinstance(crops, np.ndarray):
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"{name}: numpy crops must be uint8 N x H x W x 3 RGB, got {crops.dtype} {crops.shape}")
        crops = list(crops)
    shapes = set()
    for index, image in enumerate(crops):
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"{name}[{index}]: expected a uint8 H x W x 3 RGB array, got {got}")
        shapes.add(image.shape)
    if len(shapes) > 1:
        raise ValueError(f"{name}: crops of one set must share one size, got {sorted(shapes)}")
    for start in range(0, len(crops), chunk):
        part = np.stack(crops[start : start + chunk])
        yield torch.from_numpy(part).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _input_size(crops: Crops) -> tuple[int, int] | None:
    """H, W of the crops as given (None for an empty set)."""
    if len(crops) == 0:
        return None
    if isinstance(crops, torch.Tensor):
        return int(crops.shape[-2]), int(crops.shape[-1])
    first = crops[0]
    return int(first.shape[0]), int(first.shape[1])


def _resize(batch: torch.Tensor, resolution: int) -> torch.Tensor:
    if batch.shape[-2:] == (resolution, resolution):
        return batch
    if batch.shape[-2] >= resolution and batch.shape[-1] >= resolution:
        # Area averaging when shrinking: bilinear would alias the very high frequencies (noise,
        # seams) the detector looks at into patterns that depend on the input size.
        return F.interpolate(batch, size=(resolution, resolution), mode="area")
    return F.interpolate(batch, size=(resolution, resolution), mode="bilinear", align_corners=False)


def prepare_crops(crops: Crops, resolution: int, name: str = "crops") -> torch.Tensor:
    """Crops at the detector's input size: a uint8 N x 3 x ``resolution`` x ``resolution`` RGB tensor.

    ``crops``: uint8 or float [0, 1] N x 3 x H x W tensors, a uint8 N x H x W x 3 RGB array or a list
    of uint8 H x W x 3 RGB arrays of one size (any H, W; non-square crops are stretched to square).
    The result is rounded to 8 bits: the detector always sees 8-bit images, as photos and swaps are.
    """
    out = [
        _resize(batch, resolution).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        for batch in _crop_batches(crops, name)
    ]
    return torch.cat(out) if out else torch.zeros(0, 3, resolution, resolution, dtype=torch.uint8)


def _check_sizes(named: dict[str, Crops]) -> None:
    """All sets non-empty and of one input size.

    A detector trained on real crops of one size and swaps of another learns the resizing (its
    blur and aliasing), not the swap, and its AUC would measure the pipeline, not the model.
    """
    sizes = {}
    for name, crops in named.items():
        if len(crops) == 0:
            raise ValueError(f"{name} is empty: detectability needs real and swapped crops in both sets")
        sizes[name] = _input_size(crops)
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{name} {h}x{w}" for name, (h, w) in sizes.items())
        raise ValueError(
            f"real and swapped crops must share one input size ({listing}): a detector could tell them "
            "apart by their resizing alone; align both at one size"
        )


def _as_groups(groups: Groups, count: int, name: str) -> list[Hashable] | None:
    if groups is None:
        return None
    groups = list(groups)
    if len(groups) != count:
        raise ValueError(f"{name}: {len(groups)} group labels for {count} crops")
    return groups


# ------------------------------------------------------------------------------------------ splits


class GroupSplit(NamedTuple):
    """Indices (int64, sorted) of a train/test split of real and swapped crops."""

    train_real: np.ndarray
    train_fake: np.ndarray
    test_real: np.ndarray
    test_fake: np.ndarray


def split_groups(
    n_real: int,
    n_fake: int,
    test_fraction: float = 0.3,
    seed: int = 0,
    real_groups: Groups = None,
    fake_groups: Groups = None,
) -> GroupSplit:
    """Split real and swapped crops into train and test so that no group straddles the two.

    A group is any hashable label: a target photo's id shared by the real crop and its swap (so a
    swap is never tested against a detector that saw its original), or a person's name (so no
    identity is seen in training and testing). Unlabelled crops are their own groups, drawn per
    class. About ``test_fraction`` of the groups go to test (at least one; at least one stays for
    training), chosen by ``seed``. Raises ValueError when a side ends up without one of the classes.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if n_real < 1 or n_fake < 1:
        raise ValueError(f"need real and swapped crops, got {n_real} real and {n_fake} swapped")
    real_labels = _as_groups(real_groups, n_real, "real_groups")
    fake_labels = _as_groups(fake_groups, n_fake, "fake_groups")
    # Unlabelled crops get labels no caller can pass (a tuple tagged with a private object).
    untagged = object()
    real_labels = real_labels or [(untagged, "real", i) for i in range(n_real)]
    fake_labels = fake_labels or [(untagged, "fake", i) for i in range(n_fake)]
    # Ordered by first appearance, then shuffled: independent of hash seeds and label types.
    unique = list(dict.fromkeys([*real_labels, *fake_labels]))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_test = min(max(1, round(test_fraction * len(unique))), len(unique) - 1) if len(unique) > 1 else 0
    test_labels = {unique[i] for i in order[:n_test]}

    def pick(labels: list[Hashable], test: bool) -> np.ndarray:
        return np.array([i for i, label in enumerate(labels) if (label in test_labels) == test], np.int64)

    split = GroupSplit(
        pick(real_labels, False), pick(fake_labels, False), pick(real_labels, True), pick(fake_labels, True)
    )
    empty = [name for name, idx in split._asdict().items() if len(idx) == 0]
    if empty:
        raise ValueError(f"the split left {', '.join(empty)} empty: give more groups or another test_fraction")
    return split


def _take(crops: Crops, index: np.ndarray) -> Crops:
    if isinstance(crops, (torch.Tensor, np.ndarray)):
        return crops[torch.from_numpy(index) if isinstance(crops, torch.Tensor) else index]
    return [crops[i] for i in index]


# ------------------------------------------------------------------------------------------ network


def _conv_block(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class SwapDetector(nn.Module):
    """A small CNN whose output is the logit of "this face crop is swapped".

    Why this shape:
    - Two input branches. RGB (normalised) sees colour and shading mismatches between the pasted
      face and its surroundings. The fixed SRM high-pass branch (3 kernels on each RGB channel,
      computed in fp32, truncated at ``SRM_TRUNCATION`` grey levels) sees the noise texture: a
      generated face is smoother than the camera noise around it, and a blend leaves a seam of
      changed texture. A fixed filter because a few hundred pairs are too few to learn one.
    - The first stage keeps full resolution, so seams one or two pixels wide are not averaged
      away before a convolution has seen them; later stages halve the size with strided convs.
    - The head pools both the mean (global colour cast, blur over the face) and the maximum
      (a seam or artefact in one place is enough evidence) of the last features.
    - BatchNorm: in eval mode a crop's score does not depend on the others in its batch.

    Input: float N x 3 x R x R RGB in [0, 1] at ``config.resolution``. Scoring: ``scores``.
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__()
        self.config = config or DetectorConfig()
        widths = self.config.widths
        kernels = torch.tensor(_SRM_KERNELS, dtype=torch.float32) / torch.tensor(_SRM_SCALES).view(3, 1, 1)
        # One copy of the 3 kernels per RGB channel: 9 residual maps (grouped conv, groups=3).
        self.register_buffer("srm", kernels.repeat(3, 1, 1).unsqueeze(1), persistent=False)
        branch = widths[0] // 2 if self.config.high_pass else 0
        self.rgb_stem = _conv_block(3, widths[0] - branch, 1)
        self.residual_stem = _conv_block(9, branch, 1) if self.config.high_pass else None
        extra = self.config.convs_per_stage - 1
        stages = [_conv_block(widths[0], widths[0], 1) for _ in range(extra)]
        for in_ch, out_ch in zip(widths[:-1], widths[1:]):
            stages += [_conv_block(in_ch, out_ch, 2), *(_conv_block(out_ch, out_ch, 1) for _ in range(extra))]
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(self.config.dropout)
        self.head = nn.Linear(2 * widths[-1], 1)

    def residuals(self, images: torch.Tensor) -> torch.Tensor:
        """The 9 truncated SRM residual maps of ``images`` (N x 3 x H x W in [0, 1]), in [-1, 1]."""
        # fp32 on purpose: under bf16 autocast the kernels' weights (1/12 ...) round and leave
        # errors of a few grey levels on values near 128, as large as the texture being measured.
        with torch.autocast(device_type=images.device.type, enabled=False):
            padded = F.pad(images.float() * 255.0, (2, 2, 2, 2), mode="reflect")
            residual = F.conv2d(padded, self.srm.to(padded.dtype), groups=3)
            return residual.clamp(-SRM_TRUNCATION, SRM_TRUNCATION) / SRM_TRUNCATION

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N,) for ``images`` N x 3 x R x R in [0, 1]; positive means "swapped"."""
        features = self.rgb_stem((images - 0.5) / 0.25)
        if self.residual_stem is not None:
            features = torch.cat([features, self.residual_stem(self.residuals(images))], dim=1)
        features = self.stages(features)
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        # The head in fp32: bf16 logits have 3 significant digits, and the many ties they make
        # would blunt the AUC's ranking.
        with torch.autocast(device_type=images.device.type, enabled=False):
            return self.head(self.dropout(pooled.float())).squeeze(1)

    # ---------------------------------------------------------------- scoring

    def _context(self) -> contextlib.AbstractContextManager:
        device = torch.device(self.config.device)
        dtype = autocast_dtype(self.config.precision, device)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    def _to_input(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        batch = batch_uint8.to(self.config.device).float().div_(255.0)
        return batch.contiguous(memory_format=torch.channels_last) if self.config.channels_last else batch

    @torch.no_grad()
    def logits(self, crops: Crops) -> np.ndarray:
        """Logits (N,) float64 of crops (any input size, see ``prepare_crops``); higher = more likely swapped."""
        prepared = prepare_crops(crops, self.config.resolution)
        was_training = self.training
        self.eval()
        out = []
        try:
            with self._context():
                for start in range(0, len(prepared), self.config.score_batch):
                    batch = self._to_input(prepared[start : start + self.config.score_batch])
                    out.append(self(batch).double().cpu())
        finally:
            self.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros(0)

    def scores(self, crops: Crops) -> np.ndarray:
        """Probability (N,) float64 in [0, 1] that each crop is swapped, as the detector judges it.

        Rank-based statistics (AUC) should use ``logits``: far from the boundary probabilities
        round to exactly 0 or 1 and tie.
        """
        return 1.0 / (1.0 + np.exp(-self.logits(crops)))

    # ---------------------------------------------------------------- persistence

    def save(self, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``folder/detector.safetensors`` (weights) and ``folder/detector.json`` (config, format).

        Both atomically; the weights first, so a card never points at missing or older weights.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {key: value.detach().to("cpu").contiguous() for key, value in self.state_dict().items()}
        atomic_write_bytes(folder / WEIGHTS_FILE, save_tensors(tensors, metadata={"format": str(FORMAT_VERSION)}))
        card = {"format": FORMAT_VERSION, "kind": "swaplab-swap-detector", "config": to_dict(self.config)}
        atomic_write_json(folder / CARD_FILE, {**card, **(extra or {})})
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> SwapDetector:
        """Load a detector written by ``save`` (never pickle); ``device`` overrides the saved one."""
        folder = Path(folder)
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
        if card.get("format") != FORMAT_VERSION:
            raise ValueError(f"{folder / CARD_FILE}: unknown detector format {card.get('format')!r}")
        config = from_dict(DetectorConfig, card["config"])
        if device is not None:
            config = dataclasses.replace(config, device=device)
        detector = cls(config)
        detector.load_state_dict(load_tensors((folder / WEIGHTS_FILE).read_bytes()))
        return detector.to(config.device).eval()


# ------------------------------------------------------------------------------------------ training


def _augment(batch: np.ndarray, config: DetectorConfig, rng: np.random.Generator) -> np.ndarray:
    """Training augmentation of a uint8 N x 3 x R x R batch, drawn from ``rng``.

    Both classes alike, so the detector cannot key on any of it: JPEG re-encoding at a random
    quality (swaps are often saved losslessly while photos are JPEGs; without this a detector can
    score "no JPEG blocks" instead of "swapped"), then a horizontal flip and a small shift
    (alignment jitter; reflect padding, as an aligned crop's border is also image content).
    """
    out = batch.copy()
    n, _, size, _ = out.shape
    jpeg = rng.random(n) < config.jpeg_prob
    quality = rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1, n)
    flip = rng.random(n) < (0.5 if config.flip else 0.0)
    shifts = rng.integers(-config.shift, config.shift + 1, (n, 2))
    for i in range(n):
        if jpeg[i]:
            bgr = np.ascontiguousarray(out[i].transpose(1, 2, 0)[..., ::-1])  # libjpeg's chroma needs true RGB order
            ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality[i])])
            if not ok:
                raise RuntimeError("OpenCV could not encode a JPEG")
            out[i] = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].transpose(2, 0, 1)
    if config.flip:
        out[flip] = out[flip][..., ::-1]
    if config.shift:
        pad = config.shift
        padded = np.pad(out, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
        for i in range(n):
            dy, dx = pad + shifts[i]
            out[i] = padded[i, :, dy : dy + size, dx : dx + size]
    return out


def _batch_indices(
    rng: np.random.Generator,
    half: int,
    n_real: int,
    n_fake: int,
    pairs: list[tuple[np.ndarray, np.ndarray]] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """``half`` real and ``half`` swapped indices; with pairs, both drawn from the same groups."""
    if pairs:
        chosen = rng.choice(len(pairs), half, replace=len(pairs) < half)
        real = np.array([rng.choice(pairs[g][0]) for g in chosen])
        fake = np.array([rng.choice(pairs[g][1]) for g in chosen])
        return real, fake
    return rng.choice(n_real, half, replace=n_real < half), rng.choice(n_fake, half, replace=n_fake < half)


def _group_pairs(real_groups: list[Hashable] | None, fake_groups: list[Hashable] | None) -> list | None:
    """For each group holding both classes: (its real indices, its swapped indices), in first-seen order."""
    if real_groups is None or fake_groups is None:
        return None
    real_of: dict[Hashable, list[int]] = {}
    fake_of: dict[Hashable, list[int]] = {}
    for i, label in enumerate(real_groups):
        real_of.setdefault(label, []).append(i)
    for i, label in enumerate(fake_groups):
        fake_of.setdefault(label, []).append(i)
    both = [label for label in real_of if label in fake_of]
    return [(np.array(real_of[label]), np.array(fake_of[label])) for label in both] or None


def _learning_rate(step: int, config: DetectorConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_detector(
    real: Crops,
    fake: Crops,
    config: DetectorConfig | None = None,
    *,
    real_groups: Groups = None,
    fake_groups: Groups = None,
) -> SwapDetector:
    """Train a ``SwapDetector`` on real and swapped face crops for ``config.steps`` steps.

    ``real``, ``fake``: aligned crops in any format ``prepare_crops`` takes, all of one input size.
    ``real_groups``/``fake_groups`` (optional, one hashable label per crop) tell which real crop
    and swap belong together (e.g. a target photo's id); with ``config.paired_batches`` each batch
    then draws a real crop and a swap of the same group, so the only difference the gradient sees
    is the swap itself, not who is in the photo (crops of groups without the other class are then
    not drawn). Each batch is half real, half swapped.

    Deterministic for a given seed, data, device and thread count; the global torch RNG is left
    as it was. Returns the detector in eval mode.
    """
    config = config or DetectorConfig()
    _check_sizes({"real": real, "fake": fake})
    pairs = _group_pairs(
        _as_groups(real_groups, len(real), "real_groups"), _as_groups(fake_groups, len(fake), "fake_groups")
    )
    real_u8 = prepare_crops(real, config.resolution, "real").numpy()
    fake_u8 = prepare_crops(fake, config.resolution, "fake").numpy()
    rng = np.random.default_rng(config.seed)
    device = torch.device(config.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        detector = SwapDetector(config).to(device)
        if config.channels_last:
            detector = detector.to(memory_format=torch.channels_last)
        decay = [p for p in detector.parameters() if p.ndim > 1]
        no_decay = [p for p in detector.parameters() if p.ndim <= 1]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
        )
        half = config.batch_size // 2
        labels = torch.cat([torch.zeros(half), torch.ones(half)]).to(device)
        detector.train()
        for step in range(config.steps):
            real_idx, fake_idx = _batch_indices(
                rng, half, len(real_u8), len(fake_u8), pairs if config.paired_batches else None
            )
            batch = _augment(np.concatenate([real_u8[real_idx], fake_u8[fake_idx]]), config, rng)
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(step, config)
            with detector._context():
                logits = detector(detector._to_input(torch.from_numpy(batch)))
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return detector.eval()


# ------------------------------------------------------------------------------------------ measuring


@dataclass
class DetectabilityResult:
    """The held-out AUC of a detector trained on one set of swaps and tested on another.

    ``auc``: ROC AUC on the test crops (0.5: the detector cannot tell the swaps from real faces;
    1: it always can; lower is better for a swap model). ``train_auc`` on the (unaugmented)
    training crops: far above ``auc`` means the detector memorised rather than learned.
    """

    auc: float
    train_auc: float
    n_train_real: int
    n_train_fake: int
    n_test_real: int
    n_test_fake: int
    steps: int
    seconds: float
    config: DetectorConfig

    def summary(self) -> dict[str, float]:
        """The deterministic numbers for metrics.json (``value`` is the AUC; no timing)."""
        fields = ("train_auc", "n_train_real", "n_train_fake", "n_test_real", "n_test_fake", "steps")
        return {"value": self.auc, **{key: float(getattr(self, key)) for key in fields}}

    def to_json(self) -> dict[str, Any]:
        """Everything, JSON-ready: the numbers, the training seconds and the resolved config."""
        return {key: to_dict(value) for key, value in dataclasses.asdict(self).items()}


def _check_disjoint(train: Sequence[Groups], test: Sequence[Groups]) -> None:
    seen = {label for groups in train if groups is not None for label in groups}
    shared = {label for groups in test if groups is not None for label in groups} & seen
    if shared:
        raise ValueError(
            f"{len(shared)} group(s) appear in both training and test crops, e.g. {sorted(map(str, shared))[:3]}"
        )


def measure_detectability(
    train_real: Crops,
    train_fake: Crops,
    test_real: Crops,
    test_fake: Crops,
    config: DetectorConfig | None = None,
    *,
    train_real_groups: Groups = None,
    train_fake_groups: Groups = None,
    test_real_groups: Groups = None,
    test_fake_groups: Groups = None,
    save_to: str | Path | None = None,
) -> DetectabilityResult:
    """Train a detector on the training crops and report its ROC AUC on the test crops.

    All four sets: aligned crops of one input size (see ``prepare_crops``), none empty. Group
    labels are optional: training groups pair real crops with their swaps (``train_detector``),
    and when test groups are given too, a label in both sets is an error (a swap tested against
    a detector that saw its original, or the same person on both sides, inflates the AUC).
    ``save_to``: a folder to keep the trained detector in (``SwapDetector.load``).
    """
    config = config or DetectorConfig()
    _check_sizes({"train_real": train_real, "train_fake": train_fake, "test_real": test_real, "test_fake": test_fake})
    _check_disjoint([train_real_groups, train_fake_groups], [test_real_groups, test_fake_groups])
    start = time.perf_counter()
    detector = train_detector(
        train_real, train_fake, config, real_groups=train_real_groups, fake_groups=train_fake_groups
    )
    seconds = time.perf_counter() - start
    if save_to is not None:
        detector.save(save_to)
    return DetectabilityResult(
        auc=roc_auc(detector.logits(test_real), detector.logits(test_fake)),
        train_auc=roc_auc(detector.logits(train_real), detector.logits(train_fake)),
        n_train_real=len(train_real),
        n_train_fake=len(train_fake),
        n_test_real=len(test_real),
        n_test_fake=len(test_fake),
        steps=config.steps,
        seconds=seconds,
        config=config,
    )


def holdout_detectability(
    real: Crops,
    fake: Crops,
    config: DetectorConfig | None = None,
    *,
    test_fraction: float = 0.3,
    paired: bool = False,
    real_groups: Groups = None,
    fake_groups: Groups = None,
) -> tuple[DetectabilityResult, GroupSplit]:
    """``measure_detectability`` on one set of crops split into train and test by ``split_groups``.

    ``paired=True`` says ``real[i]`` and ``fake[i]`` belong together (a target and its swap); it is
    shorthand for ``real_groups = fake_groups = range(n)``. The split is drawn with ``config.seed``.
    """
    config = config or DetectorConfig()
    if paired:
        if real_groups is not None or fake_groups is not None:
            raise ValueError("give either paired=True or group labels, not both")
        if len(real) != len(fake):
            raise ValueError(f"paired crops must come in equal numbers, got {len(real)} real and {len(fake)} swapped")
        real_groups = fake_groups = range(len(real))
    split = split_groups(len(real), len(fake), test_fraction, config.seed, real_groups, fake_groups)

    real_groups, fake_groups = (None if g is None else list(g) for g in (real_groups, fake_groups))

    def labels(groups: list[Hashable] | None, index: np.ndarray) -> list[Hashable] | None:
        return None if groups is None else [groups[i] for i in index]

    result = measure_detectability(
        _take(real, split.train_real),
        _take(fake, split.train_fake),
        _take(real, split.test_real),
        _take(fake, split.test_fake),
        config,
        train_real_groups=labels(real_groups, split.train_real),
        train_fake_groups=labels(fake_groups, split.train_fake),
        test_real_groups=labels(real_groups, split.test_real),
        test_fake_groups=labels(fake_groups, split.test_fake),
    )
    return result, split


@register_metric("detectability_auc", better="lower")
def detectability_auc(
    train_real: Crops,
    train_fake: Crops,
    test_real: Crops,
    test_fake: Crops,
    config: DetectorConfig | str | None = None,
    **groups: Groups,
) -> dict[str, float]:
    """Held-out ROC AUC of a small real-vs-swapped CNN (``measure_detectability``), as metric numbers.

    Trains on swaps of one set of identities (``train_*``) and scores swaps of others (``test_*``).
    ``config``: a ``DetectorConfig`` or a ``detector`` preset name (default ``"default"``);
    ``groups``: the ``*_groups`` keywords of ``measure_detectability``. Returns ``value`` (the AUC:
    0.5 = undetectable, 1 = always detected; lower is better for a swap model), ``train_auc``,
    the four set sizes and the training steps. Training time is left out so results compare exactly.
    """
    if config is None or isinstance(config, str):
        config = config_group("detector").create(config or "default")
    return measure_detectability(train_real, train_fake, test_real, test_fake, config, **groups).summary()
