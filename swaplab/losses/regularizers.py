"""Penalties on a code and an encoder: the VAE's KL term, sparsity, weight decay and contraction, in ``LOSSES``.

Unlike the image losses these take codes, a module or an encoder, not (pred, target) pairs; each
returns a float32 scalar averaged over the batch, its formula in its docstring. They measure and
differentiate; they choose no weights and run no optimiser (the zoo's autoencoder recipes do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from swaplab.losses.registry import LOSSES
from swaplab.system import full_precision

Tensor = torch.Tensor
Encoder = Callable[[Tensor], Tensor]
JacobianMethod = Literal["closed-form", "autograd"]


def kl_to_standard_normal(mean: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mean, diag(exp(log_var))) || N(0, I)) per sample (N,), in closed form, in fp32:
    ``1/2 sum_j (mean_j^2 + sigma_j^2 - log sigma_j^2 - 1)``."""
    mean, log_var = mean.float(), log_var.float()
    return 0.5 * (mean.square() + log_var.exp() - log_var - 1.0).sum(1)


@LOSSES.register("gaussian_kl")
class GaussianKL(nn.Module):
    """The VAE's prior term: ``kl_to_standard_normal`` averaged over the batch (Kingma and Welling,
    "Auto-Encoding Variational Bayes"); the encoder's (mean, log variance) of a diagonal Gaussian."""

    def forward(self, mean: Tensor, log_var: Tensor) -> Tensor:
        return kl_to_standard_normal(mean, log_var).mean()


@LOSSES.register("kl_sparsity")
class KLSparsity(nn.Module):
    """Sparsity of sigmoid codes as a divergence from a target mean activation ``rho``.

    ``rho_hat_j = mean_n h_nj`` (the batch's mean activation of unit j, h in (0, 1));
    ``L = sum_j KL(rho || rho_hat_j) = sum_j [rho log(rho / rho_hat_j) + (1 - rho) log((1 - rho) / (1 - rho_hat_j))]``,
    zero exactly when every unit's mean activation is ``rho`` (the sparse autoencoder of Ng's
    lecture notes "Sparse autoencoder", with rho around 0.05).
    """

    def __init__(self, rho: float = 0.05) -> None:
        super().__init__()
        if not 0.0 < rho < 1.0:
            raise ValueError(f"the target activation rho must lie in (0, 1), got {rho}")
        self.rho = rho

    def forward(self, codes: Tensor) -> Tensor:
        # The clamp keeps a saturated unit's log finite; its gradient still points back inside.
        rho_hat = codes.float().flatten(1).mean(0).clamp(1e-6, 1.0 - 1e-6)
        rho = self.rho
        kl = rho * torch.log(rho / rho_hat) + (1.0 - rho) * torch.log((1.0 - rho) / (1.0 - rho_hat))
        return kl.sum()


@LOSSES.register("l1_activity")
class L1Activity(nn.Module):
    """The L1 norm of the codes: ``L = mean_n sum_j |h_nj|`` (the convex sparsity penalty)."""

    def forward(self, codes: Tensor) -> Tensor:
        return codes.float().flatten(1).abs().sum(1).mean()


@LOSSES.register("weight_decay")
class WeightDecay(nn.Module):
    """Half the squared norm of a module's weight matrices: ``L = 1/2 sum_l ||W_l||_F^2``.

    Biases (one-dimensional parameters) are left out: they set offsets, not the code's scale.
    """

    def forward(self, module: nn.Module) -> Tensor:
        weights = [p.float().square().sum() for p in module.parameters() if p.ndim >= 2]
        if not weights:
            raise ValueError(f"{type(module).__name__} has no weight matrices to decay")
        return 0.5 * torch.stack(weights).sum()


def encoder_jacobian(encode: Encoder, x: Tensor, create_graph: bool = True) -> Tensor:
    """(N, K, D): d h_n / d x_n of ``encode`` (images (N, ...) -> codes (N, K)) at each of the N inputs, fp32.

    The images are independent, so the Jacobian of the batch-summed code holds every per-image
    Jacobian: K vectorised backward passes instead of N * K. ``create_graph`` keeps it
    differentiable in the encoder's parameters (for a penalty being trained on).
    """
    x = x.detach().float()
    with full_precision(x):
        jac = torch.autograd.functional.jacobian(
            lambda inputs: encode(inputs).float().flatten(1).sum(0), x, create_graph=create_graph, vectorize=True
        )
    return jac.reshape(jac.shape[0], len(x), -1).transpose(0, 1)  # (K, N, ...) -> (N, K, D)


