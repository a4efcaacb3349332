"""The DDPM family: the forward process and posterior against their formulas, the samplers (DDIM's
inversion, annealed Langevin on a known mixture), learning on real faces, and swaps through the pipeline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from swaplab.config import ConfigError
from swaplab.models.diffusion import DDPM, DDPMConfig
from swaplab.models.samplers import SAMPLERS, NoiseSchedule, SamplerConfig, langevin_steps, make_sampler
from swaplab.train.recipe import Session

pytestmark = pytest.mark.usefixtures("one_thread")

#: A U-Net small enough to learn in seconds here (the presets are the real sizes).
TINY = ("model.resolution=16", "model.widths=[16,32]", "model.attention=[false,true]")


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """The two-sample energy statistic 2E|X-Y| - E|X-X'| - E|Y-Y'| (0 when the laws agree)."""
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


# ---------------------------------------------------------------- the forward process


def test_closed_form_forward_equals_composed_single_steps() -> None:
    schedule = NoiseSchedule()
    betas = schedule.betas
    generator = torch.Generator().manual_seed(0)
    x0 = torch.tensor([0.8, -0.5, 0.0, 0.3], dtype=torch.float64)
    n, t = 20_000, 200
    x = x0.expand(n, -1).clone()
    for s in range(t + 1):  # x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) z, starting from x_0
        x = (1 - betas[s]).sqrt() * x + betas[s].sqrt() * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    closed = schedule.q_sample(x0.expand(n, -1), t, torch.randn(n, 4, generator=generator, dtype=torch.float64))
    abar = float(schedule.alphas_cumprod[t])
    for draws in (x, closed):
        mean_error = (draws.mean(0) - math.sqrt(abar) * x0).abs().max()
        assert mean_error < 4 * math.sqrt((1 - abar) / n)
        assert (draws.var(0) - (1 - abar)).abs().max() < 4 * (1 - abar) * math.sqrt(2 / n)
    assert (x.mean(0) - closed.mean(0)).abs().max() < 6 * math.sqrt((1 - abar) / n)


@pytest.mark.parametrize("t", [1, 10, 500, 999])
def test_posterior_matches_the_formulas_and_gaussian_conditioning(t: int) -> None:
    schedule = NoiseSchedule(clip=False)
    beta, abar = float(schedule.betas[t]), schedule.alphas_cumprod
    a_t, a_prev = float(abar[t]), float(abar[t - 1])
    x0, xt = torch.tensor([0.7, -0.2], dtype=torch.float64), torch.tensor([0.1, 1.3], dtype=torch.float64)
    mean, var = schedule.posterior(x0, xt, t)
    assert var == pytest.approx((1 - a_prev) / (1 - a_t) * beta, rel=1e-12)
    # Bayes on x_{t-1} ~ N(sqrt(a_prev) x0, 1 - a_prev) and x_t | x_{t-1} ~ N(sqrt(1 - beta) x_{t-1}, beta).
    precision = 1 / (1 - a_prev) + (1 - beta) / beta
    expected = (math.sqrt(a_prev) * x0 / (1 - a_prev) + math.sqrt(1 - beta) * xt / beta) / precision
    torch.testing.assert_close(mean, expected, rtol=1e-9, atol=1e-12)
    assert var == pytest.approx(1 / precision, rel=1e-9)
    # diffusers' ancestral step (the ddpm sampler), given the true noise, draws from this posterior.
    n = 20_000
    eps = ((xt - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)).float()
    sampler = make_sampler(schedule, SamplerConfig(name="ddpm", steps=1000))
    seen: list[int] = []

    def record(x: torch.Tensor, t_next: int) -> torch.Tensor:
        seen.append(t_next)
        return x

    start = xt.float().expand(n, -1).clone()
    draws = sampler.run(lambda x, s: eps.expand(len(x), -1), start, torch.Generator().manual_seed(1),
                        strength=(t + 1) / 1000, after_step=record)  # fmt: skip
    assert seen[0] == t - 1 and seen[-1] == -1  # the full schedule steps one timestep at a time
    # One step from x_t, drawn for many copies, against the posterior.
    first = sampler.scheduler()
    first.set_timesteps(1000)
    out = first.step(eps.expand(n, -1), t, start, generator=torch.Generator().manual_seed(1)).prev_sample.double()
    assert (out.mean(0) - mean).abs().max() < 5 * math.sqrt(var / n) + 1e-6
    assert (out.var(0) - var).abs().max() < 5 * var * math.sqrt(2 / n) + 1e-9
    assert draws.shape == (n, 2)


# ---------------------------------------------------------------- samplers


def gaussian_eps(scale: float, schedule: NoiseSchedule):
    """The exact eps(x_t, t) = E[eps | x_t] of data N(0, scale^2 I)."""
    abar = schedule.alphas_cumprod

    def eps_fn(x: torch.Tensor, t: int) -> torch.Tensor:
        a = float(abar[t])
        return math.sqrt(1 - a) * x / (a * scale**2 + 1 - a)

    return eps_fn


def test_ddim_with_eta_zero_is_deterministic_and_inverts() -> None:
    schedule = NoiseSchedule(clip=False)
    sampler = make_sampler(schedule, SamplerConfig(name="ddim", steps=100, eta=0.0))
    eps_fn = gaussian_eps(0.5, schedule)
    x0 = 0.5 * torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    noise = sampler.invert(eps_fn, x0)
    assert 0.8 < float(noise.std()) < 1.2  # the ODE carries data N(0, 0.25) to about N(0, 1)
    a = sampler.run(eps_fn, noise, torch.Generator().manual_seed(1))
    b = sampler.run(eps_fn, noise, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    relative = float((a - x0).norm() / x0.norm())
    assert relative < 0.05, relative
    noisy = make_sampler(schedule, SamplerConfig(name="ddim", steps=100, eta=1.0))
    assert not torch.equal(noisy.run(eps_fn, noise, torch.Generator().manual_seed(1)), a)


MIXTURE_MEANS = torch.tensor([[2.0, 0.0], [-1.0, 1.5], [-1.0, -1.5]])
MIXTURE_STD = 0.4


def mixture_samples(n: int, generator: torch.Generator) -> torch.Tensor:
    which = torch.randint(0, len(MIXTURE_MEANS), (n,), generator=generator)
    return MIXTURE_MEANS[which] + MIXTURE_STD * torch.randn(n, 2, generator=generator)


def mixture_score(x: torch.Tensor, abar: float) -> torch.Tensor:
    """grad log p_t(x) of the mixture after the forward process to level abar (exact)."""
    means, var = math.sqrt(abar) * MIXTURE_MEANS, abar * MIXTURE_STD**2 + 1 - abar
    diff = x[:, None, :] - means[None]  # (N, K, 2)
    weights = torch.softmax(-(diff**2).sum(-1) / (2 * var), dim=1)
    return -(weights[..., None] * diff).sum(1) / var


def test_langevin_with_the_exact_score_keeps_a_gaussian_mixture() -> None:
    generator = torch.Generator().manual_seed(0)
    start, reference = mixture_samples(1000, generator), mixture_samples(1000, generator)
    moved = langevin_steps(start, lambda x: mixture_score(x, 1.0), 300, generator, step_size=0.02)
    baseline = energy_distance(mixture_samples(1000, generator), reference)  # two samples of p
    assert (moved - start).norm(dim=1).mean() > 0.5  # the chain has moved about a mode's width, not stood still
    assert energy_distance(moved, reference) < 3 * baseline + 0.01
    # Without the noise term the same steps collapse onto the modes: the statistic sees it.
    collapsed = start.clone()
    for _ in range(300):
        collapsed = collapsed + 0.01 * mixture_score(collapsed, 1.0)
    assert energy_distance(collapsed, reference) > 3 * baseline + 0.01


def test_annealed_langevin_from_noise_reaches_the_mixture() -> None:
    schedule = NoiseSchedule(clip=False)
    abar = schedule.alphas_cumprod
    sampler = make_sampler(schedule, SamplerConfig(name="langevin", steps=100, langevin_steps=3, snr=0.15))

    def eps_fn(x: torch.Tensor, t: int) -> torch.Tensor:
        return -math.sqrt(1 - float(abar[t])) * mixture_score(x, float(abar[t]))

    generator = torch.Generator().manual_seed(0)
    reference = mixture_samples(1000, generator)
    noise = torch.randn(1000, 2, generator=generator)
    drawn = sampler.run(eps_fn, noise, generator)
    baseline = energy_distance(mixture_samples(1000, generator), reference)
    assert energy_distance(noise, reference) > 10 * baseline
    assert energy_distance(drawn, reference) < 3 * baseline + 0.02


def test_every_sampler_returns_images_of_the_right_shape_and_bad_names_fail() -> None:
    torch.manual_seed(0)
    model = DDPM(DDPMConfig(resolution=16, widths=[16, 32], attention=[False, True])).eval()
    assert set(SAMPLERS.names()) == {"ddpm", "ddim", "dpm-solver++", "langevin"}
    for name in SAMPLERS.names():
        model.configure(sampler=name, **{"sampler.steps": "4"})
        images = model.sample(2, torch.Generator().manual_seed(0))
        assert images.shape == (2, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
        sampler = model.sampler()
        assert len(sampler.timesteps(0.5)) < len(sampler.timesteps(1.0))
    with pytest.raises(ConfigError, match="unknown sampler 'euler': one of ddim, ddpm, dpm-solver\\+\\+, langevin"):
        model.configure(sampler="euler")
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        model.sampler().timesteps(1.5)


# ---------------------------------------------------------------- training on real faces


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, pair_facesets, one_thread_module) -> dict:
    """ddpm at 16 px trained 150 steps on the reference pair's faces (peopleDevTrain people), exported."""
    from swaplab.train.entry import build_config
    from swaplab.train.export import export_model
    from swaplab.train.loop import TrainingLoop
    from swaplab.train.recipe import recipe_for_config
    from swaplab.train.session import Distributed, resolve_device

    root = tmp_path_factory.mktemp("ddpm")
    words = ["model=ddpm-tiny", *TINY, f"data.train=[{','.join(map(str, pair_facesets))}]", "data.holdout=16",
             "trainer=ddpm-test", "trainer.steps=150", "trainer.batch_size=16", "trainer.lr=2e-3",
             "trainer.checkpoint_every=0", "preview_sampler.steps=10", f"run_dir={root / 'run'}"]  # fmt: skip
    cfg = build_config(words)
    loop = TrainingLoop(recipe_for_config(cfg), cfg, Distributed(), resolve_device("cpu"))
    loop.module.eval()
    before = loop.recipe.validate(0)
    loop.module.train()
    result = loop.run()
    export_model(root / "run", root / "model")
    return {"before": before, "after": result.metrics, "model": root / "model", "run": root / "run"}


