"""A small U-Net: the image-to-image body of swaplab's built networks (segmenter, restorer, blender).

Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation" (2015), sized
for a 2-core CPU: two 3x3 conv-BN-ReLU layers per level, stride-2 convolutions down, bilinear
upsampling and skip concatenation up, a 1x1 output layer. Input sides must be divisible by
``2 ** (len(widths) - 1)``. It holds no task: heads and losses belong to its users.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet"]


def _double_conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """``in_channels`` -> ``out_channels`` maps of the same size; ``widths`` are the channels per level."""

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"a U-Net needs at least two positive widths, got {tuple(widths)}")
        self.levels = len(widths)
        self.down = nn.ModuleList([_double_conv(in_channels, widths[0])])
        for previous, width in zip(widths[:-1], widths[1:]):
            self.down.append(_double_conv(previous, width, stride=2))
        self.up = nn.ModuleList(
            [_double_conv(deeper + skip, skip) for deeper, skip in zip(widths[:0:-1], widths[-2::-1])]
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    @property
    def multiple(self) -> int:
        """Input sides must be a multiple of this."""
        return 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.multiple or x.shape[-2] % self.multiple:
            raise ValueError(f"U-Net input sides must be multiples of {self.multiple}, got {tuple(x.shape[-2:])}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)
