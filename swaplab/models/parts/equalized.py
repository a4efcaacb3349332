"""StyleGAN's equalised-learning-rate layers and its gain-corrected LeakyReLU, shared by generators and
discriminators. Layers only: no architecture here."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

Tensor = torch.Tensor

#: LeakyReLU slope and the gain that keeps unit variance through it (StyleGAN's ``lrelu`` gain).
SLOPE, ACTIVATION_GAIN = 0.2, math.sqrt(2.0)


def leaky(x: Tensor) -> Tensor:
    return F.leaky_relu(x, SLOPE) * ACTIVATION_GAIN


class EqualLinear(nn.Module):
    """A linear layer with StyleGAN's equalised learning rate: weights stored N(0, 1/lr_mult^2) and scaled by
    lr_mult / sqrt(fan_in) at run time, so Adam's step is the same relative size for every layer."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mult: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mult)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_mult))
        self.weight_gain, self.lr_mult = lr_mult / math.sqrt(in_features), lr_mult

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mult)


class EqualConv2d(nn.Module):
    """A same-padded convolution with the equalised learning rate (weights N(0, 1), gain 1 / sqrt(fan_in))."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.gain = 1.0 / math.sqrt(in_channels * kernel * kernel)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.gain, self.bias, padding=self.weight.shape[-1] // 2)