@pytest.mark.slow
def test_training_moves_samples_towards_the_faces(trained: dict) -> None:
    before, after = trained["before"], trained["after"]
    assert after["val/loss"] < 0.5 * before["val/loss"], (before, after)
    # 16 held-out faces against 16 samples: a noisy statistic, so only a clear move is asserted (26 -> 21 here).
    assert after["val/fd_pixels"] < 0.9 * before["val/fd_pixels"], (before, after)
    # Quality on the evaluator's scale is logged as training goes on (dlib's features of the samples'
    # face chips against the held-out faces'): present at every validation, positive for samples.
    for values in (before, after):
        assert values["val/fd_features"] > 0 and np.isfinite(values["val/kid_features"]), values
    rows = [json.loads(line) for line in (trained["run"] / "metrics.jsonl").read_text().splitlines()]
    assert any("val/fd_features" in row for row in rows)
    assert (trained["run"] / "previews" / "latest.png").is_file()


def test_held_out_faces_are_at_feature_distance_zero_from_themselves(pair_facesets, tmp_path: Path) -> None:
    from swaplab.train.entry import build_config
    from swaplab.train.recipes.diffusion import DDPMRecipe
    from swaplab.train.session import Distributed, resolve_device

    words = ["model=ddpm-tiny", *TINY, f"data.train=[{','.join(map(str, pair_facesets))}]", "data.holdout=16",
             "trainer=ddpm-test", f"run_dir={tmp_path / 'run'}"]  # fmt: skip
    cfg = build_config(words)
    session = Session(cfg.trainer, Distributed(), resolve_device("cpu"), None, torch.contiguous_format, tmp_path)
    recipe = DDPMRecipe(cfg, session)
    held, _ = recipe.data.heldout()
    same = recipe.sample_distances(held, held)
    assert abs(same["val/fd_features"]) < 1e-3 and abs(same["val/fd_pixels"]) < 1e-3, same
    noise = recipe.sample_distances(torch.rand_like(held), held)
    assert noise["val/fd_features"] > 100 * max(same["val/fd_features"], 1e-6), noise
    off = build_config([*words, "validation_network="])
    assert "val/fd_features" not in DDPMRecipe(off, session).sample_distances(held, held)


