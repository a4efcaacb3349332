"""``IDENTITY_ENCODERS``: the identity networks by name (``dlib-resnet``, ``lfw-arcface``).

Each entry is a factory ``(device="cpu", ...) -> nn.Module`` returning a frozen network in eval
mode that maps chips N x 3 x S x S (RGB in [0, 1], cut by ``swaplab.identity.chips`` at the
network's ``chip_size`` and ``chip_padding``) to N x D embeddings, and, where it has them,
``features`` (pooled penultimate features for distribution distances). Loading never trains.
"""

from __future__ import annotations

from swaplab.registry import Registry

IDENTITY_ENCODERS: Registry = Registry(
    "identity network", providers=("swaplab.identity.dlib_resnet", "swaplab.identity.lfw_arcface")
)
