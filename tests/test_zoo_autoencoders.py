"""The autoencoder family beyond the plain one, on real digits: PCA as the linear autoencoder's optimum,
sparse coding, the sparse, denoising, contractive and stacked autoencoders, and their penalties.

Each model trains a few dozen to a few hundred steps through the shared loop (the CLI's words,
``trainer=zoo-test``) and must lower its loss and beat its untrained self on held-out digits; the
penalties must match closed forms and finite differences.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from swaplab.config import config_group
from swaplab.losses import LOSSES
from swaplab.models.card import load_model
from swaplab.models.factory import create_model
from swaplab.models.zoo.autoencoder import Autoencoder
from swaplab.models.zoo.autoencoder_variants import SparseCoding, SparseCodingConfig, corrupt
from swaplab.models.zoo.pca import fit_pca, pca_reconstruct, principal_angles
from swaplab.train.entry import build_config
from swaplab.train.export import export_model
from swaplab.train.image_data import ImageData, ImageDataConfig
from swaplab.train.loop import train
from swaplab.train.recipes.zoo_autoencoder import likelihood_loss
from swaplab.train.recipes.zoo_autoencoder_variants import SMALL_CODE

pytestmark = pytest.mark.usefixtures("one_thread")

Tensor = torch.Tensor


# ---------------------------------------------------------------- helpers


def run(tmp_path: Path, model: str, steps: int, *overrides: str):
    """Train ``model=NAME`` with the CLI's words for ``steps`` steps of 64 digits: (result, losses, config)."""
    words = [f"model={model}", "trainer=zoo-test", f"trainer.steps={steps}", "trainer.batch_size=64"]
    cfg = build_config([*words, "trainer.checkpoint_every=0", f"run_dir={tmp_path / model}", *overrides])
    result = train(cfg)
    rows = [json.loads(line) for line in (tmp_path / model / "metrics.jsonl").read_text().splitlines()]
    return result, [row["loss"] for row in rows if "loss" in row], cfg


def untrained(cfg) -> nn.Module:
    """The model the run started from (the loop seeds with ``trainer.seed`` before ``build``)."""
    torch.manual_seed(cfg.trainer.seed)
    return create_model(cfg.model).eval()


@torch.no_grad()
def heldout_mse(model: nn.Module, cfg) -> float:
    held, _ = ImageData.for_run(cfg).heldout()
    return float((model.reconstruct(held).clamp(0, 1) - held).square().mean())


def falls(losses: list[float], factor: float) -> bool:
    """The mean of the last five losses is below ``factor`` x the mean of the first five."""
    return sum(losses[-5:]) / 5 < factor * sum(losses[:5]) / 5


@pytest.fixture(scope="module")
def digits() -> Tensor:
    """The training digits (N, 1, 8, 8) in [0, 1]."""
    return ImageData(ImageDataConfig(source="digits", resolution=8, channels=1)).images.float().div(255.0)


# ---------------------------------------------------------------- PCA


def test_principal_angles_of_known_subspaces_and_pca_against_the_covariance(digits: Tensor):
    e = torch.eye(5, dtype=torch.float64)
    tilt = 0.3
    a = torch.stack([e[0], e[1]], 1)
    b = torch.stack([2.0 * e[0], math.cos(tilt) * e[1] + math.sin(tilt) * e[2]], 1)  # not orthonormal on purpose
    assert torch.allclose(principal_angles(a, b), torch.tensor([0.0, tilt], dtype=torch.float64), atol=1e-7)
    assert torch.allclose(principal_angles(a, e[:, 3:]), torch.full((2,), math.pi / 2, dtype=torch.float64))

    mean, components = fit_pca(digits, 10)
    assert torch.allclose(components @ components.T, torch.eye(10), atol=1e-5)
    flat = digits.flatten(1).double()
    covariance = torch.cov(flat.T)
    _, vectors = torch.linalg.eigh(covariance)  # ascending: the top 10 are the last columns
    assert principal_angles(components.T, vectors[:, -10:]).max() < 1e-4
    # Eckart-Young: the projection's mean squared error is the discarded variance.
    error = (pca_reconstruct(digits, mean, components) - digits).double().square().sum() / (len(digits) - 1)
    assert error.item() == pytest.approx(torch.linalg.eigvalsh(covariance)[:-10].sum().item(), rel=1e-4)


