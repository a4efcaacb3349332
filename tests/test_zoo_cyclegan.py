"""CycleGAN: the cycle loss's closed forms, unpaired inverted-digit domains, and a short run after which the
cycle error has fallen and each translation has moved its images' intensity towards the other domain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from swaplab.config import ConfigError
from swaplab.io.images import read_image
from swaplab.losses.cycle import CycleConsistencyLoss
from swaplab.models.card import load_model
from swaplab.models.zoo.cyclegan import CycleGAN
from swaplab.sampling import sample
from swaplab.train.entry import build_config
from swaplab.train.export import export_model
from swaplab.train.image_data import ImageData
from swaplab.train.loop import train
from swaplab.train.recipe import Session
from swaplab.train.recipes.zoo_cyclegan import CycleGANRecipe, unpaired_domains
from swaplab.train.session import Distributed

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_cycle_loss_is_zero_for_inverse_maps_and_matches_a_closed_form() -> None:
    torch.manual_seed(0)
    a, b = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    loss = CycleConsistencyLoss()
    assert float(loss(lambda x: x, lambda x: x, a, b)) == 0.0
    invert = lambda x: 1.0 - x  # noqa: E731 - its own inverse
    assert float(loss(invert, invert, a, b)) == pytest.approx(0.0, abs=1e-7)
    # G halves, F is the identity: |a/2 - a| + |b/2 - b| per pixel
    halve = lambda x: 0.5 * x  # noqa: E731
    expected = 0.5 * (a.mean() + b.mean())
    assert float(loss(halve, lambda x: x, a, b)) == pytest.approx(float(expected), rel=1e-6)
    # translations passed in are used instead of recomputed: with G(a) := a and F(b) := b only |G(b) - b| is left
    given = loss(halve, lambda x: x, a, b, fake_b=a, fake_a=b)
    assert float(given) == pytest.approx(0.5 * float(b.mean()), rel=1e-6)


def test_inverted_digit_domains_are_disjoint_halves() -> None:
    cfg = build_config(["model=cyclegan-digits"])
    data = ImageData.for_run(cfg)
    domain_a, domain_b = unpaired_domains(cfg, data)
    rows = lambda images: [bytes(i.numpy().tobytes()) for i in images]  # noqa: E731
    # together the two halves are the training images, each once
    assert sorted(rows(domain_a.images) + rows(domain_b.images)) == sorted(rows(data.images))
    assert abs(len(domain_a.images) - len(domain_b.images)) <= 1
    a, b = domain_a.batch(0, 256), domain_b.batch(0, 256)
    assert float(a.mean()) == pytest.approx(1.0 - float(b.mean()), abs=0.05)  # digits ~0.3, inverted ~0.7
    sides = lambda x: float(x[..., :, [0, -1]].mean())  # noqa: E731 - the left and right columns: background
    assert sides(a) < 0.05 < 0.95 < sides(b)


def test_facesets_for_b_need_domain_b_data_b() -> None:
    with pytest.raises(ConfigError, match="domain_b=data_b"):
        build_config(["model=cyclegan-digits", "data_b={source: faceset, train: [/nowhere]}"])


def background_mean(images: torch.Tensor) -> float:
    """The mean of the left and right columns, background in digits (0) and inverted digits (1)."""
    return float(images[..., :, [0, -1]].mean())


@pytest.mark.slow  # 5-11 s on the shared 2-core machine
def test_a_short_digits_run_cycles_back_and_translates_towards_the_other_domain(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = build_config(["model=cyclegan-digits", "trainer=zoo-test", "trainer.steps=20", f"run_dir={run_dir}"])
    session = Session(cfg.trainer, Distributed(), torch.device("cpu"), None, torch.contiguous_format, tmp_path)
    recipe = CycleGANRecipe(cfg, session)
    torch.manual_seed(cfg.trainer.seed)  # the loop's initialisation
    recipe.module = recipe.build().eval()
    before = recipe.validate(0)
    untrained = recipe.model

    result = train(cfg)
    assert result.skipped_steps == 0
    after = result.metrics
    # measured: 0.171 -> 0.066 (A), 0.198 -> 0.066 (B); FD(G(A), B) 6.33 -> 3.50
    assert after["val/reconstruction_mse"] < 0.5 * before["val/reconstruction_mse"]
    assert after["val/cycle_b_mse"] < 0.5 * before["val/cycle_b_mse"]
    assert after["val/fd_a_to_b"] < 0.7 * before["val/fd_a_to_b"]

    export_model(run_dir, tmp_path / "model")
    trained = load_model(tmp_path / "model")
    assert isinstance(trained, CycleGAN)
    held_a, held_b = recipe.domain_a.heldout(), recipe.domain_b.heldout()
    with torch.no_grad():
        gaps = {}
        for name, model in (("untrained", untrained), ("trained", trained)):
            to_b, to_a = model.translate(held_a, "a2b"), model.translate(held_b, "b2a")
            gaps[name] = (abs(float(to_b.mean() - held_b.mean())), abs(float(to_a.mean() - held_a.mean())))
            if name == "trained":  # the inverted background: G brightens A's (measured 0.97), F darkens B's (0.01)
                assert background_mean(to_b) > 0.8, background_mean(to_b)
                assert background_mean(to_a) < 0.2, background_mean(to_a)
    # mean intensity gap to the target domain, measured: G 0.219 -> 0.013, F 0.140 -> 0.023
    assert gaps["trained"][0] < 0.5 * gaps["untrained"][0], gaps
    assert gaps["trained"][1] < 0.5 * gaps["untrained"][1], gaps

    # `swaplab sample --kind reconstructions`: 8 originals beside their cycles, one 64 px tile each
    grid = sample(run_dir, tmp_path / "cycles.png", kind="reconstructions", n=8)
    picture = read_image(grid)[0]
    assert picture.shape[:2] == (64, 16 * 64)
    original, cycled = picture[:, :64].astype(float), picture[:, 64:128].astype(float)
    first = held_a[0, 0].numpy() * 255.0
    # the first tile is the held-out digit itself (up to the invisible provenance mark)
    assert np.abs(original[::8, ::8, 0] - first).max() <= 12.0
    assert np.abs(cycled[::8, ::8, 0] - first).mean() < 0.25 * 255.0
