"""The zoo's VAE and GAN family: closed forms and propositions checked by numbers, each model learning on
digits (or the 8-Gaussian ring) against its untrained self, and every preset trained by the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from swaplab.cli import main as cli
from swaplab.config import ConfigError
from swaplab.losses import LOSSES
from swaplab.losses.regularizers import kl_to_standard_normal
from swaplab.models.zoo.gan import GAN, GANConfig, UnitTanh
from swaplab.train.entry import build_config
from swaplab.train.export import export_model
from swaplab.train.loop import TrainingLoop
from swaplab.train.recipe import recipe_for_config
from swaplab.train.recipes.zoo_gan import MixtureConfig, MixtureData, mode_coverage
from swaplab.train.session import Distributed, resolve_device

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- helpers


def prepared_loop(run_dir: Path, *words: str) -> TrainingLoop:
    """The loop of ``swaplab train trainer=zoo-test WORDS``, built but not run (its model untrained)."""
    cfg = build_config(["trainer=zoo-test", *words, f"run_dir={run_dir}"])
    return TrainingLoop(recipe_for_config(cfg), cfg, Distributed(), resolve_device(cfg.trainer.device))


def held_out_numbers(loop: TrainingLoop) -> dict[str, float]:
    """The recipe's validation numbers for the module as it is now (in eval mode, as the loop measures)."""
    loop.module.eval()
    try:
        return loop.recipe.validate(loop.step)
    finally:
        loop.module.train()


def train_and_measure(run_dir: Path, *words: str) -> tuple[dict[str, float], dict[str, float], list[dict]]:
    """(numbers of the untrained model, numbers after training, the logged step rows); one final checkpoint."""
    loop = prepared_loop(run_dir, *words, "trainer.checkpoint_every=0")
    before = held_out_numbers(loop)
    result = loop.run()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return before, result.metrics, [r for r in rows if "loss" in r]


# ---------------------------------------------------------------- VAE


def test_kl_closed_form_matches_a_monte_carlo_estimate() -> None:
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 4, generator=generator)
    log_var = 0.8 * torch.randn(3, 4, generator=generator)
    closed = kl_to_standard_normal(mean, log_var)
    # KL = E_q[log q(z) - log p(z)]; with z = mu + sigma * eps the constants cancel.
    eps = torch.randn(200_000, 3, 4, generator=generator, dtype=torch.float64)
    sigma = torch.exp(0.5 * log_var.double())
    z = mean.double() + sigma * eps
    log_ratio = (-0.5 * eps.square() - sigma.log() + 0.5 * z.square()).sum(-1)
    estimate = log_ratio.mean(0)
    standard_error = log_ratio.std(0) / math.sqrt(len(eps))
    assert torch.all((closed.double() - estimate).abs() < 4 * standard_error + 1e-3), (closed, estimate)
    assert float(kl_to_standard_normal(torch.zeros(1, 4), torch.zeros(1, 4))) == 0.0  # q = p


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory: pytest.TempPathFactory, one_thread_module) -> tuple[dict, dict, list[dict]]:
    run = tmp_path_factory.mktemp("vae") / "run"
    return train_and_measure(run, "model=vae-digits", "trainer.steps=60", "trainer.batch_size=32")


def test_vae_loss_falls(vae_run) -> None:
    _, _, rows = vae_run
    losses = [r["loss"] for r in rows]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert all(r["loss/kl"] >= 0 for r in rows)


def test_vae_reconstructs_held_out_digits_better_than_untrained(vae_run) -> None:
    before, after, _ = vae_run
    assert after["val/reconstruction_mse"] < 0.7 * before["val/reconstruction_mse"]
    assert after["val/loss"] < before["val/loss"]  # the held-out negative ELBO


def test_vae_samples_move_towards_held_out_digits(vae_run) -> None:
    before, after, _ = vae_run
    assert after["val/fd_pixels"] < 0.8 * before["val/fd_pixels"]


# ---------------------------------------------------------------- adversarial criteria