@pytest.fixture(scope="module")
def swapper(trained: dict):
    from swaplab.models.swapper import load_swapper

    return load_swapper(trained["model"])


def held_out_faces(trained: dict, count: int = 4) -> torch.Tensor:
    from swaplab.train.image_data import ImageData
    from swaplab.train.run import read_run_config

    _, cfg = read_run_config(trained["run"])
    return ImageData.for_run(cfg).heldout(count)[0]


@pytest.mark.slow
def test_masking_keeps_the_target_outside_the_face(trained: dict, swapper) -> None:
    faces = held_out_faces(trained)
    swapper.configure(sampler="ddim", **{"sampler.steps": "10", "swap.strength": "0.8", "swap.masking": "true"})
    out = swapper.swap(faces, None, torch.Generator().manual_seed(0))
    # The target comes back wherever the feathered mask is 0, and on the feather it moves at most by
    # the mask's share (pixels are in [0, 1]): nearly nowhere outside the face.
    outside = out.mask.expand_as(faces) < 0.01
    assert outside.float().mean() > 0.2
    assert ((out.rgb - faces).abs() <= out.mask + 1e-5).all()
    swapper.configure(**{"swap.masking": "false"})
    free = swapper.swap(faces, None, torch.Generator().manual_seed(0))
    assert (free.rgb - faces).abs()[outside].max() > 0.05  # without masking the background is redrawn
    with pytest.raises(ConfigError, match=r"swap.strength \(t0\) must be in \(0, 1\]"):
        swapper.configure(**{"swap.strength": "0"})


