"""A small real-vs-swapped face classifier: the network behind swaplab's detectability score.

``SwapDetector`` maps aligned face crops to the logit of "this crop is swapped"; its config holds
the shape only (training is the ``swap-detector`` recipe, the score ``swaplab.evaluate.detectability``).
``prepare_crops`` brings crops in any of the accepted forms to the detector's input. It finds no
faces and makes no swaps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from swaplab.config import ConfigError, config_group
from swaplab.models.factory import MODELS
from swaplab.models.parts.gradient_reversal import reverse_gradient
from swaplab.system import autocast, autocast_dtype, full_precision

__all__ = ["Crops", "SwapDetector", "SwapDetectorConfig", "input_size", "prepare_crops"]

#: What callers may pass as a set of crops: uint8 or float [0, 1] N x 3 x H x W tensors, a uint8
#: N x H x W x 3 RGB array, or a list of uint8 H x W x 3 RGB arrays.
Crops = torch.Tensor | np.ndarray | Sequence[np.ndarray]

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


@dataclass
class SwapDetectorConfig:
    """The detector's shape (training settings live in its recipe's config)."""

    name: str = "swap-detector"
    arch: Literal["swap-detector"] = "swap-detector"
    resolution: int = 64  # crops are resized to this square size (area when shrinking, bilinear when growing)
    widths: tuple[int, ...] = (16, 32, 64, 128)  # channels per stage; each stage after the first halves H, W
    convs_per_stage: int = 2  # 3x3 convs per stage (the first stage's first is the stem)
    high_pass: bool = True  # add the fixed SRM high-pass branch beside RGB
    dropout: float = 0.2  # before the linear head
    # Hidden width of a domain classifier on the pooled features, for domain-adversarial training
    # (0 = none): it lets a detector trained on one generator's swaps adapt to another's.
    domain_head: int = 0

    def __post_init__(self) -> None:
        if self.resolution < 1 or self.convs_per_stage < 1:
            raise ConfigError("model.resolution and model.convs_per_stage must be >= 1")
        if not self.widths or min(self.widths) < 1:
            raise ConfigError(f"model.widths must be positive channel counts, got {self.widths}")
        if self.high_pass and self.widths[0] < 2:
            raise ConfigError("model.widths[0] must be >= 2 with high_pass (half of it is the high-pass branch)")
        if self.resolution < 2 ** (len(self.widths) - 1):
            raise ConfigError(f"model.resolution {self.resolution} is too small for {len(self.widths)} stages")
        if not 0 <= self.dropout < 1:
            raise ConfigError("model.dropout must be in [0, 1)")


config_group("model").register("swap-detector")(SwapDetectorConfig)
#: With a domain classifier, for domain-adversarial training (``detector=dann``).
config_group("model").register("swap-detector-dann")(
    lambda: SwapDetectorConfig(name="swap-detector-dann", domain_head=64)
)
#: For tests: a few seconds on one thread.
config_group("model").register("swap-detector-test")(
    lambda: SwapDetectorConfig(name="swap-detector-test", resolution=48, widths=(8, 16, 32))
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


def input_size(crops: Crops) -> tuple[int, int] | None:
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


# ------------------------------------------------------------------------------------------ network


def _conv_block(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


@MODELS.register("swap-detector")
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

    config_type = SwapDetectorConfig

    def __init__(self, config: SwapDetectorConfig | None = None) -> None:
        super().__init__()
        self.config = config or SwapDetectorConfig()
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
        self.domain: nn.Module | None = None
        if self.config.domain_head:
            hidden = self.config.domain_head
            self.domain = nn.Sequential(nn.Linear(2 * widths[-1], hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def residuals(self, images: torch.Tensor) -> torch.Tensor:
        """The 9 truncated SRM residual maps of ``images`` (N x 3 x H x W in [0, 1]), in [-1, 1]."""
        # fp32 on purpose: under bf16 autocast the kernels' weights (1/12 ...) round and leave
        # errors of a few grey levels on values near 128, as large as the texture being measured.
        with full_precision(images):
            padded = F.pad(images.float() * 255.0, (2, 2, 2, 2), mode="reflect")
            residual = F.conv2d(padded, self.srm.to(padded.dtype), groups=3)
            return residual.clamp(-SRM_TRUNCATION, SRM_TRUNCATION) / SRM_TRUNCATION

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled features (N, 2 x widths[-1]) both heads read: mean and maximum of the last maps."""
        features = self.rgb_stem((images - 0.5) / 0.25)
        if self.residual_stem is not None:
            features = torch.cat([features, self.residual_stem(self.residuals(images))], dim=1)
        features = self.stages(features)
        return torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits (N,) of "swapped" from pooled features."""
        # The head in fp32: bf16 logits have 3 significant digits, and the many ties they make
        # would blunt the AUC's ranking.
        with full_precision(pooled):
            return self.head(self.dropout(pooled.float())).squeeze(1)

    def domain_logits(self, pooled: torch.Tensor, reversal: float) -> torch.Tensor:
        """Logits (N,) of "from the target domain", through a gradient reversal of strength ``reversal``."""
        if self.domain is None:
            raise ValueError("this detector has no domain head (model.domain_head=0)")
        with full_precision(pooled):
            return self.domain(reverse_gradient(pooled.float(), reversal)).squeeze(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N,) for ``images`` N x 3 x R x R in [0, 1]; positive means "swapped"."""
        return self.classify(self.features(images))

    @torch.no_grad()
    def logits(self, crops: Crops, precision: str = "fp32", batch_size: int = 256) -> np.ndarray:
        """Logits (N,) float64 of crops (any input size, see ``prepare_crops``); higher = more likely swapped.

        ``precision``: ``fp32``, ``bf16`` or ``auto`` (bf16 autocast where the hardware has it).
        """
        prepared = prepare_crops(crops, self.config.resolution)
        parameter = next(self.parameters())
        was_training = self.training
        self.eval()
        out = []
        try:
            with autocast(parameter.device, autocast_dtype(precision, parameter.device)):
                for start in range(0, len(prepared), batch_size):
                    batch = prepared[start : start + batch_size].to(parameter.device).float().div_(255.0)
                    out.append(self(batch.contiguous(memory_format=torch.channels_last)).double().cpu())
        finally:
            self.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros(0)

    def scores(self, crops: Crops, precision: str = "fp32") -> np.ndarray:
        """Probability (N,) float64 in [0, 1] that each crop is swapped, as the detector judges it.

        Rank-based statistics (AUC) should use ``logits``: far from the boundary probabilities
        round to exactly 0 or 1 and tie.
        """
        return 1.0 / (1.0 + np.exp(-self.logits(crops, precision)))
