"""Per-pair autoencoders (DeepFakes ``df`` and DeepFaceLab's ``liae``) wired from registered parts.

The trainer and the swap stage use only the ``PerPairModel`` interface below; which decoder or
bottleneck serves which identity is decided here and nowhere else. The parts come from the
registries by the names in ``ModelConfig.parts``; this module contains no layer definitions and
no magic sizes (each part reports the ``out_channels``/``out_size`` the next one needs).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from swaplab.models.config import ModelConfig
from swaplab.models.factory import MODELS
from swaplab.models.parts import BOTTLENECKS, DECODERS, ENCODERS

Tensor = torch.Tensor


class PairReconstruction(NamedTuple):
    """Both reconstructions of one training step; each tensor (N, C, R, R) in [0, 1]."""

    src_rgb: Tensor
    src_mask: Tensor
    dst_rgb: Tensor
    dst_mask: Tensor


class PerPairModel(nn.Module):
    """The interface of every per-pair swap model.

    Inputs are aligned faces (N, 3, R, R), float RGB in [0, 1], R = ``config.resolution``.
    Every method returns ``(rgb, mask)``: rgb (N, 3, R, R) and mask (N, 1, R, R), both in [0, 1]
    and always at ``resolution`` (with DeepFaceLab's ``d`` variant the last doubling happens
    inside the decoder, so callers never see a second size).

    - ``reconstruct_src(x)`` / ``reconstruct_dst(x)``: the autoencoder path of each identity.
    - ``swap(dst_faces)``: the dst faces rendered with the src identity (pose, expression and
      lighting of dst).
    - ``forward(src, dst)``: both reconstructions in one call (batched through the shared
      parts), returned as ``PairReconstruction``. Training should call this one: it is what
      ``DistributedDataParallel`` wraps.
    - ``named_parts()``: the parts by name, for checkpoints, freezing and ablations.
    """

    config: ModelConfig
    config_type = ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.resolution = config.resolution

    def named_parts(self) -> dict[str, nn.Module]:
        return dict(self.named_children())

    def reconstruct_src(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def reconstruct_dst(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def swap(self, dst_faces: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, src: Tensor, dst: Tensor) -> PairReconstruction:
        raise NotImplementedError

    def _check(self, x: Tensor, what: str) -> None:
        size = self.resolution
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
            raise ValueError(
                f"{type(self).__name__}.{what} expects faces of shape (N, 3, {size}, {size}), got {tuple(x.shape)}"
            )

    def _build_encoder(self) -> nn.Module:
        cfg = self.config
        return ENCODERS.create(
            cfg.parts.encoder, in_channels=3, resolution=cfg.resolution, dims=cfg.e_dims, variant=cfg.variant
        )

    def _build_bottleneck(self, encoder: nn.Module) -> nn.Module:
        cfg = self.config
        return BOTTLENECKS.create(
            cfg.bottleneck,
            in_features=encoder.out_features,
            in_channels=encoder.out_channels,
            in_size=encoder.out_size,
            ae_dims=cfg.ae_dims,
            resolution=cfg.resolution,
            variant=cfg.variant,
        )

    def _build_decoder(self, in_channels: int, in_size: int) -> nn.Module:
        cfg = self.config
        return DECODERS.create(
            cfg.parts.decoder,
            in_channels=in_channels,
            in_size=in_size,
            dims=cfg.d_dims,
            mask_dims=cfg.d_mask_dims,
            resolution=cfg.resolution,
            variant=cfg.variant,
        )


@MODELS.register("df")
class DeepFakesModel(PerPairModel):
    """DeepFakes: one shared encoder and bottleneck ("inter"), one decoder per identity.

    src -> decoder_src(inter(encoder(src))); dst -> decoder_dst(inter(encoder(dst)));
    swap(dst) -> decoder_src(inter(encoder(dst))).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.encoder = self._build_encoder()
        self.inter = self._build_bottleneck(self.encoder)
        self.decoder_src = self._build_decoder(self.inter.out_channels, self.inter.out_size)
        self.decoder_dst = self._build_decoder(self.inter.out_channels, self.inter.out_size)

    def code(self, x: Tensor) -> Tensor:
        return self.inter(self.encoder(x))

    def reconstruct_src(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x, "reconstruct_src")
        return self.decoder_src(self.code(x))

    def reconstruct_dst(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x, "reconstruct_dst")
        return self.decoder_dst(self.code(x))

    def swap(self, dst_faces: Tensor) -> tuple[Tensor, Tensor]:
        self._check(dst_faces, "swap")
        return self.decoder_src(self.code(dst_faces))

    def forward(self, src: Tensor, dst: Tensor) -> PairReconstruction:
        self._check(src, "forward")
        self._check(dst, "forward")
        src_code, dst_code = self.code(torch.cat([src, dst])).split([len(src), len(dst)])
        return PairReconstruction(*self.decoder_src(src_code), *self.decoder_dst(dst_code))


@MODELS.register("liae")
class LIAEModel(PerPairModel):
    """DeepFaceLab's LIAE: shared encoder, ``inter_AB`` and ``inter_B``, one shared decoder.

    Codes (concatenated along channels):
      src  = cat(inter_AB(e(src)), inter_AB(e(src)))
      dst  = cat(inter_B(e(dst)),  inter_AB(e(dst)))
      swap = cat(inter_AB(e(dst)), inter_AB(e(dst)))
    so ``inter_B`` carries what is specific to dst and the swap replaces it by the shared half.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.encoder = self._build_encoder()
        self.inter_AB = self._build_bottleneck(self.encoder)
        self.inter_B = self._build_bottleneck(self.encoder)
        if self.inter_AB.out_size != self.inter_B.out_size:
            raise ValueError("inter_AB and inter_B must emit codes of the same spatial size")
        self.decoder = self._build_decoder(
            self.inter_AB.out_channels + self.inter_B.out_channels, self.inter_AB.out_size
        )

    def src_code(self, x: Tensor) -> Tensor:
        shared = self.inter_AB(self.encoder(x))
        return torch.cat([shared, shared], dim=1)

    def dst_code(self, x: Tensor) -> Tensor:
        features = self.encoder(x)
        return torch.cat([self.inter_B(features), self.inter_AB(features)], dim=1)

    def swap_code(self, x: Tensor) -> Tensor:
        return self.src_code(x)  # the same composition, applied to dst faces

    def reconstruct_src(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x, "reconstruct_src")
        return self.decoder(self.src_code(x))

    def reconstruct_dst(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x, "reconstruct_dst")
        return self.decoder(self.dst_code(x))

    def swap(self, dst_faces: Tensor) -> tuple[Tensor, Tensor]:
        self._check(dst_faces, "swap")
        return self.decoder(self.swap_code(dst_faces))

    def forward(self, src: Tensor, dst: Tensor) -> PairReconstruction:
        self._check(src, "forward")
        self._check(dst, "forward")
        n_src = len(src)
        features = self.encoder(torch.cat([src, dst]))
        shared = self.inter_AB(features)
        src_shared, dst_shared = shared[:n_src], shared[n_src:]
        codes = torch.cat(
            [
                torch.cat([src_shared, src_shared], dim=1),
                torch.cat([self.inter_B(features[n_src:]), dst_shared], dim=1),
            ]
        )
        rgb, mask = self.decoder(codes)
        return PairReconstruction(rgb[:n_src], mask[:n_src], rgb[n_src:], mask[n_src:])