@pytest.mark.slow
def test_a_swap_without_a_generator_repeats_and_swap_seed_changes_it(trained: dict, swapper) -> None:
    faces = held_out_faces(trained, 2)
    swapper.configure(sampler="ddpm", **{"sampler.steps": "5", "swap.strength": "0.6", "swap.seed": "0"})
    first, again = swapper.swap(faces).rgb, swapper.swap(faces).rgb
    torch.manual_seed(123)  # the global stream does not enter
    assert torch.equal(first, again) and torch.equal(first, swapper.swap(faces).rgb)
    swapper.configure(**{"swap.seed": "1"})
    assert (swapper.swap(faces).rgb - first).abs().max() > 1e-3


@pytest.mark.slow
def test_identity_guidance_lowers_the_distance_to_the_source(trained: dict, swapper, lfw: Path) -> None:
    from swaplab.models.simswap import TemplateChipIdentity

    faces = held_out_faces(trained, 2)
    network = TemplateChipIdentity(swapper.template, swapper.resolution, "dlib-resnet")
    other = held_out_faces(trained, 16)[-1:]
    with torch.no_grad():
        source = network(other)

    def distance(weight: str) -> float:
        swapper.configure(sampler="ddim", **{"sampler.steps": "10", "swap.strength": "0.6", "swap.guidance": weight,
                                              "swap.masking": "false"})  # fmt: skip
        out = swapper.swap(faces, source, torch.Generator().manual_seed(3)).rgb
        with torch.no_grad():
            return float((1 - torch.nn.functional.cosine_similarity(network(out), source)).mean())

    plain, guided = distance("0"), distance("100")
    assert guided < plain - 0.01, (plain, guided)
    swapper.configure(**{"swap.guidance": "100"})
    with pytest.raises(ValueError, match="give the source"):
        swapper.swap(faces, None)