REAL = torch.tensor([2.0, -0.5])
FAKE = torch.tensor([0.5, -2.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# (D's loss on real, D's loss on fake, G's loss) by hand for REAL and FAKE; minimax's G is
# E[log(1 - sigmoid(x))] = -E[softplus(x)], Wasserstein's D is E[x_fake] - E[x_real].
LOG_D_FAKE = (softplus(0.5) + softplus(-2.0)) / 2
EXPECTED = {
    "minimax": ((softplus(-2.0) + softplus(0.5)) / 2, LOG_D_FAKE, -LOG_D_FAKE),
    "wasserstein": (-(2.0 - 0.5) / 2, (0.5 - 2.0) / 2, -(0.5 - 2.0) / 2),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_minimax_and_wasserstein_criteria_match_their_formulas(kind: str) -> None:
    loss = LOSSES.create(kind)
    real_term, fake_term = loss.discriminator_terms(REAL, FAKE)
    values = (float(real_term), float(fake_term), float(loss.generator_loss(FAKE)))
    assert values == pytest.approx(EXPECTED[kind], abs=1e-6)


def test_minimax_generator_gradient_vanishes_where_the_discriminator_rejects_fakes() -> None:
    """Goodfellow et al.'s reason for the non-saturating loss: early on D(G(z)) ~ 0 and log(1 - D) is flat there."""
    logits = torch.tensor([-8.0], requires_grad=True)
    slopes = {}
    for kind in ("minimax", "nonsaturating"):
        (slopes[kind],) = torch.autograd.grad(LOSSES.create(kind).generator_loss(logits), logits)
    assert abs(float(slopes["minimax"])) < 1e-3
    assert float(slopes["nonsaturating"]) == pytest.approx(-1.0, abs=1e-3)


# ---------------------------------------------------------------- the GAN propositions


def gaussian_pdf(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def test_discriminator_trained_alone_approaches_the_optimal_discriminator() -> None:
    """Goodfellow et al.'s Proposition 1: for fixed p_data and p_g, D*(x) = p_data(x) / (p_data(x) + p_g(x))."""
    torch.manual_seed(0)
    model = GAN(GANConfig(space="points", channels=1, resolution=1, latent=1, width=32, depth=2))
    discriminator = model.discriminator
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(2048, 1, 1, 1, generator=generator)  # p_data = N(0, 1)
    fake = 1.0 + 0.5 * torch.randn(2048, 1, 1, 1, generator=generator)  # p_g = N(1, 0.5^2), fixed
    criterion = LOSSES.create("minimax")
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-2)
    grid = torch.linspace(-1.5, 2.0, 36)
    optimal = gaussian_pdf(grid, 0.0, 1.0) / (gaussian_pdf(grid, 0.0, 1.0) + gaussian_pdf(grid, 1.0, 0.5))

    def gap() -> float:
        with torch.no_grad():
            return float((torch.sigmoid(discriminator(grid.view(-1, 1, 1, 1))) - optimal).abs().max())

    untrained = gap()
    for _ in range(300):
        loss = criterion.discriminator_loss(discriminator(real), discriminator(fake))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert gap() < 0.06 < untrained
    # At D*, D's loss is 2 log 2 - 2 JSD(p_data || p_g) < 2 log 2 (the two differ, so the JSD > 0).
    assert float(loss.detach()) < 2 * math.log(2) - 0.3


def test_mode_coverage_counts_modes_and_good_samples() -> None:
    data = MixtureData(MixtureConfig())
    collapsed = data.centres[[0] * 100].view(100, 2, 1, 1)  # everything on one mode
    everywhere, _ = data.heldout()
    far = torch.zeros(100, 2, 1, 1)  # the ring's centre: no mode
    assert mode_coverage(collapsed, data.centres, 0.02) == {
        "modes_covered": 1.0,
        "mode_coverage": 0.125,
        "high_quality": 1.0,
    }
    assert mode_coverage(everywhere, data.centres, 0.02)["modes_covered"] == 8.0
    # Within 3 sd of a 2-D Gaussian's centre: P(chi^2_2 <= 9) = 1 - exp(-9 / 2) = 98.9 %.
    assert mode_coverage(everywhere, data.centres, 0.02)["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    assert mode_coverage(far, data.centres, 0.02)["mode_coverage"] == 0.0


def test_gan_covers_more_modes_of_the_8_gaussian_ring_after_training(tmp_path: Path) -> None:
    words = ("model=gan-mixture8", "trainer.steps=200", "trainer.batch_size=64")
    before, after, rows = train_and_measure(tmp_path / "run", *words)
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["d_loss"]) for r in rows)
    assert after["val/modes_covered"] > before["val/modes_covered"]
    assert after["val/high_quality"] > before["val/high_quality"]


# ---------------------------------------------------------------- each GAN learns

GAN_VARIANTS = {
    "mlp, non-saturating": ("model=gan-digits",),
    "mlp, minimax": ("model=gan-digits", "loss=gan-minimax"),
    "mlp, WGAN-GP": ("model=gan-digits", "loss=wgan-gp"),
    "mlp, spectral norm, Wasserstein": ("model=gan-digits", "model.spectral_norm=true", "loss.criterion=wasserstein"),
    "mlp, unrolled": ("model=gan-digits", "loss=gan-unrolled", "loss.unroll=3"),
    "conditional": ("model=cgan-digits",),
    "dcgan": ("model=dcgan-digits",),
}


@pytest.mark.parametrize("variant", list(GAN_VARIANTS))
def test_each_gan_moves_its_samples_towards_held_out_digits(variant: str, tmp_path: Path) -> None:
    words = (*GAN_VARIANTS[variant], "trainer.steps=50", "trainer.batch_size=32")
    before, after, rows = train_and_measure(tmp_path / "run", *words)
    assert len(rows) == 50
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["d_loss"]) for r in rows)
    assert after["val/fd_pixels"] < 0.8 * before["val/fd_pixels"]
    if "val/class_accuracy" in before:  # the label steers the generator
        assert after["val/class_accuracy"] > before["val/class_accuracy"] + 0.2