def sigmoid_layer_slopes(layer: nn.Linear, x: Tensor) -> Tensor:
    """(N, K): h_j (1 - h_j) for the one-layer sigmoid encoder ``h = sigmoid(W x + b)`` (fp32)."""
    with full_precision(x):
        bias = None if layer.bias is None else layer.bias.float()
        codes = torch.sigmoid(F.linear(x.float().flatten(1), layer.weight.float(), bias))
    return codes * (1.0 - codes)


def sigmoid_layer_contraction(slopes: Tensor, layer: nn.Linear) -> Tensor:
    """``mean_n sum_j slopes_nj^2 ||W_j||^2``: ||diag(s_n) W||_F^2, the squared Frobenius norm of a
    sigmoid layer's Jacobian ``diag(h (1 - h)) W`` (row j of W scaled by unit j's slope)."""
    row_norms = layer.weight.float().square().sum(1)  # ||W_j||^2, (K,)
    return (slopes.square() * row_norms).sum(1).mean()


def _check_method(method: str) -> None:
    if method not in ("closed-form", "autograd"):
        raise ValueError(f"method must be 'closed-form' or 'autograd', got {method!r}")


def _closed_form_layer(layer: nn.Linear | None) -> nn.Linear:
    if layer is None:
        raise ValueError("the closed form needs the one-layer sigmoid encoder's nn.Linear (layer=...)")
    return layer


@LOSSES.register("contractive")
class ContractivePenalty(nn.Module):
    """The squared Frobenius norm of the encoder's Jacobian, averaged over the batch.

    ``L = mean_n ||d h(x_n) / d x_n||_F^2`` (Rifai et al. 2011, "Contractive Auto-Encoders: Explicit
    Invariance During Feature Extraction", CAE). ``closed-form``: for ``h = sigmoid(W x + b)``,
    ``||J||_F^2 = sum_j (h_j (1 - h_j))^2 ||W_j||^2``; ``autograd``: any encoder, its Jacobian
    from K backward passes (see ``encoder_jacobian``).
    """

    def __init__(self, method: JacobianMethod = "autograd") -> None:
        super().__init__()
        _check_method(method)
        self.method = method

    def forward(self, x: Tensor, encode: Encoder, layer: nn.Linear | None = None) -> Tensor:
        """``x`` the encoder's inputs, ``encode`` the encoder, ``layer`` its nn.Linear (closed form)."""
        if self.method == "closed-form":
            layer = _closed_form_layer(layer)
            return sigmoid_layer_contraction(sigmoid_layer_slopes(layer, x), layer)
        return encoder_jacobian(encode, x).square().sum((1, 2)).mean()


@LOSSES.register("contractive_higher_order")
class HigherOrderContractivePenalty(nn.Module):
    """How much the encoder's Jacobian changes under small noise: a stochastic penalty on its curvature.

    ``L = mean_n mean_c ||J(x_n) - J(x_n + eps_nc)||_F^2`` with ``eps ~ N(0, sigma^2 I)``, ``copies``
    draws c per input (Rifai et al. 2011, "Higher Order Contractive Auto-Encoder", CAE+H); for
    small sigma it approximates sigma^2 times the squared norm of the Hessian. The closed form for a
    sigmoid layer is ``sum_j (s_j(x) - s_j(x + eps))^2 ||W_j||^2`` with slopes s = h (1 - h).
    """

    def __init__(self, sigma: float = 0.1, copies: int = 4, method: JacobianMethod = "autograd") -> None:
        super().__init__()
        if sigma <= 0 or copies < 1:
            raise ValueError(f"sigma must be > 0 and copies >= 1, got {sigma} and {copies}")
        _check_method(method)
        self.sigma, self.copies, self.method = sigma, copies, method

    def forward(
        self, x: Tensor, encode: Encoder, layer: nn.Linear | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """``generator`` draws the noise (on the CPU when it is a CPU generator, as the zoo's recipes pass)."""
        noise_device = generator.device if generator is not None else x.device
        noise = torch.randn((self.copies, *x.shape), generator=generator, device=noise_device).to(x.device)
        noisy = (x.detach().float()[None] + self.sigma * noise).flatten(0, 1)  # (copies * N, ...)
        if self.method == "closed-form":
            layer = _closed_form_layer(layer)
            clean = sigmoid_layer_slopes(layer, x).repeat(self.copies, 1)
            return sigmoid_layer_contraction(clean - sigmoid_layer_slopes(layer, noisy), layer)
        clean = encoder_jacobian(encode, x).repeat(self.copies, 1, 1)
        return (clean - encoder_jacobian(encode, noisy)).square().sum((1, 2)).mean()