def test_the_linear_autoencoder_learns_the_principal_subspace(digits: Tensor):
    """``ae-linear-digits`` (linear output, MSE) on centred digits, without biases: its decoder's columns
    span the top-k principal subspace. Full batches: the 16th and 17th eigenvalues of digits differ by
    5 %, and minibatch noise keeps the last direction tens of degrees off (measured: 16 degrees after
    1000 Adam steps of 256 images); the full batch reaches 2.9 degrees in 1000 steps."""
    k = 16
    cfg = replace(config_group("model").create("ae-linear-digits"), code=k, linear_bias=False)
    assert (cfg.kind, cfg.output) == ("linear", "linear")
    centred = digits - digits.mean(0)
    torch.manual_seed(0)
    model = Autoencoder(cfg)
    steps = 1000
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=1e-4)
    for _ in range(steps):
        loss = likelihood_loss(model.reconstruct(centred), centred, "mse")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()

    mean, components = fit_pca(centred, k)
    decoder = model.decoder[0].weight.detach()  # (pixels, k): its columns span the reconstructions
    learned = torch.rad2deg(principal_angles(decoder, components.T))
    assert learned.max() < 10.0, learned  # measured: 2.9 degrees
    random_basis = torch.randn(decoder.shape, generator=torch.Generator().manual_seed(0))
    chance = torch.rad2deg(principal_angles(random_basis, components.T))
    assert chance.max() > 80.0 and chance.min() > 15.0, chance
    # PCA is the optimum: the autoencoder comes within 0.5 % of its error and not below it.
    pca_loss = likelihood_loss(pca_reconstruct(centred, mean, components).float(), centred, "mse")
    assert pca_loss.item() * 0.999 <= loss.item() < pca_loss.item() * 1.005


# ---------------------------------------------------------------- every model trains


TRAINING = {
    # preset: (steps, learning rate); each model's loss falls and it beats its untrained self
    "sparse-coding-digits": (40, 1e-3),
    "sparse-coding-log-digits": (40, 1e-3),
    "sparse-ae-digits": (60, 5e-3),
    "sparse-ae-l1-digits": (60, 5e-3),
    "denoising-ae-digits": (60, 5e-3),
    "denoising-ae-gaussian-digits": (60, 5e-3),
    "contractive-ae-digits": (60, 5e-3),
    "contractive-ae-ho-digits": (60, 5e-3),
    "stacked-ae-digits": (60, 5e-3),  # here fine-tuning only (model.layer_steps=0); the greedy stages below
}


@pytest.mark.parametrize("preset", sorted(TRAINING))
def test_each_model_lowers_its_loss_beats_its_untrained_self_and_exports(preset: str, tmp_path: Path):
    steps, lr = TRAINING[preset]
    extra = ["model.layer_steps=0"] if preset.startswith("stacked") else []
    result, losses, cfg = run(tmp_path, preset, steps, f"trainer.lr={lr}", *extra)
    assert result.step == steps and len(losses) == steps
    assert falls(losses, 0.8), (losses[:5], losses[-5:])
    trained = result.metrics["val/reconstruction_mse"]
    before = heldout_mse(untrained(cfg), cfg)
    assert trained < 0.75 * before, (trained, before)

    card = json.loads(export_model(tmp_path / preset, tmp_path / "export").read_text())
    assert card["generative"]["capabilities"] == ["reconstruct", "interpolate"]
    model = load_model(tmp_path / "export")
    assert heldout_mse(model, cfg) == pytest.approx(trained, rel=1e-5)  # the card rebuilds the trained model
    held, _ = ImageData.for_run(cfg).heldout(2)
    with torch.no_grad():
        path = model.interpolate(held[0], held[1], steps=5)
    assert path.shape == (5, 1, 8, 8) and 0.0 <= float(path.min()) and float(path.max()) <= 1.0


