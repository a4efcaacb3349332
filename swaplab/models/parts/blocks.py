"""Convolutional building blocks shared by DeepFaceLab-style parts (downscale, upscale, residual).

Blocks only: they know channel counts, never resolutions or identities. Every op here works on
channels_last tensors and under CPU bf16 autocast (no ops that silently fall back to NCHW copies).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: LeakyReLU slopes DeepFaceLab uses: 0.1 after down/upscale convs, 0.2 inside residual blocks.
SCALE_SLOPE = 0.1
RESIDUAL_SLOPE = 0.2


def init_glorot(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every conv and linear layer.

    DeepFaceLab (through Keras/leras defaults) initialises this way; PyTorch's default
    (Kaiming-uniform with a=sqrt(5)) gives noticeably smaller initial activations in these deep
    pixel-shuffle stacks.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def pixel_norm(x: torch.Tensor, dim: int = -1, eps: float = 1e-6) -> torch.Tensor:
    """Divide by the root-mean-square along ``dim`` (DeepFaceLab's ``u`` option)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=dim, keepdim=True) + eps)


class Downscale(nn.Module):
    """Conv (stride 2, 'same' padding, so H -> ceil(H/2)) then LeakyReLU(0.1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=2, padding=kernel_size // 2)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x), SCALE_SLOPE)


class Upscale(nn.Module):
    """Conv to 4x channels, LeakyReLU(0.1), pixel shuffle (depth_to_space): H -> 2H."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels * 4, kernel_size, padding=kernel_size // 2)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(F.leaky_relu(self.conv(x), SCALE_SLOPE), 2)


class ResidualBlock(nn.Module):
    """Two 3x3 convs with a skip connection, LeakyReLU(0.2) inside and after the sum."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.leaky_relu(self.conv1(x), RESIDUAL_SLOPE))
        return F.leaky_relu(x + y, RESIDUAL_SLOPE)
