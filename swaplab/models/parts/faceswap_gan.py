"""faceswap-GAN's parts: self-attention blocks, an encoder and a decoder whose second output is a
predicted attention mask (alpha).

faceswap-GAN (shaoanlu, v2) is a DeepFakes autoencoder (one shared encoder, one decoder per
identity) with SAGAN's self-attention ("Self-Attention Generative Adversarial Networks", Zhang et
al. 2019) after the deeper encoder stages and in the decoder, and a decoder that predicts an RGB
face and an alpha mask saying where that face should be pasted. Re-written from the paper and the
model's description, registered as the ``faceswap-gan`` encoder and decoder; the model is the
``df`` architecture built from them (presets ``faceswap-gan-64`` / ``-128`` / ``-256``). Its
losses (eye-aware, edge, perceptual, adversarial) live in ``swaplab.losses`` and the per-pair
recipe, not here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from swaplab.models.parts.blocks import Downscale, ResidualBlock, Upscale, init_glorot
from swaplab.models.parts.dfl import check_resolution
from swaplab.models.parts.registries import DECODERS, ENCODERS

Tensor = torch.Tensor

#: Self-attention costs (H*W)^2 per image: at 32 px it took over half of a training step of the
#: 64 px preset on one CPU core, at 64 px a batch's attention maps need gigabytes; so the decoder
#: attends only at sides up to 16 (faceswap-GAN, made for GPUs, also attends at 32 and 64 px).
MAX_ATTENTION_SIDE = 16


class SelfAttention(nn.Module):
    """SAGAN's self-attention: every position attends to every other one; ``x + gamma * o``.

    Queries and keys are 1x1 convs to ``channels // reduction`` channels, values keep all channels;
    the attention of position i over positions j is a softmax over j, so each row sums to one.
    ``gamma`` starts at 0: the block begins as the identity and learns how much to attend.
    Input and output (N, C, H, W).
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        inner = max(1, channels // reduction)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def attention(self, x: Tensor) -> Tensor:
        """The attention weights (N, H*W, H*W): row i is position i's distribution over positions."""
        query = self.query(x).flatten(2).transpose(1, 2)  # (N, HW, inner)
        key = self.key(x).flatten(2)  # (N, inner, HW)
        return torch.softmax(torch.bmm(query, key), dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        values = self.value(x).flatten(2).transpose(1, 2)  # (N, HW, C)
        attended = torch.bmm(self.attention(x), values)  # (N, HW, C): row i = sum_j a_ij v_j
        return x + self.gamma * attended.transpose(1, 2).reshape(n, c, h, w)


@ENCODERS.register("faceswap-gan")
class FaceswapGANEncoder(nn.Module):
    """A 5x5 stem conv, then 2x downscales to 1/16 of the side (widths dims*2, *4, *8, *16), with
    self-attention after the /4 and /8 stages; flattened like DeepFaceLab's encoder.

    Input (N, in_channels, R, R), R a multiple of 16; output (N, out_features). ``variant`` must be
    empty (DeepFaceLab's letters do not apply here).
    """

    flat = True
    self_attention = True  # False in ``faceswap-gan-no-attention``: the ablation's switch

    def __init__(self, *, in_channels: int = 3, resolution: int, dims: int, variant: str = "") -> None:
        super().__init__()
        if variant:
            raise ValueError(f"the faceswap-gan encoder takes no variant letters, got {variant!r}")
        check_resolution(resolution, "")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, dims, 5, padding=2), nn.LeakyReLU(0.1)]
        channels = dims
        for index, width in enumerate((dims * 2, dims * 4, dims * 8, dims * 16)):
            layers.append(Downscale(channels, width, kernel_size=3))
            channels = width
            if self.self_attention and index in (1, 2):  # after the /4 and /8 stages, as faceswap-GAN attends
                layers.append(SelfAttention(channels))
        self.body = nn.Sequential(*layers)
        self.out_channels, self.out_size = channels, resolution // 16
        self.out_features = channels * self.out_size**2
        init_glorot(self)  # convs only: every attention block's gamma stays 0

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).flatten(1)


@DECODERS.register("faceswap-gan")
class FaceswapGANDecoder(nn.Module):
    """Upscales (widths dims*4, *2, *1 ... ending at ``dims``) with a residual block each and
    self-attention at sides <= ``MAX_ATTENTION_SIDE``, then one 5x5 conv to four channels: RGB and
    the alpha mask, both sigmoid.

    Input a spatial code (N, in_channels, in_size, in_size); output ``(rgb, alpha)``: (N, 3, R, R)
    and (N, 1, R, R) in [0, 1]. ``mask_dims`` is accepted for the decoder contract and unused: the
    alpha shares the RGB path, which is what makes it faceswap-GAN's attention mask.
    """

    self_attention = True  # False in ``faceswap-gan-no-attention``: the ablation's switch

    def __init__(
        self,
        *,
        in_channels: int,
        in_size: int,
        dims: int,
        mask_dims: int = 0,
        resolution: int,
        variant: str = "",
    ) -> None:
        super().__init__()
        if variant:
            raise ValueError(f"the faceswap-gan decoder takes no variant letters, got {variant!r}")
        n_upscales = round(math.log2(resolution / in_size)) if resolution > in_size else 0
        if n_upscales < 1 or in_size * 2**n_upscales != resolution:
            raise ValueError(f"decoder cannot go from a {in_size}x{in_size} code to {resolution} px by 2x upscales")
        widths = [dims * 2 ** min(2, n_upscales - 1 - i) for i in range(n_upscales)]
        layers: list[nn.Module] = []
        channels, size = in_channels, in_size
        for width in widths:
            size *= 2
            layers += [Upscale(channels, width), ResidualBlock(width)]
            if self.self_attention and size <= MAX_ATTENTION_SIDE:
                layers.append(SelfAttention(width))
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels, 4, 5, padding=2)
        self.out_channels, self.out_size = 3, resolution
        init_glorot(self)

    def forward(self, code: Tensor) -> tuple[Tensor, Tensor]:
        out = self.head(self.body(code))
        return torch.sigmoid(out[:, :3]), torch.sigmoid(out[:, 3:])


__all__ = ["MAX_ATTENTION_SIDE", "FaceswapGANDecoder", "FaceswapGANEncoder", "SelfAttention"]


# The same parts without self-attention, registered under their own name so that a study switches
# them off by name (``model.parts.encoder=faceswap-gan-no-attention`` and the same for the decoder).
@ENCODERS.register("faceswap-gan-no-attention")
class FaceswapGANEncoderNoAttention(FaceswapGANEncoder):
    """``FaceswapGANEncoder`` without its self-attention blocks (the ablation of them)."""

    self_attention = False


@DECODERS.register("faceswap-gan-no-attention")
class FaceswapGANDecoderNoAttention(FaceswapGANDecoder):
    """``FaceswapGANDecoder`` without its self-attention blocks (the ablation of them)."""

    self_attention = False