# ---------------------------------------------------------------- sparse coding


def test_ista_lowers_the_energy_every_step_and_fista_lowers_it_faster(digits: Tensor):
    """On a coherent dictionary (atoms made of other digits, like a learned one): ISTA never raises the
    energy, and FISTA's excess over the optimum after 30 steps is under half of ISTA's (measured:
    0.34 against 0.92)."""
    coder = SparseCoding(SparseCodingConfig(accelerated=False))
    with torch.no_grad():
        coder.dictionary.copy_(digits[200 : 200 + coder.config.atoms].flatten(1).T)
        coder.normalize_atoms()
    x = digits[:128]
    energies = [coder.energy(x, coder.encode(x, steps=k)).mean().item() for k in range(0, 31)]
    assert all(b <= a + 1e-5 for a, b in zip(energies, energies[1:])), energies
    codes = coder.encode(x, steps=30)
    assert 0.2 < float((codes == 0).float().mean()) < 1.0  # L1's soft threshold gives exact zeros

    coder.config = replace(coder.config, accelerated=True)
    optimum = coder.energy(x, coder.encode(x, steps=1000)).mean().item()
    fista = coder.energy(x, coder.encode(x, steps=30)).mean().item()
    assert optimum <= fista and fista - optimum < 0.5 * (energies[-1] - optimum), (optimum, fista, energies[-1])


def test_sparse_coding_keeps_unit_atoms_and_learns_a_dictionary_with_lower_energy(tmp_path: Path):
    """40 steps: held-out energy and error fall at no loss of sparsity (over 3000 steps the share of
    small codes also grows, 0.73 to 0.86)."""
    result, _, cfg = run(tmp_path, "sparse-coding-digits", 40)
    model = load_model(export_model(tmp_path / "sparse-coding-digits", tmp_path / "export"))
    assert torch.allclose(model.dictionary.norm(dim=0), torch.ones(cfg.model.atoms), atol=1e-5)
    held, _ = ImageData.for_run(cfg).heldout()
    fresh = untrained(cfg)
    energy_before = fresh.energy(held, fresh.encode(held)).mean().item()
    energy_after = model.energy(held, model.encode(held)).mean().item()
    assert energy_after < 0.8 * energy_before, (energy_after, energy_before)
    small_before = float((fresh.encode(held).abs() < SMALL_CODE).float().mean())
    assert result.metrics["val/code_small_fraction"] > small_before - 0.01, small_before
    assert result.metrics["val/reconstruction_mse"] < 0.6 * heldout_mse(fresh, cfg)


# ---------------------------------------------------------------- sparse autoencoder