def test_conditional_samples_stay_varied_under_wgan_gp_where_the_non_saturating_loss_collapses(tmp_path: Path) -> None:
    """The cGAN's known failure, measured: under the non-saturating loss G learns to ignore z (one image
    per label); the Wasserstein critic with its gradient penalty keeps the within-class spread."""
    diversity = {}
    for loss in ("gan-nonsaturating", "wgan-gp"):
        words = ("model=cgan-digits", f"loss={loss}", "trainer.steps=150", "trainer.batch_size=32")
        before, after, _ = train_and_measure(tmp_path / loss, *words)
        assert after["val/class_accuracy"] > before["val/class_accuracy"] + 0.5
        diversity[loss] = after["val/class_diversity"]
    assert diversity["wgan-gp"] > 0.5 and diversity["wgan-gp"] > 3 * diversity["gan-nonsaturating"], diversity


def test_unrolled_steps_leave_the_discriminator_as_one_plain_step_does(tmp_path: Path) -> None:
    """The look-ahead D steps are undone: D's weights and optimiser state match a run without them,
    while G (updated against the looked-ahead D) differs."""
    recipes = []
    for unroll in (0, 3):
        loop = prepared_loop(tmp_path / f"unroll{unroll}", "model=gan-digits", f"loss.unroll={unroll}")
        loop.recipe.train_step(0)
        loop.tb.close()  # the loop never runs: close the log it opened
        recipes.append(loop.recipe)
    plain, unrolled = recipes
    for key, value in plain.model.discriminator.state_dict().items():
        assert torch.equal(value, unrolled.model.discriminator.state_dict()[key]), key
    plain_state = plain.optimizers["discriminator"].state_dict()["state"]
    unrolled_state = unrolled.optimizers["discriminator"].state_dict()["state"]
    for index, moments in plain_state.items():
        assert all(torch.equal(moments[k], unrolled_state[index][k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    generators = [r.model.generator.state_dict() for r in recipes]
    assert any(not torch.equal(generators[0][k], generators[1][k]) for k in generators[0])


def test_spectral_norm_bounds_every_discriminator_layer() -> None:
    torch.manual_seed(0)
    model = GAN(GANConfig(num_classes=10, spectral_norm=True))
    images, labels = torch.rand(8, 1, 8, 8), torch.arange(8)
    for _ in range(30):  # each training forward runs one power iteration per layer
        model.discriminate(images, labels)
    layers = [m for m in model.discriminator.modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    assert len(layers) == 4
    for layer in layers:
        assert float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2)) == pytest.approx(1.0, abs=0.02)


def test_dcgan_follows_its_architecture_rules() -> None:
    model = GAN(GANConfig(network="dcgan", channels=3, resolution=32, width=16, depth=3))
    g_layers, d_layers = list(model.generator.modules()), list(model.discriminator.modules())
    pools = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    assert not any(isinstance(m, pools) for m in g_layers + d_layers)
    assert [m.stride for m in d_layers if isinstance(m, nn.Conv2d)] == [(2, 2)] * 3
    assert sum(isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2) for m in g_layers) == 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g_layers) == 3  # all but G's output
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d_layers) == 2  # all but D's input layer
    assert {type(m) for m in g_layers} >= {nn.ReLU, UnitTanh} and nn.LeakyReLU not in {type(m) for m in g_layers}
    assert nn.LeakyReLU in {type(m) for m in d_layers} and nn.ReLU not in {type(m) for m in d_layers}
    with torch.no_grad():
        samples = model.eval().sample(4, torch.Generator().manual_seed(0))
    assert samples.shape == (4, 3, 32, 32) and 0.0 <= float(samples.min()) and float(samples.max()) <= 1.0


