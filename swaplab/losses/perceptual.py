"""A perceptual loss on the early stages of a frozen face network (the dlib ResNet port).

faceswap-GAN compares VGGFace features of the output and the target; swaplab has no VGGFace, but
it has dlib's face-recognition ResNet re-built in PyTorch, trained on faces. Its stem and first
residual stages see local texture (edges, skin, eyes) at the face crop's own scale, so they are
compared here, never its identity embedding (which flatters blur). The network stays frozen; the
loss trains nothing of its own.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from swaplab.losses.functional import weighted_mean
from swaplab.losses.registry import LOSSES

Tensor = torch.Tensor


class FrozenEarlyStages(nn.Module):
    """The stem and the first ``stages`` residual stages of a ``DlibResNetIdentity``, frozen.

    Input (N, 3, H, W) RGB in [0, 1] at any size >= 32; output the feature map after the stem and
    after each kept stage (at 1/4, 1/4, 1/8 ... of the input side).
    """

    def __init__(self, network: nn.Module, stages: int) -> None:
        super().__init__()
        available = len(network.stages)
        if not 1 <= stages <= available:
            raise ValueError(f"perceptual stages must be in 1..{available}, got {stages}")
        self.register_buffer("channel_means", network.channel_means.detach().clone(), persistent=False)
        self.stem = network.stem
        self.stages = nn.ModuleList(list(network.stages)[:stages])
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> FrozenEarlyStages:
        return super().train(False)  # frozen: never in training mode

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.stem((images * 255.0 - self.channel_means) * (1.0 / 256.0))
        out = [x]
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


@LOSSES.register("perceptual")
class PerceptualLoss(nn.Module):
    """Mean L1 distance between the frozen features of ``pred`` and ``target``, averaged over levels.

    ``weight`` (N, 1, H, W), e.g. the face mask, is area-resized to each level's size. ``network``
    defaults to dlib's face-recognition ResNet (``swaplab.identity``), loaded from the installed
    ``face_recognition_models`` file.
    """

    def __init__(self, stages: int = 2, network: nn.Module | None = None) -> None:
        super().__init__()
        if network is None:
            from swaplab.identity.dlib_resnet import load_dlib_identity

            network = load_dlib_identity(channels_last=False)
        self.features = FrozenEarlyStages(network, stages)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        with torch.no_grad():
            target_features = self.features(target.float())
        levels = []
        for fake, real in zip(self.features(pred.float()), target_features, strict=True):
            level_weight = None if weight is None else F.adaptive_avg_pool2d(weight.float(), fake.shape[-2:])
            levels.append(weighted_mean((fake - real).abs(), level_weight))
        return torch.stack(levels).mean()
