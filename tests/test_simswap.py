"""The SimSwap-style generator and its config; identity of aligned crops; one-shot sampling on real LFW faces;
a few real G and D steps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from swaplab.config import ConfigError, apply_overrides, config_group, from_dict, to_dict
from swaplab.data.lfw import SplitError, person_of, read_people_list
from swaplab.facesets.format import Faceset
from swaplab.losses import SimSwapLossConfig, SimSwapObjective
from swaplab.models import (
    MODELS,
    SimSwapConfig,
    SimSwapGenerator,
    TemplateChipIdentity,
    create_discriminator,
    create_model,
)
from swaplab.models.parts import IdentityInjectionBlock
from swaplab.models.parts.simswap import adaptive_instance_norm
from swaplab.train.oneshot_data import OneShotPairs, eval_pairs, train_pairs
from swaplab.train.recipes.oneshot_config import OneShotTrainConfig

SMALL = dict(dims=8, max_dims=32, n_blocks=2)
TRAIN_PEOPLE = ("George_W_Bush", "Colin_Powell", "Tony_Blair")  # all in peopleDevTrain.txt
TEST_PERSON = "Donald_Rumsfeld"  # in peopleDevTest.txt


pytestmark = pytest.mark.usefixtures("one_thread")


def small(resolution: int = 64, **overrides) -> SimSwapConfig:
    return dataclasses.replace(SimSwapConfig(resolution=resolution, **SMALL), **overrides)


# ---------------------------------------------------------------- the generator


@pytest.mark.parametrize("resolution", [64, 128])
def test_generator_and_parts_shapes(resolution: int) -> None:
    torch.manual_seed(0)
    generator = create_model(small(resolution))
    assert isinstance(generator, SimSwapGenerator) and MODELS.get("simswap") is SimSwapGenerator
    target = torch.rand(2, 3, resolution, resolution)
    features = generator.encoder(target)
    assert features.shape == (2, 32, resolution // 8, resolution // 8)
    assert generator.bottleneck(features, torch.randn(2, 128)).shape == features.shape
    assert sum(isinstance(m, IdentityInjectionBlock) for m in generator.modules()) == 2
    swapped = generator(target, torch.randn(2, 128))
    assert swapped.shape == (2, 3, resolution, resolution)
    assert 0.0 <= swapped.min() and swapped.max() <= 1.0
    with pytest.raises(ValueError, match=r"identity must be \(N, 128\)"):
        generator(target, torch.randn(2, 64))
    with pytest.raises(ValueError, match="expects targets of shape"):
        generator(torch.rand(2, 3, 32, 32), torch.randn(2, 128))


def test_identity_injection_changes_the_output_and_pass_through_ignores_it() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 3, 64, 64)
    first, second = torch.randn(2, 128), torch.randn(2, 128)
    generator = create_model(small()).eval()
    with torch.no_grad():
        a, b = generator(target, first), generator(target, second)
        assert (a - b).abs().max() > 1e-3  # far above float noise: the identity reaches the pixels
        features = generator.encoder(target)
        injected = [generator.bottleneck(features, identity) for identity in (first, second)]
        assert (injected[0] - injected[1]).norm() > 0.05 * injected[0].norm()
        # Only the identity's direction counts (it is L2-normalised).
        torch.testing.assert_close(generator(target, 3.0 * first), a, atol=1e-5, rtol=0)
    ablated = create_model(apply_overrides(small(), ["parts.bottleneck=none"]))
    for mode in (True, False):
        ablated.train(mode)
        with torch.no_grad():
            assert torch.equal(ablated(target, first), ablated(target, second))


def test_adaptive_instance_norm_is_normalise_then_scale_and_shift() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5) * 3.0 + 1.0
    scale, shift = torch.randn(2, 4, 1, 1), torch.randn(2, 4, 1, 1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = (x.var(dim=(2, 3), keepdim=True, unbiased=False) + 1e-8).sqrt()
    expected = (x - mean) / std * (1.0 + scale) + shift
    torch.testing.assert_close(adaptive_instance_norm(x, scale, shift), expected, atol=1e-5, rtol=1e-5)
    zero = torch.zeros(2, 4, 1, 1)
    normalised = adaptive_instance_norm(x, zero, zero)  # a zero style leaves a plain instance norm
    torch.testing.assert_close(normalised.mean(dim=(2, 3)), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalised.std(dim=(2, 3), unbiased=False), torch.ones(2, 4), atol=1e-4, rtol=0)


def test_presets_and_config_overrides_through_the_training_config() -> None:
    presets = config_group("model")
    paper, mid, tiny = (presets.create(n) for n in ("simswap-paper", "simswap-128", "simswap-tiny"))
    assert (paper.resolution, paper.dims, paper.max_dims, paper.n_down, paper.n_blocks) == (224, 64, 512, 3, 9)
    assert (mid.resolution, mid.dims, mid.n_blocks) == (128, 64, 9)
    assert tiny.resolution == 64 and tiny.dims < paper.dims
    cfg = apply_overrides(
        OneShotTrainConfig(),
        ["model=simswap-tiny", "model.parts.decoder=pca", "model.discriminator.scales=3", "loss=simswap"],
    )
    assert isinstance(cfg.model, SimSwapConfig) and isinstance(cfg.loss, SimSwapLossConfig)
    assert (cfg.model.parts.decoder, cfg.model.discriminator.scales, cfg.model.resolution) == ("pca", 3, 64)
    assert to_dict(from_dict(OneShotTrainConfig, to_dict(cfg))) == to_dict(cfg)  # a saved run config loads back
    with pytest.raises(ConfigError, match="divisible"):
        SimSwapConfig(resolution=100)


def test_discriminator_is_built_from_the_config() -> None:
    multiscale = create_discriminator(
        small(discriminator=dataclasses.replace(small().discriminator, dims=8, n_layers=2))
    )
    out = multiscale(torch.rand(1, 3, 64, 64))
    assert len(out.logits) == 2 and all(len(head) == 3 for head in out.features)


# ---------------------------------------------------------------- real faces


@pytest.fixture(scope="module")
def facesets(tmp_path_factory: pytest.TempPathFactory, lfw: Path) -> dict[str, Path]:
    """Aligned 128 px crops: 3 images each of 3 train-split people, 2 of one test-split person."""
    from swaplab.facesets.extract import ExtractConfig, extract

    root = tmp_path_factory.mktemp("oneshot")
    cfg = ExtractConfig(size=128)
    cfg.faces.max_faces = 1
    train_images = [p for person in TRAIN_PEOPLE for p in sorted((lfw / person).glob("*.jpg"))[:3]]
    summary = extract(train_images, root / "train", cfg, progress=False)
    assert summary.faces == 9, summary.lines()
    summary = extract(sorted((lfw / TEST_PERSON).glob("*.jpg"))[:2], root / "test", cfg, progress=False)
    assert summary.faces == 2, summary.lines()
    return {"train": root / "train", "test": root / "test", "lists": lfw.parent}


def test_people_lists_are_the_official_disjoint_split(facesets: dict[str, Path], tmp_path: Path) -> None:
    train = read_people_list(facesets["lists"] / "peopleDevTrain.txt")
    test = read_people_list(facesets["lists"] / "peopleDevTest.txt")
    assert (len(train), len(test)) == (4038, 1711) and not set(train) & set(test)
    assert set(TRAIN_PEOPLE) <= set(train) and TEST_PERSON in test
    broken = tmp_path / "people.txt"
    broken.write_text("3\nA\t1\nB\t2\n")
    with pytest.raises(ValueError, match="announces 3 people but lists 2"):
        read_people_list(broken)


def test_sampler_refuses_people_of_the_other_split(facesets: dict[str, Path]) -> None:
    lists = facesets["lists"]
    pairs = train_pairs(facesets["train"], 64, lists_dir=lists)
    assert pairs.people == sorted(TRAIN_PEOPLE) and len(pairs) == 9
    with pytest.raises(SplitError, match=rf"1 people of peopleDevTest\.txt, e\.g\. {TEST_PERSON}"):
        train_pairs([facesets["train"], facesets["test"]], 64, lists_dir=lists)
    with pytest.raises(SplitError, match="George_W_Bush"):
        eval_pairs(facesets["train"], 64, lists_dir=lists)
    with pytest.raises(ValueError, match="at least 2 people"):
        eval_pairs(facesets["test"], 64, lists_dir=lists)  # one person cannot make a swap pair
    same_only = eval_pairs(facesets["test"], 64, lists_dir=lists, same_identity_ratio=1.0)
    batch = same_only.batch(0, batch_size=4)
    assert batch.same_identity.all() and batch.target.shape == (4, 3, 64, 64)


def test_pairs_have_the_right_people_and_identities(facesets: dict[str, Path]) -> None:
    pairs = train_pairs(facesets["train"], 64, lists_dir=facesets["lists"], seed=3)
    faceset = Faceset(facesets["train"])
    person = {r.id: person_of(r.source) for r in faceset.records}
    stored = {r.id: r.identity_array for r in faceset.records}
    seen_same = seen_different = 0
    for step in range(20):
        batch = pairs.batch(step, batch_size=8)
        assert batch.target.dtype == torch.float32 and 0.0 <= batch.target.min() and batch.target.max() <= 1.0
        for k, (t, s) in enumerate(zip(batch.target_ids, batch.source_ids)):
            np.testing.assert_array_equal(batch.source_identity[k].numpy(), stored[s])
            np.testing.assert_array_equal(batch.target_identity[k].numpy(), stored[t])
            if batch.same_identity[k]:
                assert person[t] == person[s] and t != s  # another image of the same person
                seen_same += 1
            else:
                assert person[t] != person[s]
                seen_different += 1
    assert seen_same and seen_different


def test_same_identity_ratio_over_many_draws(facesets: dict[str, Path]) -> None:
    pairs = OneShotPairs(facesets["train"], 64, lists_dir=facesets["lists"], same_identity_ratio=0.3, seed=1)
    flags = torch.cat([pairs.batch(step, batch_size=8).same_identity for step in range(300)])
    assert abs(flags.float().mean().item() - 0.3) < 0.03  # 2400 draws: 3 sigma is about 0.028
    default = train_pairs(facesets["train"], 64, lists_dir=facesets["lists"])
    assert default.same_identity_ratio == 0.5  # SimSwap's released schedule: every other step
    alternate = train_pairs(facesets["train"], 64, lists_dir=facesets["lists"], schedule="alternate")
    assert alternate.batch(0, batch_size=8).same_identity.all()
    assert not alternate.batch(1, batch_size=8).same_identity.any()


def test_sampling_is_deterministic_and_split_across_ranks(facesets: dict[str, Path]) -> None:
    def make(seed: int) -> OneShotPairs:
        return train_pairs(facesets["train"], 64, lists_dir=facesets["lists"], seed=seed, cache=seed != 0)

    first, again, other = make(0), make(5), make(5)
    a, b = again.batch(7, batch_size=8), other.batch(7, batch_size=8)
    assert a.target_ids == b.target_ids and a.source_ids == b.source_ids and torch.equal(a.target, b.target)
    assert torch.equal(a.same_identity, b.same_identity)
    assert again.batch(8, batch_size=8).target_ids != a.target_ids
    assert (first.batch(7, batch_size=8).target_ids, first.batch(7, batch_size=8).source_ids) != (
        a.target_ids,
        a.source_ids,
    )
    # Two ranks of 4 see exactly one process's batch of 8; cached and decoded crops are the same.
    ranks = [again.batch(7, batch_size=4, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].target_ids + ranks[1].target_ids == a.target_ids
    assert ranks[0].source_ids + ranks[1].source_ids == a.source_ids
    decoded = train_pairs(facesets["train"], 64, lists_dir=facesets["lists"], seed=5, cache=False).batch(
        7, batch_size=8
    )
    assert torch.equal(decoded.source, a.source)


def test_template_chip_identity_embeds_aligned_crops_like_dlib(facesets: dict[str, Path]) -> None:
    faceset = Faceset(facesets["train"])
    crops = np.stack([faceset.image(i) for i in range(len(faceset))])
    faces = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0).requires_grad_(True)
    encoder = TemplateChipIdentity(faceset.header.template, faceset.size)
    embeddings = encoder(faces)
    distances = (embeddings.detach() - torch.from_numpy(faceset.identities())).norm(dim=1)
    # The fixed template warp stays well inside dlib's same-person threshold (0.6) of the stored
    # descriptors, which dlib computed from per-face landmarks on the full photos.
    assert distances.max() < 0.45, distances
    embeddings.sum().backward()
    assert faces.grad.abs().sum() > 0
    assert list(p for p in encoder.parameters() if p.requires_grad) == []


def test_a_few_gan_steps_on_real_faces_reduce_reconstruction(facesets: dict[str, Path]) -> None:
    torch.manual_seed(0)
    config = config_group("model").create("simswap-tiny")
    pairs = train_pairs(facesets["train"], config.resolution, lists_dir=facesets["lists"])
    generator, discriminator = create_model(config), create_discriminator(config)
    identity = TemplateChipIdentity(pairs.template, config.resolution)
    objective = SimSwapObjective(SimSwapLossConfig(), identity)
    opt_g = torch.optim.Adam(generator.parameters(), lr=4e-4, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=4e-4, betas=(0.0, 0.99))
    probe = OneShotPairs(facesets["train"], config.resolution, lists_dir=facesets["lists"], same_identity_ratio=1.0)
    fixed = probe.batch(0, batch_size=8)

    def reconstruction() -> float:
        with torch.no_grad():
            return float((generator(fixed.target, fixed.source_identity) - fixed.target).abs().mean())

    before = reconstruction()
    for step in range(12):
        batch = pairs.batch(step, batch_size=8)
        swapped = generator(batch.target, batch.source_identity)
        with torch.no_grad():
            real_output = discriminator(batch.target)
        g_terms = objective.generator_loss(
            swapped, batch.target, batch.source_identity, batch.same_identity, discriminator(swapped), real_output
        )
        opt_g.zero_grad(set_to_none=True)
        g_terms.total.backward()
        opt_g.step()
        d_terms = objective.discriminator_loss(discriminator, batch.target, swapped)
        opt_d.zero_grad(set_to_none=True)
        d_terms.total.backward()
        opt_d.step()
        values = [g_terms.total, d_terms.total, *g_terms.components.values(), *d_terms.components.values()]
        assert all(torch.isfinite(v) for v in values), (step, g_terms.components, d_terms.components)
    after = reconstruction()
    assert after < 0.8 * before, (before, after)
