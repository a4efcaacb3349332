"""Structured pruning of a DDPM's U-Net: each residual block keeps its strongest inner channels.

In every diffusers ``ResnetBlock2D`` the channels between its two convolutions (``conv1``'s outputs, the
time projection's, ``norm2``'s and ``conv2``'s inputs) are internal: removing some changes no other
layer, so the block's interface and the U-Net's wiring stay as they are. A block keeps ``keep`` of them,
rounded to whole groups of its group norm, ranked by the L1 norm of their ``conv1`` filters plus their
``conv2`` input weights (a magnitude criterion, as in Li et al. 2017, "Pruning Filters for Efficient
ConvNets"). Group normalisation then pools other channels together, so a pruned model is fine-tuned
(``init_from`` with ``model.unet_keep``) before use. Nothing here trains.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["prune_unet", "pruned_width"]


def pruned_width(channels: int, groups: int, keep: float) -> int:
    """Inner channels a block of ``channels`` keeps: ``keep`` of them in whole groups, at least one group."""
    per_group = channels // groups
    return max(1, round(groups * keep)) * per_group if keep < 1 else channels


def _ranked(block: nn.Module, count: int) -> torch.Tensor:
    score = block.conv1.weight.detach().abs().sum((1, 2, 3)) + block.conv2.weight.detach().abs().sum((0, 2, 3))
    return score.topk(count).indices.sort().values


@torch.no_grad()
def prune_unet(unet: nn.Module, keep: float) -> nn.Module:
    """Prune every residual block of ``unet`` in place to ``keep`` (in (0, 1]) of its inner channels."""
    from diffusers.models.resnet import ResnetBlock2D

    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    if keep == 1:
        return unet
    for block in [m for m in unet.modules() if isinstance(m, ResnetBlock2D)]:
        conv1, conv2, norm2, projection = block.conv1, block.conv2, block.norm2, block.time_emb_proj
        # Whole groups leave: the kept channels regroup into fewer groups of the same size.
        width = pruned_width(conv1.out_channels, norm2.num_groups, keep)
        index = _ranked(block, width)
        new_conv1 = nn.Conv2d(conv1.in_channels, width, conv1.kernel_size, conv1.stride, conv1.padding)
        new_conv1.weight.copy_(conv1.weight[index])
        new_conv1.bias.copy_(conv1.bias[index])
        new_conv2 = nn.Conv2d(width, conv2.out_channels, conv2.kernel_size, conv2.stride, conv2.padding)
        new_conv2.weight.copy_(conv2.weight[:, index])
        new_conv2.bias.copy_(conv2.bias)
        groups = width // (conv1.out_channels // norm2.num_groups)
        new_norm2 = nn.GroupNorm(groups, width, eps=norm2.eps, affine=True)
        new_norm2.weight.copy_(norm2.weight[index])
        new_norm2.bias.copy_(norm2.bias[index])
        block.conv1, block.conv2, block.norm2 = new_conv1, new_conv2, new_norm2
        if projection is not None:
            new_projection = nn.Linear(projection.in_features, width)
            new_projection.weight.copy_(projection.weight[index])
            new_projection.bias.copy_(projection.bias[index])
            block.time_emb_proj = new_projection
    return unet