def test_wasserstein_without_a_lipschitz_critic_is_refused() -> None:
    with pytest.raises(ConfigError, match="Lipschitz"):
        build_config(["model=gan-digits", "loss.criterion=wasserstein"])
    with pytest.raises(ConfigError, match="d_batchnorm"):
        build_config(["model=dcgan-digits", "loss=wgan-gp"])
    assert build_config(["model=dcgan-digits", "loss=wgan-gp", "model.d_batchnorm=false"]).loss.d_steps == 5


MY_PRESETS = ("vae-digits", "vae-mnist", "vae-faces", "gan-digits", "gan-mnist", "cgan-digits", "cgan-faces32",
              "dcgan-digits", "dcgan-mnist", "dcgan-faces32")  # fmt: skip


@pytest.mark.parametrize("preset", MY_PRESETS)
def test_every_image_preset_draws_images_of_its_shape_in_the_unit_range(preset: str) -> None:
    from swaplab.config import config_group
    from swaplab.models.factory import create_model

    torch.manual_seed(0)
    model = create_model(config_group("model").create(preset)).eval()
    labels = torch.arange(3) % max(1, model.num_classes)
    with torch.no_grad():
        samples = model.sample(3, torch.Generator().manual_seed(0), labels)
        assert samples.shape == (3, *model.image_shape)
        assert 0.0 <= float(samples.min()) and float(samples.max()) <= 1.0
        if "reconstruct" in model.capabilities:
            assert model.reconstruct(samples).shape == samples.shape
            assert model.interpolate(samples[0], samples[1], 5).shape == (5, *model.image_shape)
    assert ("conditional" in model.capabilities) == preset.startswith("cgan")


def test_a_resumed_gan_run_continues_exactly(tmp_path: Path) -> None:
    """Both optimisers, the RNG and the step-indexed batches (critic and look-ahead draws too) resume exactly."""
    words = ("model=gan-digits", "loss=wgan-gp", "loss.d_steps=2", "loss.unroll=2", "trainer=zoo-test")
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli(["train", *words, f"run_dir={straight}"]) == 0
    assert cli(["train", *words, f"run_dir={split}", "trainer.steps=4"]) == 0
    assert cli(["train", f"run_dir={split}", "trainer.steps=6"]) == 0
    ends = [load_file(run / "checkpoints" / "step-0000006" / "model.safetensors") for run in (straight, split)]
    assert ends[0].keys() == ends[1].keys() and all(torch.equal(ends[0][k], ends[1][k]) for k in ends[0])