@pytest.mark.slow
def test_structure_guidance_keeps_the_targets_segmentation(
    trained: dict, swapper, trained_segmenter, tmp_path: Path, monkeypatch
) -> None:
    from swaplab.models.diffusion_swapper import structure_distance
    from swaplab.models.installed import NetworkMissing
    from swaplab.models.segmentation import load_face_segmenter
    from swaplab.train.export import export_model

    faces = held_out_faces(trained, 4)
    swapper._segmenter = None
    monkeypatch.delenv("SWAPLAB_FACE_SEGMENTER", raising=False)
    monkeypatch.setenv("SWAPLAB_CACHE", str(tmp_path / "empty-cache"))
    swapper.configure(sampler="ddim", **{"sampler.steps": "10", "swap.strength": "0.8", "swap.structure": "50",
                                          "swap.guidance": "0", "swap.masking": "false"})  # fmt: skip
    with pytest.raises(NetworkMissing, match="swaplab nets build face-segmenter"):
        swapper.swap(faces, None, torch.Generator().manual_seed(1))
    run_dir, _ = trained_segmenter
    export_model(run_dir, tmp_path / "segmenter")
    monkeypatch.setenv("SWAPLAB_FACE_SEGMENTER", str(tmp_path / "segmenter" / "model.safetensors"))
    segmenter = load_face_segmenter()
    with torch.no_grad():
        target_parse = segmenter.segment(faces)

    def distance(weight: str) -> float:
        swapper.configure(**{"swap.structure": weight})
        out = swapper.swap(faces, None, torch.Generator().manual_seed(1)).rgb
        with torch.no_grad():
            return float(structure_distance(segmenter.segment(out), target_parse).mean())

    # Under inference mode, as the swap pipeline runs models: the guidance must still differentiate.
    with torch.inference_mode():
        plain, guided = distance("0"), distance("50")
    assert guided < 0.8 * plain, (plain, guided)


@pytest.mark.slow
def test_swap_through_the_pipeline_on_two_dev_test_people(trained: dict, lfw: Path, tmp_path: Path) -> None:
    from swaplab.config import apply_overrides
    from swaplab.data.lfw import read_people_list
    from swaplab.io.images import MediaError
    from swaplab.provenance import verify
    from swaplab.swap.pipeline import SwapConfig, swap

    test_people = set(read_people_list(lfw.parent / "peopleDevTest.txt"))
    target, source = lfw / "Donald_Rumsfeld" / "Donald_Rumsfeld_0001.jpg", lfw / "Gerhard_Schroeder"
    assert {"Donald_Rumsfeld", "Gerhard_Schroeder"} <= test_people
    options = "options={sampler: ddim, sampler.steps: 8, swap.strength: 0.5, swap.guidance: 20}"
    cfg = apply_overrides(SwapConfig(), [f"source=[{source / 'Gerhard_Schroeder_0001.jpg'}]", options])
    report = swap(trained["model"], target, tmp_path / "out.png", cfg, progress=False)
    assert report.faces_swapped == 1 and (tmp_path / "out.png").is_file()
    assert verify(tmp_path / "out.png").synthetic
    from PIL import Image

    Image.new("RGB", (200, 200), (128, 128, 128)).save(tmp_path / "blank.jpg")
    bad = apply_overrides(SwapConfig(), [f"source=[{tmp_path / 'blank.jpg'}]"])
    with pytest.raises(MediaError, match="no face found in the source photo"):
        swap(trained["model"], target, tmp_path / "out2.png", bad, progress=False)
    with pytest.raises(ConfigError, match="unknown sampler 'euler'.*ddim"):
        swap(
            trained["model"], target, tmp_path / "out3.png", apply_overrides(SwapConfig(), ["options={sampler: euler}"])
        )


