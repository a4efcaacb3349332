"""The autoencoder family beyond the plain autoencoder: sparse coding and the sparse, denoising, contractive
and stacked autoencoders, each a registered model with a typed config and presets on digits and faces.

Sparse coding has no encoder network: its code is the solution of an optimisation problem (ISTA
on a learned dictionary). The four autoencoders share one fully connected architecture
(``DenseAutoencoder``) and differ in how they are trained, which their configs carry (sparsity,
noise, contraction, the greedy layer schedule) so a preset names the whole model; the recipes in
``swaplab.train.recipes.zoo_autoencoder_variants`` read those fields. No training here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from swaplab.config import ConfigError, config_group
from swaplab.models.factory import MODELS
from swaplab.models.generative import GenerativeModel
from swaplab.system import full_precision

Tensor = torch.Tensor
MODEL_PRESETS = config_group("model")


def _faces(**fields: object) -> dict[str, object]:
    """The shape fields of a 32 px RGB faces preset (``data=faces32``)."""
    return {"channels": 3, "resolution": 32, **fields}


# ---------------------------------------------------------------- sparse coding


@dataclass
class SparseCodingConfig:
    """A dictionary of unit-norm atoms and the sparse-code problem every encoding solves."""

    name: str = "sparse-coding-digits"
    arch: Literal["sparse-coding"] = "sparse-coding"
    channels: int = 1
    resolution: int = 8
    atoms: int = 128  # dictionary size; more than the pixels makes it overcomplete
    penalty: Literal["l1", "log"] = "l1"  # the sparsity penalty of one code value: |h| or log(1 + h^2)
    sparsity: float = 0.5  # lambda, the penalty's weight against the squared error
    code_steps: int = 50  # ISTA iterations per encoding (training batches and ``encode`` alike)
    accelerated: bool = True  # FISTA's momentum (much faster on a coherent learned dictionary); False: plain ISTA

    def __post_init__(self) -> None:
        if self.atoms < 1 or self.code_steps < 1 or self.sparsity < 0:
            raise ConfigError("model.atoms and model.code_steps must be >= 1, model.sparsity >= 0")


MODEL_PRESETS.register("sparse-coding-digits")(SparseCodingConfig)
MODEL_PRESETS.register("sparse-coding-log-digits")(
    lambda: SparseCodingConfig(name="sparse-coding-log-digits", penalty="log", sparsity=1.0)
)
MODEL_PRESETS.register("sparse-coding-faces")(
    lambda: SparseCodingConfig(name="sparse-coding-faces", **_faces(atoms=4096))
)


@MODELS.register("sparse-coding")
class SparseCoding(GenerativeModel):
    """``x ~ D h`` with an overcomplete dictionary D (pixels, atoms) of unit-norm columns and sparse codes h.

    Objective per image: ``E(x, h) = ||x - D h||^2 + lambda * sum_j p(h_j)``, ``p(h) = |h|`` or
    ``log(1 + h^2)``. ``encode`` minimises E over h with D fixed: ISTA (iterative shrinkage-
    thresholding), ``h <- prox(h - eta * 2 D^T (D h - x))`` from h = 0, with ``eta = 1 / L`` and L
    the Lipschitz constant ``2 ||D||_2^2`` of the squared error's gradient; the prox is soft
    thresholding at ``eta * lambda`` for L1, and for the smooth log penalty a plain gradient step
    on it (``eta = 1 / (L + 2 lambda)``). With ``accelerated`` the step is taken from an
    extrapolated point (Beck & Teboulle 2009, "A Fast Iterative Shrinkage-Thresholding Algorithm
    for Linear Inverse Problems", FISTA): error O(1/k^2) after k steps instead of O(1/k). Learning
    D is the recipe's: a gradient step on D with the codes fixed, then ``normalize_atoms``.
    """

    config_type = SparseCodingConfig
    capabilities = ("reconstruct", "interpolate")

    def __init__(self, config: SparseCodingConfig) -> None:
        super().__init__()
        self.config = config
        self.image_shape = (config.channels, config.resolution, config.resolution)
        pixels = config.channels * config.resolution**2
        self.dictionary = nn.Parameter(torch.randn(pixels, config.atoms))
        self.normalize_atoms()

    @torch.no_grad()
    def normalize_atoms(self) -> None:
        """Scale every atom (column of D) to unit norm: without it the penalty shrinks h while D grows."""
        self.dictionary.div_(self.dictionary.norm(dim=0, keepdim=True).clamp_min(1e-12))

    def penalty(self, codes: Tensor) -> Tensor:
        """(N,): ``sum_j p(h_j)`` per code."""
        codes = codes.float()
        per_value = codes.abs() if self.config.penalty == "l1" else torch.log1p(codes.square())
        return per_value.sum(1)

    def synthesize(self, codes: Tensor) -> Tensor:
        """(N, C, R, R): ``D h``, unclamped (the squared error is measured on this)."""
        return (codes.float() @ self.dictionary.float().T).view(len(codes), *self.image_shape)

    def energy(self, x: Tensor, codes: Tensor) -> Tensor:
        """(N,): ``E(x, h) = ||x - D h||^2 + lambda * sum_j p(h_j)`` per image."""
        error = (x.float() - self.synthesize(codes)).flatten(1).square().sum(1)
        return error + self.config.sparsity * self.penalty(codes)

    def lipschitz(self, iterations: int = 30) -> float:
        """``2 ||D||_2^2`` by power iteration on D^T D (an SVD per batch would dominate 32 px faces),
        with 5 % margin: the iteration approaches the top singular value from below."""
        with torch.no_grad():
            d = self.dictionary.detach().float()
            v = torch.ones(d.shape[1], device=d.device) / d.shape[1] ** 0.5
            for _ in range(iterations):
                v = d.T @ (d @ v)
                v = v / v.norm().clamp_min(1e-12)
            return 2.0 * float((d @ v).square().sum()) * 1.05

    @torch.no_grad()
    def encode(self, x: Tensor, steps: int | None = None) -> Tensor:
        """(N, atoms): the codes (F)ISTA finds in ``steps`` iterations (``config.code_steps`` by default)."""
        cfg = self.config
        with full_precision(x):
            d = self.dictionary.detach().float()
            flat = x.float().flatten(1)
            lipschitz = self.lipschitz()
            l1 = cfg.penalty == "l1"
            eta = 1.0 / lipschitz if l1 else 1.0 / (lipschitz + 2.0 * cfg.sparsity)
            codes = flat.new_zeros(len(flat), cfg.atoms)
            point, momentum = codes, 1.0  # FISTA's extrapolated point and step counter t
            for _ in range(steps if steps is not None else cfg.code_steps):
                gradient = 2.0 * (point @ d.T - flat) @ d
                if l1:
                    step = torch.nn.functional.softshrink(point - eta * gradient, eta * cfg.sparsity)
                else:
                    step = point - eta * (gradient + cfg.sparsity * 2.0 * point / (1.0 + point.square()))
                if cfg.accelerated:
                    next_momentum = (1.0 + (1.0 + 4.0 * momentum**2) ** 0.5) / 2.0
                    point = step + ((momentum - 1.0) / next_momentum) * (step - codes)
                    momentum = next_momentum
                else:
                    point = step
                codes = step
        return codes

    def decode(self, z: Tensor) -> Tensor:
        return self.synthesize(z).clamp(0.0, 1.0)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.reconstruct(x)


# ---------------------------------------------------------------- the fully connected autoencoders


@dataclass
class DenseAutoencoderConfig:
    """The architecture the sparse, denoising, contractive and stacked autoencoders share (no preset by itself)."""

    name: str = "dense-ae"
    arch: str = ""
    channels: int = 1
    resolution: int = 8
    hidden: list[int] = field(default_factory=lambda: [128])  # widths of the encoder's layers; the last is the code
    activation: Literal["sigmoid", "relu"] = "sigmoid"  # of every hidden layer, the code included
    output: Literal["sigmoid", "linear"] = "sigmoid"  # the decoder's last activation

    def __post_init__(self) -> None:
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"model.hidden must list one or more positive widths, got {self.hidden}")


ACTIVATIONS: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "linear": nn.Identity}


class DenseAutoencoder(GenerativeModel):
    """Fully connected ``pixels -> hidden[0] -> ... -> hidden[-1]`` and the mirror back, one module pair per layer.

    ``encoder_layers[i]`` maps layer i's input to its code and ``decoder_layers[i]`` maps that code
    back, so layer i alone is a one-hidden-layer autoencoder of its inputs (the stacked
    autoencoder trains them one at a time). The subclasses below only name their config type.
    """

    capabilities = ("reconstruct", "interpolate")

    def __init__(self, config: DenseAutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        self.image_shape = (config.channels, config.resolution, config.resolution)
        widths = [config.channels * config.resolution**2, *config.hidden]
        hidden = ACTIVATIONS[config.activation]
        self.encoder_layers = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), hidden()) for a, b in zip(widths[:-1], widths[1:])
        )
        self.decoder_layers = nn.ModuleList(
            nn.Sequential(nn.Linear(b, a), hidden() if i else ACTIVATIONS[config.output]())
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))
        )

    @property
    def depth(self) -> int:
        return len(self.encoder_layers)

    def encode(self, x: Tensor, depth: int | None = None) -> Tensor:
        """(N, width): the code after the first ``depth`` layers (all of them by default; 0: the flat pixels)."""
        code = x.flatten(1)
        for layer in self.encoder_layers[: self.depth if depth is None else depth]:
            code = layer(code)
        return code

    def decode(self, z: Tensor) -> Tensor:
        for layer in reversed(self.decoder_layers):
            z = layer(z)
        return z.view(len(z), *self.image_shape)

    def reconstruct_layer(self, index: int, inputs: Tensor) -> Tensor:
        """Layer ``index`` as its own autoencoder: its inputs (N, width) through its code and back."""
        return self.decoder_layers[index](self.encoder_layers[index](inputs))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.reconstruct(x)

    def sigmoid_layer(self) -> nn.Linear | None:
        """The encoder's nn.Linear when it is one sigmoid layer ``h = sigmoid(W x + b)`` (closed-form Jacobian)."""
        if self.depth == 1 and self.config.activation == "sigmoid":
            return self.encoder_layers[0][0]  # type: ignore[return-value]
        return None


# -- sparse autoencoder


@dataclass
class SparseAutoencoderConfig(DenseAutoencoderConfig):
    """An (overcomplete) autoencoder whose hidden units are mostly off: KL or L1 sparsity, weight decay."""

    name: str = "sparse-ae-digits"
    arch: Literal["sparse-autoencoder"] = "sparse-autoencoder"
    sparsity: Literal["kl", "l1"] = "kl"  # kl: towards mean activation rho (sigmoid codes); l1: |h|
    rho: float = 0.1  # the target mean activation of each hidden unit (kl)
    sparsity_weight: float = 1.0  # beta
    weight_decay: float = 1e-4  # lambda, on 1/2 sum ||W||^2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sparsity == "kl" and self.activation != "sigmoid":
            raise ConfigError("model.sparsity=kl needs model.activation=sigmoid (mean activations in (0, 1))")
        if len(self.hidden) != 1:
            raise ConfigError("a sparse autoencoder has one hidden layer (model.hidden=[WIDTH])")
        if not 0 < self.rho < 1 or self.sparsity_weight < 0 or self.weight_decay < 0:
            raise ConfigError("model.rho must lie in (0, 1); model.sparsity_weight and weight_decay must be >= 0")


MODEL_PRESETS.register("sparse-ae-digits")(SparseAutoencoderConfig)
MODEL_PRESETS.register("sparse-ae-l1-digits")(
    lambda: SparseAutoencoderConfig(name="sparse-ae-l1-digits", activation="relu", sparsity="l1", sparsity_weight=0.05)
)
MODEL_PRESETS.register("sparse-ae-faces")(
    lambda: SparseAutoencoderConfig(name="sparse-ae-faces", **_faces(hidden=[1024]))
)


@MODELS.register("sparse-autoencoder")
class SparseAutoencoder(DenseAutoencoder):
    config_type = SparseAutoencoderConfig


# -- denoising autoencoder


@dataclass
class DenoisingAutoencoderConfig(DenseAutoencoderConfig):
    """An autoencoder trained to restore clean images from corrupted ones (``corrupt``)."""

    name: str = "denoising-ae-digits"
    arch: Literal["denoising-autoencoder"] = "denoising-autoencoder"
    noise: Literal["mask", "gaussian"] = "mask"
    noise_level: float = 0.25  # mask: the ratio of pixels set to 0; gaussian: the noise's standard deviation

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.noise_level <= 0 or (self.noise == "mask" and self.noise_level >= 1):
            raise ConfigError("model.noise_level must be > 0 (and < 1 for masking noise)")


MODEL_PRESETS.register("denoising-ae-digits")(DenoisingAutoencoderConfig)
MODEL_PRESETS.register("denoising-ae-gaussian-digits")(
    lambda: DenoisingAutoencoderConfig(name="denoising-ae-gaussian-digits", noise="gaussian", noise_level=0.2)
)
MODEL_PRESETS.register("denoising-ae-faces")(
    lambda: DenoisingAutoencoderConfig(name="denoising-ae-faces", **_faces(hidden=[1024]))
)


def corrupt(images: Tensor, noise: str, level: float, generator: torch.Generator | None = None) -> Tensor:
    """The denoising autoencoder's corruption of images (N, C, R, R) in [0, 1].

    ``mask``: each pixel (all its channels together, so a colour image loses whole pixels, not
    one colour of them) is set to 0 with probability ``level``; ``gaussian``: ``x + level * n``,
    n standard normal, not clipped (the classic additive noise). ``generator`` (CPU or the
    images' device) makes the draw repeatable.
    """
    device = generator.device if generator is not None else images.device
    if noise == "mask":
        keep = torch.rand((len(images), 1, *images.shape[2:]), generator=generator, device=device) >= level
        return images * keep.to(images.device, images.dtype)
    if noise == "gaussian":
        return images + level * torch.randn(images.shape, generator=generator, device=device).to(images)
    raise ValueError(f"noise must be 'mask' or 'gaussian', got {noise!r}")


@MODELS.register("denoising-autoencoder")
class DenoisingAutoencoder(DenseAutoencoder):
    config_type = DenoisingAutoencoderConfig


# -- contractive autoencoder


@dataclass
class ContractiveAutoencoderConfig(DenseAutoencoderConfig):
    """An autoencoder whose code is made insensitive to its input: the encoder Jacobian's norm (and its change)."""

    name: str = "contractive-ae-digits"
    arch: Literal["contractive-autoencoder"] = "contractive-autoencoder"
    contraction: float = 0.1  # lambda, on ||J||_F^2
    jacobian: Literal["closed-form", "autograd"] = "closed-form"  # closed-form: one sigmoid layer only
    curvature: float = 0.0  # gamma, on E ||J(x) - J(x + eps)||_F^2 (the higher-order variant when > 0)
    curvature_sigma: float = 0.1  # the standard deviation of eps
    curvature_copies: int = 4  # noisy copies per image

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.jacobian == "closed-form" and (len(self.hidden) != 1 or self.activation != "sigmoid"):
            raise ConfigError("model.jacobian=closed-form needs one sigmoid hidden layer; use model.jacobian=autograd")
        if self.contraction < 0 or self.curvature < 0 or self.curvature_sigma <= 0 or self.curvature_copies < 1:
            raise ConfigError("model.contraction and curvature must be >= 0, curvature_sigma > 0, copies >= 1")


MODEL_PRESETS.register("contractive-ae-digits")(ContractiveAutoencoderConfig)
MODEL_PRESETS.register("contractive-ae-ho-digits")(
    lambda: ContractiveAutoencoderConfig(name="contractive-ae-ho-digits", curvature=10.0)
)
MODEL_PRESETS.register("contractive-ae-faces")(
    lambda: ContractiveAutoencoderConfig(name="contractive-ae-faces", **_faces(hidden=[512]))
)


@MODELS.register("contractive-autoencoder")
class ContractiveAutoencoder(DenseAutoencoder):
    config_type = ContractiveAutoencoderConfig


# -- stacked autoencoder


@dataclass
class StackedAutoencoderConfig(DenseAutoencoderConfig):
    """A deep autoencoder trained greedily, one layer at a time, then end to end.

    Steps ``[i * layer_steps, (i + 1) * layer_steps)`` train layer i alone on the codes of the
    layers before it (frozen); from ``len(hidden) * layer_steps`` on, the whole stack is fine-tuned.
    """

    name: str = "stacked-ae-digits"
    arch: Literal["stacked-autoencoder"] = "stacked-autoencoder"
    hidden: list[int] = field(default_factory=lambda: [128, 64, 32])
    layer_steps: int = 500  # optimiser steps of each greedy stage

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layer_steps < 0:
            raise ConfigError("model.layer_steps must be >= 0 (0: no layer-wise stage, fine-tuning only)")

    def stage(self, step: int) -> int:
        """The layer that step ``step`` trains, or ``len(hidden)`` for end-to-end fine-tuning."""
        if self.layer_steps == 0:
            return len(self.hidden)
        return min(step // self.layer_steps, len(self.hidden))


MODEL_PRESETS.register("stacked-ae-digits")(StackedAutoencoderConfig)
MODEL_PRESETS.register("stacked-ae-faces")(
    lambda: StackedAutoencoderConfig(name="stacked-ae-faces", **_faces(hidden=[1024, 512, 256]))
)


@MODELS.register("stacked-autoencoder")
class StackedAutoencoder(DenseAutoencoder):
    config_type = StackedAutoencoderConfig