def test_sparsity_penalties_kl_at_its_target_and_l1_and_weight_decay_by_formula():
    kl = LOSSES.create("kl_sparsity", 0.1)
    at_target = torch.full((16, 8), 0.1)
    assert kl(at_target).item() == pytest.approx(0.0, abs=1e-6)
    codes = torch.rand(16, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    kl(codes).backward()
    # Above the target the penalty pushes activations down (a positive gradient), below it up.
    assert bool(((codes.grad > 0) == (codes.detach().mean(0) > 0.1)).all())
    rho_hat = codes.detach().mean(0)
    by_hand = (0.1 * torch.log(0.1 / rho_hat) + 0.9 * torch.log(0.9 / (1 - rho_hat))).sum()
    assert kl(codes).item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert LOSSES.create("l1_activity")(torch.tensor([[1.0, -2.0], [0.0, 3.0]])).item() == pytest.approx(3.0)
    layer = nn.Linear(3, 2)
    expected = 0.5 * layer.weight.square().sum()  # the bias is left out
    assert LOSSES.create("weight_decay")(layer).item() == pytest.approx(expected.item(), rel=1e-6)


def test_the_sparse_autoencoder_drives_activations_towards_rho_and_l1_shrinks_them(tmp_path: Path):
    result, _, cfg = run(tmp_path, "sparse-ae-digits", 60, "trainer.lr=5e-3")
    rho = cfg.model.rho
    held, _ = ImageData.for_run(cfg).heldout()
    with torch.no_grad():
        before = float(untrained(cfg).encode(held).mean())
    after = result.metrics["val/mean_activation"]
    assert abs(after - rho) < 0.5 * abs(before - rho), (before, after, rho)

    l1, _, _ = run(tmp_path, "sparse-ae-l1-digits", 60, "trainer.lr=5e-3")
    plain, _, _ = run(tmp_path / "plain", "sparse-ae-l1-digits", 60, "trainer.lr=5e-3", "model.sparsity_weight=0")
    assert l1.metrics["val/mean_activation"] < 0.7 * plain.metrics["val/mean_activation"]


# ---------------------------------------------------------------- denoising autoencoder


def test_corruptions_mask_the_requested_ratio_of_pixels_and_add_noise_of_the_requested_scale():
    images = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.1
    masked = corrupt(images, "mask", 0.25, torch.Generator().manual_seed(1))
    dropped = masked == 0
    assert bool((dropped.all(1) == dropped.any(1)).all())  # a pixel loses all its channels together
    assert float(dropped.float().mean()) == pytest.approx(0.25, abs=0.02)
    noisy = corrupt(images, "gaussian", 0.2, torch.Generator().manual_seed(1))
    assert float((noisy - images).std()) == pytest.approx(0.2, rel=0.05)


@pytest.mark.parametrize("preset", ["denoising-ae-digits", "denoising-ae-gaussian-digits"])
def test_the_denoising_autoencoder_restores_corrupted_digits(preset: str, tmp_path: Path):
    result, _, cfg = run(tmp_path, preset, 300, "trainer.lr=5e-3")
    restored, identity = result.metrics["val/denoising_mse"], result.metrics["val/corrupted_mse"]
    held, _ = ImageData.for_run(cfg).heldout()
    noisy = corrupt(held, cfg.model.noise, cfg.model.noise_level, torch.Generator().manual_seed(1234))
    with torch.no_grad():
        before = float((untrained(cfg).reconstruct(noisy).clamp(0, 1) - held).square().mean())
    assert restored < 0.85 * identity, (restored, identity)
    assert restored < 0.5 * before, (restored, before)


# ---------------------------------------------------------------- contractive autoencoder


def finite_difference_jacobians(encode, x: Tensor, eps: float = 1e-6) -> Tensor:
    """(N, K, D) central differences of ``encode`` in float64."""
    flat = x.flatten(1).double()
    columns = []
    for d in range(flat.shape[1]):
        step = torch.zeros_like(flat)
        step[:, d] = eps
        columns.append((encode(flat + step) - encode(flat - step)) / (2 * eps))
    return torch.stack(columns, 2)


def test_contractive_penalties_match_finite_differences_and_each_other():
    torch.manual_seed(0)
    layer, deeper = nn.Linear(12, 5), nn.Linear(5, 3)

    def dense(module: nn.Linear, x: Tensor) -> Tensor:  # in the input's precision (float64 for the differences)
        return F.linear(x.flatten(1), module.weight.to(x.dtype), module.bias.to(x.dtype))

    one_layer = lambda x: torch.sigmoid(dense(layer, x))  # noqa: E731
    two_layers = lambda x: torch.tanh(dense(deeper, one_layer(x)))  # noqa: E731
    x = torch.rand(4, 1, 3, 4)
    with torch.no_grad():
        reference = [finite_difference_jacobians(f, x) for f in (one_layer, two_layers)]
    closed, autograd = LOSSES.create("contractive", "closed-form"), LOSSES.create("contractive", "autograd")
    fd_one, fd_two = (j.square().sum((1, 2)).mean().item() for j in reference)
    assert closed(x, one_layer, layer).item() == pytest.approx(fd_one, rel=1e-4)
    assert autograd(x, one_layer).item() == pytest.approx(fd_one, rel=1e-4)
    assert autograd(x, two_layers).item() == pytest.approx(fd_two, rel=1e-4)
    # The autograd penalty is differentiable in the weights, with the closed form's gradient.
    g_closed = torch.autograd.grad(closed(x, one_layer, layer), layer.weight)[0]
    g_autograd = torch.autograd.grad(autograd(x, one_layer), layer.weight)[0]
    assert torch.allclose(g_closed, g_autograd, atol=1e-6 * float(g_closed.abs().max()) + 1e-9)

    # Higher order: ||J(x) - J(x + eps)||^2 with the penalty's own draws of eps, against differences.
    sigma, copies = 0.3, 2
    noise = torch.randn((copies, *x.shape), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        noisy = finite_difference_jacobians(two_layers, (x[None] + sigma * noise).flatten(0, 1))
    expected = (reference[1].repeat(copies, 1, 1) - noisy).square().sum((1, 2)).mean().item()
    higher = LOSSES.create("contractive_higher_order", sigma, copies, "autograd")
    assert higher(x, two_layers, None, torch.Generator().manual_seed(5)).item() == pytest.approx(expected, rel=1e-4)
    closed_higher = LOSSES.create("contractive_higher_order", sigma, copies, "closed-form")
    auto_higher = LOSSES.create("contractive_higher_order", sigma, copies, "autograd")
    a = closed_higher(x, one_layer, layer, torch.Generator().manual_seed(5)).item()
    assert a == pytest.approx(auto_higher(x, one_layer, None, torch.Generator().manual_seed(5)).item(), rel=1e-4)


def test_the_contractive_autoencoder_has_a_smaller_jacobian_than_without_its_penalty(tmp_path: Path):
    # A strong weight (x 10 the preset's) over a short run makes the effect large enough to measure.
    contractive, _, cfg = run(tmp_path, "contractive-ae-digits", 60, "trainer.lr=5e-3", "model.contraction=1.0")
    plain, _, _ = run(tmp_path / "plain", "contractive-ae-digits", 60, "trainer.lr=5e-3", "model.contraction=0")
    held, _ = ImageData.for_run(cfg).heldout()
    penalty = LOSSES.create("contractive", "autograd")
    norms = []
    for folder in (tmp_path / "contractive-ae-digits", tmp_path / "plain" / "contractive-ae-digits"):
        model = load_model(export_model(folder, folder / "export"))
        norms.append(penalty(held, model.encode).item())
    assert norms[0] < 0.5 * norms[1], norms
    assert contractive.metrics["val/reconstruction_mse"] < 2.0 * plain.metrics["val/reconstruction_mse"]


# ---------------------------------------------------------------- stacked autoencoder


def test_layerwise_training_then_fine_tuning_of_the_stacked_autoencoder(tmp_path: Path):
    """Three greedy stages of 40 steps each, then (resuming the same run) 200 steps end to end."""
    stage_steps, depth = 40, 3
    layerwise, losses, cfg = run(tmp_path, "stacked-ae-digits", stage_steps * depth, "trainer.lr=5e-3",
                                 f"model.layer_steps={stage_steps}")  # fmt: skip
    assert len(cfg.model.hidden) == depth
    for stage in range(depth):  # each layer learns to reconstruct its inputs
        assert falls(losses[stage * stage_steps : (stage + 1) * stage_steps], 0.8), stage
    rows = [json.loads(line) for line in (tmp_path / "stacked-ae-digits" / "metrics.jsonl").read_text().splitlines()]
    assert [f"loss/layer{s + 1}" in rows[s * stage_steps] for s in range(depth)] == [True] * depth
    before = heldout_mse(untrained(cfg), cfg)
    stacked = layerwise.metrics["val/reconstruction_mse"]
    assert stacked < before

    fine_tuned = train(build_config([f"run_dir={tmp_path / 'stacked-ae-digits'}", "trainer.steps=320"]))
    assert fine_tuned.start_step == stage_steps * depth and "loss/reconstruction" in fine_tuned.metrics
    assert fine_tuned.metrics["val/reconstruction_mse"] < 0.8 * stacked, (fine_tuned.metrics, stacked)