def test_identity_conditioning_reaches_the_output_and_needs_a_source(pair_facesets, tmp_path: Path) -> None:
    from swaplab.models.card import read_card
    from swaplab.models.swapper import load_swapper
    from swaplab.train.entry import build_config
    from swaplab.train.export import export_model
    from swaplab.train.loop import train

    words = ["model=ddpm-tiny", *TINY, "model.condition=identity", f"data.train=[{pair_facesets[0]}]",
             "data.holdout=4", "trainer=ddpm-test", "trainer.steps=2", f"run_dir={tmp_path / 'run'}"]  # fmt: skip
    train(build_config(words))
    export_model(tmp_path / "run", tmp_path / "model")
    card, _ = read_card(tmp_path / "model")
    assert card["swapper"] == "diffusion" and card["identity"]["conditions_on"] == "dlib-resnet"
    swapper = load_swapper(tmp_path / "model")
    faces = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="give the source's dlib-resnet embedding"):
        swapper.swap(faces, None)
    swapper.configure(sampler="ddim", **{"sampler.steps": "4", "swap.strength": "1.0", "swap.cfg_scale": "3"})
    first, second = torch.randn(1, 128), torch.randn(1, 128)
    a = swapper.swap(faces, first, torch.Generator().manual_seed(0)).rgb
    b = swapper.swap(faces, second, torch.Generator().manual_seed(0)).rgb
    assert (a - b).abs().max() > 1e-4
    model = swapper.ddpm
    with torch.no_grad():
        x = torch.randn(2, 3, 16, 16)
        dropped = model(x, 10, first.expand(2, -1), null=torch.tensor([True, True]))
        torch.testing.assert_close(dropped, model(x, 10, None))  # the null condition is the unconditional path


def test_a_resumed_bf16_run_continues_exactly(pair_facesets, tmp_path: Path) -> None:
    """The step's t, eps and condition-dropout draws come from per-step streams: a run stopped at step 3 and
    resumed ends with the weights of an uninterrupted one, under bf16 autocast too."""
    from safetensors.torch import load_file

    from swaplab.cli import main as cli

    words = ("train", "model=ddpm-tiny", *TINY, "model.condition=identity", f"data.train=[{pair_facesets[1]}]",
             "data.holdout=4", "trainer=ddpm-test", "trainer.precision=bf16", "preview_sampler.steps=2")  # fmt: skip
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli([*words, f"run_dir={straight}"]) == 0
    assert cli([*words, f"run_dir={split}", "trainer.steps=3"]) == 0
    assert cli(["train", f"run_dir={split}", "trainer.steps=6"]) == 0
    ends = [load_file(run / "checkpoints" / "step-0000006" / "model.safetensors") for run in (straight, split)]
    assert ends[0].keys() == ends[1].keys() and all(torch.equal(ends[0][k], ends[1][k]) for k in ends[0])
    assert "bf16" in (straight / "config.yaml").read_text()
    # The weights' moving average is part of that exact state, and it is what the export ships.
    assert int(ends[0]["average.updates"]) == 6
    assert cli(["export", str(straight), "-o", str(tmp_path / "model")]) == 0
    exported = load_file(tmp_path / "model" / "model.safetensors")
    assert not any(k.startswith("average.") for k in exported)
    averaged = [k for k in exported if f"average.{k.replace('.', '__')}" in ends[0]]
    assert averaged and all(torch.equal(exported[k], ends[0][f"average.{k.replace('.', '__')}"]) for k in averaged)
    assert any(not torch.equal(exported[k], ends[0][k]) for k in averaged)