# ---------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    "words",
    [
        ("model=vae-digits",),
        ("model=vae-digits", "likelihood=mse", "beta=4"),
        ("model=gan-digits",),
        ("model=gan-digits", "loss=wgan-gp"),
        ("model=gan-mixture8", "loss=gan-unrolled"),
        ("model=dcgan-digits", "model.spectral_norm=true"),
    ],
    ids=lambda words: " ".join(words),
)
def test_cli_trains_each_preset(words: tuple[str, ...], tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert cli(["train", *words, "trainer=zoo-test", f"run_dir={run}"]) == 0
    assert "stopped at step 6 (steps)" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    assert any(k.startswith("val/") for k in rows[-1])


def test_cli_draws_samples_reconstructions_and_interpolations_from_a_vae(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli(["train", "model=vae-digits", "trainer=zoo-test", f"run_dir={run}"]) == 0
    sizes = {}
    for kind in ("samples", "reconstructions", "interpolations"):
        picture = tmp_path / f"{kind}.png"
        assert cli(["sample", str(run), "-o", str(picture), "--kind", kind, "-n", "16"]) == 0
        sizes[kind] = Image.open(picture).size
    # 16 samples 4 by 4; 16 originals beside their reconstructions, 16 a row; 2 pairs, 8 steps a row.
    assert sizes == {"samples": (256, 256), "reconstructions": (1024, 128), "interpolations": (512, 128)}


def test_cli_samples_a_row_per_class_from_a_conditional_gan(tmp_path: Path) -> None:
    run, picture = tmp_path / "run", tmp_path / "classes.png"
    assert cli(["train", "model=cgan-digits", "trainer=zoo-test", f"run_dir={run}"]) == 0
    assert cli(["sample", str(run), "-o", str(picture), "--kind", "classes", "-n", "30"]) == 0
    width, height = Image.open(picture).size
    assert (width, height) == (3 * 64, 10 * 64)  # 10 digits a row each, 3 samples per row, 64 px tiles
    card = json.loads(export_model(run, tmp_path / "model").read_text())
    assert card["generative"]["capabilities"] == ["sample", "conditional"] and card["generative"]["num_classes"] == 10


# ---------------------------------------------------------------- faces (LFW)


def faces_words(pair_facesets: tuple[Path, Path]) -> tuple[str, ...]:
    return ("data=faces32", f"data.train=[{','.join(str(p) for p in pair_facesets)}]", "data.holdout=8")


@pytest.mark.slow
def test_dcgan_on_faces_moves_its_samples_towards_held_out_faces(pair_facesets, tmp_path: Path) -> None:
    words = ("model=dcgan-faces32", *faces_words(pair_facesets), "trainer.steps=25", "trainer.batch_size=16")
    before, after, rows = train_and_measure(tmp_path / "run", *words)
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["d_loss"]) for r in rows)
    assert after["val/fd_pixels"] < 0.8 * before["val/fd_pixels"]


@pytest.mark.slow
def test_identity_conditional_gan_on_faces_samples_a_row_per_person(pair_facesets, tmp_path: Path) -> None:
    run, picture = tmp_path / "run", tmp_path / "people.png"
    words = ("model=cgan-faces32", "loss=wgan-gp", *faces_words(pair_facesets), "trainer=zoo-test")
    assert cli(["train", *words, f"run_dir={run}"]) == 0
    assert cli(["sample", str(run), "-o", str(picture), "--kind", "classes", "-n", "8"]) == 0
    width, height = Image.open(picture).size
    assert (width, height) == (4 * 64, 2 * 64)  # George_W_Bush and Colin_Powell, 4 samples each
