"""The StyleGAN-style generator: demodulation's unit variance, style mixing, the light variant's size, and a
short digits run whose samples move towards the held-out digits (pixel Frechet distance)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from swaplab.config import config_group
from swaplab.models.zoo.stylegan import ModulatedConv2d, StyleGANGenerator, parameter_count
from swaplab.train.entry import build_config
from swaplab.train.loop import train
from swaplab.train.recipe import Session
from swaplab.train.recipes.zoo_stylegan import StyleGANRecipe
from swaplab.train.session import Distributed

pytestmark = pytest.mark.usefixtures("one_thread")


def interior_channel_variance(layer: ModulatedConv2d, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(N, out): the per-sample, per-channel variance of the layer's output away from the zero-padded border."""
    with torch.no_grad():
        y = layer(x, w)[..., 2:-2, 2:-2]
    return y.flatten(2).var(2)


@pytest.mark.parametrize("separable", [False, True])
def test_demodulation_keeps_unit_variance_per_output_channel(separable: bool) -> None:
    torch.manual_seed(0)
    layer = ModulatedConv2d(16, 24, 3, latent=8, separable=separable, demodulate=True)
    with torch.no_grad():
        layer.affine.weight.mul_(3.0)  # styles spread well away from 1, so modulation alone would not keep it
    x, w = torch.randn(4, 16, 48, 48), torch.randn(4, 8)
    variance = interior_channel_variance(layer, x, w)
    # 44 x 44 correlated positions per estimate: its spread is a few percent
    assert (variance - 1.0).abs().max() < 0.15, variance
    layer.demodulate = False
    modulated_only = interior_channel_variance(layer, x, w)
    assert (modulated_only - 1.0).abs().max() > 1.0, modulated_only


def generator(name: str = "stylegan-digits") -> StyleGANGenerator:
    torch.manual_seed(0)
    return StyleGANGenerator(config_group("model").create(name)).eval()


def test_style_mixing_changes_the_image_only_when_the_second_style_differs() -> None:
    model = generator()
    w1, w2 = model.mapping(torch.randn(3, 64)), model.mapping(torch.randn(3, 64))
    noise = model.noise_inputs(3, torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model.synthesis(model.broadcast(w1), noise)
        for cutoff in range(1, model.num_styles):
            same = model.synthesis(model.mix_styles(w1, w1, cutoff), noise)
            mixed = model.synthesis(model.mix_styles(w1, w2, cutoff), noise)
            assert torch.equal(same, plain)
            assert (mixed - plain).abs().mean() > 1e-3, cutoff


def test_training_styles_mix_a_second_w_from_a_cutoff_on() -> None:
    model = generator().train()
    z = torch.randn(5, 64)
    w = model.mapping(z)
    mixed = model.styles_for(z, torch.Generator().manual_seed(3), mixing_prob=1.0)
    from_first = (mixed - w[:, None]).abs().amax((0, 2)) == 0  # per layer: the first w's style?
    cutoff = int(from_first.sum())
    assert 1 <= cutoff < model.num_styles and bool(from_first[:cutoff].all()) and not bool(from_first[cutoff:].any())
    never = model.styles_for(z, torch.Generator().manual_seed(3), mixing_prob=0.0)
    assert torch.equal(never, model.broadcast(w))


def test_the_light_variant_has_under_half_the_parameters() -> None:
    for size in ("digits", "faces"):
        full, light = (
            parameter_count(generator(f"stylegan-{size}")),
            parameter_count(generator(f"stylegan-light-{size}")),
        )
        assert light < 0.5 * full, (size, light, full)


@pytest.mark.slow  # 5-11 s on the shared 2-core machine
def test_a_short_digits_run_brings_samples_closer_to_held_out_digits(tmp_path: Path) -> None:
    steps = 40
    cfg = build_config(["model=stylegan-digits", "trainer=zoo-test", f"trainer.steps={steps}", f"run_dir={tmp_path}"])
    # The untrained generator, initialised as the loop initialises it (seeded, then built)
    session = Session(cfg.trainer, Distributed(), torch.device("cpu"), None, torch.contiguous_format, tmp_path)
    untrained = StyleGANRecipe(cfg, session)
    torch.manual_seed(cfg.trainer.seed)
    untrained.module = untrained.build().eval()
    before = untrained.validate(0)["val/fd_pixels"]

    result = train(cfg)
    after = result.metrics["val/fd_pixels"]
    assert result.skipped_steps == 0
    assert after < 0.5 * before, (before, after)  # measured: 9.96 -> 2.79

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps_rows = [r for r in rows if "d_loss" in r]
    assert len(steps_rows) == steps
    # R1 exactly on the lazy steps (every r1_every-th, counted from 0)
    assert [r["step"] - 1 for r in steps_rows if "d_loss/r1" in r] == list(range(0, steps, cfg.r1_every))
    # A balanced game: over the last steps D is better than chance (2 ln 2 for D(x) = 0) without overpowering G
    last = steps_rows[-10:]
    d_adversarial = sum(r["d_loss/real"] + r["d_loss/fake"] for r in last) / len(last)
    g_loss = sum(r["loss"] for r in last) / len(last)
    assert 0.3 < d_adversarial < 2 * math.log(2), d_adversarial
    assert math.log(2) / 2 < g_loss < 3.0, g_loss