def test_latent_diffusion_trains_its_autoencoder_then_the_unet_resumes_and_swaps(pair_facesets, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from swaplab.cli import main as cli
    from swaplab.models.swapper import load_swapper

    words = ("train", "model=ldm-tiny", "model.resolution=16", "model.autoencoder.widths=[16,32]",
             "model.widths=[16,32]", f"data.train=[{pair_facesets[0]}]", "data.holdout=4", "trainer=ddpm-test",
             "autoencoder_steps=3", "preview_sampler.steps=2")  # fmt: skip
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli([*words, f"run_dir={straight}"]) == 0
    assert cli([*words, f"run_dir={split}", "trainer.steps=3"]) == 0  # stops as the autoencoder phase ends
    assert cli(["train", f"run_dir={split}", "trainer.steps=6"]) == 0
    ends = [load_file(run / "checkpoints" / "step-0000006" / "model.safetensors") for run in (straight, split)]
    assert all(torch.equal(ends[0][k], ends[1][k]) for k in ends[0])
    assert float(ends[0]["latent_scale"]) > 0  # set when the diffusion phase began
    phase = load_file(straight / "checkpoints" / "step-0000003" / "model.safetensors")
    changed = {k.split(".")[0] for k in phase if not torch.equal(phase[k], ends[0][k])}
    # The autoencoder stays frozen in the diffusion phase, and its weights are not averaged.
    assert changed == {"unet", "latent_scale", "average"}
    assert not any(k.startswith("average.autoencoder") for k in ends[0]) and int(ends[0]["average.updates"]) == 3
    assert cli(["export", str(straight), "-o", str(tmp_path / "model")]) == 0
    swapper = load_swapper(tmp_path / "model")
    assert swapper.ddpm.diffusion_shape == (4, 8, 8)
    faces = torch.rand(2, 3, 16, 16)
    swapper.configure(sampler="dpm-solver++", **{"sampler.steps": "4", "swap.strength": "0.5"})
    out = swapper.swap(faces, None, torch.Generator().manual_seed(0))
    # Codes are re-injected in the latent space; the target's own pixels come back outside the mask.
    assert out.rgb.shape == faces.shape and ((out.rgb - faces).abs() <= out.mask + 1e-5).all()
    assert (out.mask == 0).any()


@pytest.mark.slow
def test_per_identity_fine_tuning_starts_from_the_model_and_swaps_without_a_source(
    trained: dict, pair_facesets, tmp_path: Path
) -> None:
    from swaplab.models.card import read_card
    from swaplab.models.swapper import load_swapper
    from swaplab.train.entry import build_config
    from swaplab.train.export import export_model
    from swaplab.train.loop import TrainingLoop
    from swaplab.train.recipe import recipe_for_config
    from swaplab.train.session import Distributed, resolve_device

    source, prior = pair_facesets[1], pair_facesets[0]
    words = ["model=ddpm-tiny", *TINY, f"data.train=[{source}]", "data.holdout=4", f"prior=[{prior}]",
             f"init_from={trained['model']}", "trainer=ddpm-test", "trainer.steps=2", "preview_sampler.steps=2",
             f"run_dir={tmp_path / 'run'}"]  # fmt: skip
    cfg = build_config(words)
    loop = TrainingLoop(recipe_for_config(cfg), cfg, Distributed(), resolve_device("cpu"))
    loop.module.eval()
    start = loop.recipe.validate(0)["val/loss"]
    loop.module.train()
    # It starts from the trained model (about 0.06 there), not from scratch (about 1.1).
    assert start < 0.5 * trained["before"]["val/loss"], start
    loop.run()
    export_model(tmp_path / "run", tmp_path / "model")
    card, _ = read_card(tmp_path / "model")
    assert card["identity"]["conditions_on"] is None  # the person is in the weights
    swapper = load_swapper(tmp_path / "model")
    swapper.configure(**{"sampler.steps": "4"})
    assert swapper.swap(torch.rand(1, 3, 16, 16), None, torch.Generator().manual_seed(0)).rgb.shape == (1, 3, 16, 16)
    other = build_config([*words[:-1], "model.widths=[16,16]", f"run_dir={tmp_path / 'other'}"])
    with pytest.raises(ConfigError, match="differs in widths"):
        TrainingLoop(recipe_for_config(other), other, Distributed(), resolve_device("cpu"))


@pytest.mark.slow
def test_pruning_keeps_the_strongest_channels_fine_tunes_and_reloads(trained: dict, pair_facesets, tmp_path: Path):
    from swaplab.models.card import read_card
    from swaplab.models.diffusion_pruning import prune_unet
    from swaplab.models.swapper import load_swapper
    from swaplab.train.entry import build_config
    from swaplab.train.export import export_model
    from swaplab.train.loop import TrainingLoop
    from swaplab.train.recipe import recipe_for_config
    from swaplab.train.session import Distributed, resolve_device

    full = load_swapper(trained["model"]).ddpm
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = full(x, 300)
        pruned = DDPM(full.config)
        pruned.load_state_dict(full.state_dict())
        prune_unet(pruned.unet, 0.5)
        kept = (pruned(x, 300) - reference).square().mean()
        assert sum(p.numel() for p in pruned.parameters()) < 0.75 * sum(p.numel() for p in full.parameters())
    assert float(kept) < float(reference.square().mean())  # still a denoiser, not noise
    words = ["model=ddpm-tiny", *TINY, "model.unet_keep=0.5", f"data.train=[{','.join(map(str, pair_facesets))}]",
             "data.holdout=16", f"init_from={trained['model']}", "trainer=ddpm-test", "trainer.steps=3",
             "preview_sampler.steps=2", f"run_dir={tmp_path / 'run'}"]  # fmt: skip
    cfg = build_config(words)
    loop = TrainingLoop(recipe_for_config(cfg), cfg, Distributed(), resolve_device("cpu"))
    loop.module.eval()
    start = loop.recipe.validate(0)["val/loss"]
    assert start < trained["before"]["val/loss"], start  # the pruned model starts far above scratch
    loop.module.train()
    loop.run()
    export_model(tmp_path / "run", tmp_path / "model")
    swapper = load_swapper(tmp_path / "model")
    assert swapper.ddpm.config.unet_keep == 0.5
    # A pruned many-people model still swaps in anyone (init_from alone is not per-identity tuning).
    assert read_card(tmp_path / "model")[0]["identity"]["conditions_on"] == "dlib-resnet"
    assert swapper.swap(torch.rand(1, 3, 16, 16), swapper.identity_network()(torch.rand(1, 3, 16, 16)).detach(),
                        torch.Generator().manual_seed(0)).rgb.shape == (1, 3, 16, 16)  # fmt: skip


def test_a_study_trains_runs_that_differ_only_at_swap_time_once(pair_facesets, tmp_path: Path) -> None:
    """Sampler and swap settings are swap-time defaults: a sweep trains such runs once and gives the
    others the same weights under their own config, so their exports differ only in those settings."""
    from safetensors.torch import load_file

    from swaplab.study import parse_study, run_sweep
    from swaplab.train.export import export_model

    faces = ",".join(map(str, pair_facesets))
    study = parse_study(
        {
            "name": "share",
            "base": [
                "model=ddpm-tiny",
                *TINY,
                f"data.train=[{faces}]",
                "data.holdout=4",
                "trainer=ddpm-test",
                "trainer.steps=3",
                "preview_sampler.steps=2",
            ],  # fmt: skip
            "runs": {"baseline": [], "guided": ["swap.guidance=50", "sampler.steps=10"], "longer": ["trainer.steps=4"]},
            "eval": "off",
            "launcher": {"name": "local", "max_parallel": 1, "threads_per_run": 1},
        }
    )
    lines: list[str] = []
    result = run_sweep(study, tmp_path / "sweep", report=False, printer=lines.append, poll_s=0.05)
    assert result.exit_code == 0, lines
    assert result.launched == ["baseline", "longer"]  # "guided" trained nothing
    records = {r.name: r for r in result.runs}
    assert records["guided"].shares_training_of == "baseline" and records["guided"].final_step == 3
    assert records["longer"].shares_training_of is None
    assert any(line.startswith("guided: trains exactly as baseline") for line in lines)
    weights = {name: load_file(tmp_path / "sweep" / name / "checkpoints" / "step-0000003" / "model.safetensors")
               for name in ("baseline", "guided")}  # fmt: skip
    assert weights["baseline"].keys() == weights["guided"].keys()
    assert all(torch.equal(weights["baseline"][k], weights["guided"][k]) for k in weights["baseline"])
    cards = {}
    for name in ("baseline", "guided"):
        export_model(tmp_path / "sweep" / name, tmp_path / "models" / name)
        cards[name] = json.loads((tmp_path / "models" / name / "model.json").read_text())["diffusion"]
    assert (cards["baseline"]["swap"]["guidance"], cards["guided"]["swap"]["guidance"]) == (0.0, 50.0)
    assert cards["guided"]["sampler"]["steps"] == 10
    again = run_sweep(study, tmp_path / "sweep", report=False, printer=None, poll_s=0.05)
    assert again.launched == [] and again.exit_code == 0
