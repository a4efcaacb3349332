"""GAN losses against hand-computed values; feature-matching layer selection; the discriminators' outputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from swaplab.config import apply_overrides, config_group
from swaplab.losses import (
    LOSSES,
    AdversarialLoss,
    FeatureMatchingLoss,
    GradientPenalty,
    SimSwapLossConfig,
    SimSwapObjective,
    select_layers,
)
from swaplab.models.parts import DISCRIMINATORS, DiscriminatorOutput

REAL = torch.tensor([2.0, -0.5])
FAKE = torch.tensor([0.5, -2.0])


pytestmark = pytest.mark.usefixtures("one_thread")


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# (D's loss on real, D's loss on fake, G's loss), by hand from the formulas and REAL/FAKE above.
EXPECTED = {
    "hinge": ((0.0 + 1.5) / 2, (1.5 + 0.0) / 2, -(0.5 - 2.0) / 2),
    "nonsaturating": (
        (softplus(-2.0) + softplus(0.5)) / 2,
        (softplus(0.5) + softplus(-2.0)) / 2,
        (softplus(-0.5) + softplus(2.0)) / 2,
    ),
    "lsgan": ((1.0 + 2.25) / 2, (0.25 + 4.0) / 2, (0.25 + 9.0) / 2),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_adversarial_losses_match_hand_computed_values(kind: str) -> None:
    loss = LOSSES.create(kind)
    real_term, fake_term = loss.discriminator_terms(REAL, FAKE)
    d_real, d_fake, g = EXPECTED[kind]
    assert float(real_term) == pytest.approx(d_real, abs=1e-6)
    assert float(fake_term) == pytest.approx(d_fake, abs=1e-6)
    assert float(loss.discriminator_loss(REAL, FAKE)) == pytest.approx(d_real + d_fake, abs=1e-6)
    assert float(loss.generator_loss(FAKE)) == pytest.approx(g, abs=1e-6)
    assert float(loss(FAKE)) == pytest.approx(g, abs=1e-6)  # forward without real = generator side
    assert float(loss(FAKE, REAL)) == pytest.approx(d_real + d_fake, abs=1e-6)


def test_adversarial_losses_average_over_heads_and_read_discriminator_outputs() -> None:
    loss = AdversarialLoss("hinge")
    heads = DiscriminatorOutput(features=[[], []], logits=[FAKE.view(1, 1, 1, 2), torch.full((1, 1, 3, 3), 3.0)])
    # Head 1: -mean(0.5, -2) = 0.75; head 2: -3; mean over heads: -1.125.
    assert float(loss.generator_loss(heads)) == pytest.approx(-1.125)
    assert float(loss.generator_loss(heads.logits)) == pytest.approx(-1.125)
    with pytest.raises(ValueError, match="hinge, nonsaturating, lsgan, minimax, wasserstein"):
        AdversarialLoss("relativistic")


class LinearCritic(nn.Module):
    """D(x) = <w, x> + b as one logit per image: its input gradient is w everywhere."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(torch.tensor(0.3))

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        logits = (x * self.weight).flatten(1).sum(1) + self.bias
        return DiscriminatorOutput([[]], [logits.view(-1, 1, 1, 1)])


def test_gradient_penalty_of_a_linear_discriminator_is_known_analytically() -> None:
    torch.manual_seed(0)
    weight = torch.randn(3, 4, 4)
    weight = weight / weight.norm() * 3.0  # ||grad_x D|| = 3 at every input
    critic = LinearCritic(weight)
    real, fake = torch.rand(5, 3, 4, 4), torch.rand(5, 3, 4, 4)
    wgan = GradientPenalty("interpolate")(critic, real, fake)
    assert float(wgan.detach()) == pytest.approx((3.0 - 1.0) ** 2, rel=1e-5)
    r1 = GradientPenalty("r1")(critic, real)
    assert float(r1.detach()) == pytest.approx(9.0, rel=1e-5)
    # The penalty trains D: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||.
    wgan.backward()
    torch.testing.assert_close(critic.weight.grad, 2.0 * (3.0 - 1.0) * weight / 3.0, rtol=1e-4, atol=1e-6)


class QuadraticCritic(nn.Module):
    """D(x) = |x|^2 / 2 per image: its input gradient is x itself."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [(x.square().flatten(1).sum(1) / 2).view(-1, 1, 1, 1)]


def test_gradient_penalty_is_taken_at_the_interpolates() -> None:
    real = torch.tensor([[[[3.0, 0.0]]], [[[0.0, 0.0]]]])  # (2, 1, 1, 2)
    fake = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 4.0]]]])
    alpha = torch.tensor([0.5, 0.25])
    # Interpolates: (2, 0) with norm 2, and (0, 3) with norm 3: mean of (2 - 1)^2 and (3 - 1)^2.
    penalty = GradientPenalty("interpolate")(QuadraticCritic(), real, fake, alpha=alpha)
    assert float(penalty.detach()) == pytest.approx((1.0 + 4.0) / 2)
    assert float(GradientPenalty("r1")(QuadraticCritic(), real).detach()) == pytest.approx((9.0 + 0.0) / 2)
    with pytest.raises(ValueError, match="needs fake images"):
        GradientPenalty("interpolate")(QuadraticCritic(), real)


def labelled_output(values_per_head: list[list[float]], requires_grad: bool = False) -> DiscriminatorOutput:
    """A fake discriminator output whose feature map j of head h is filled with values_per_head[h][j]."""
    features = [[torch.full((1, 2, 3, 3), v, requires_grad=requires_grad) for v in head] for head in values_per_head]
    return DiscriminatorOutput(features, [torch.zeros(1, 1, 2, 2) for _ in values_per_head])


def test_feature_matching_selects_the_right_layers() -> None:
    values = [[1.0, 2.0, 4.0, 8.0, 16.0], [32.0, 64.0, 128.0]]  # two heads of different depths
    fake = labelled_output(values, requires_grad=True)
    real = labelled_output([[0.0] * 5, [0.0] * 3])
    expected = {
        ("weak", 2): ((8 + 16) / 2 + (64 + 128) / 2) / 2,
        ("weak", 1): (16 + 128) / 2,
        ("full", 2): ((1 + 2 + 4 + 8 + 16) / 5 + (32 + 64 + 128) / 3) / 2,
        ("early", 2): ((1 + 2) / 2 + (32 + 64) / 2) / 2,
        ("early", 4): ((1 + 2 + 4 + 8) / 4 + (32 + 64 + 128) / 3) / 2,  # k beyond a head's depth: all of it
    }
    for (layers, k), value in expected.items():
        assert float(FeatureMatchingLoss(layers, k)(fake, real).detach()) == pytest.approx(value), (layers, k)
    l2 = FeatureMatchingLoss("weak", 2, norm="l2")(fake, real)
    assert float(l2.detach()) == pytest.approx(((64 + 256) / 2 + (64**2 + 128**2) / 2) / 2)
    maps = fake.features[0]
    assert [id(m) for m in select_layers(maps, "weak", 2)] == [id(maps[3]), id(maps[4])]
    assert [id(m) for m in select_layers(maps, "early", 2)] == [id(maps[0]), id(maps[1])]
    assert [id(m) for m in select_layers(maps, "full", 2)] == [id(m) for m in maps]


def test_feature_matching_moves_only_the_fake_features() -> None:
    fake = labelled_output([[1.0, 2.0]], requires_grad=True)
    real = labelled_output([[0.5, 0.5]], requires_grad=True)
    FeatureMatchingLoss("weak", 1)(fake, real).backward()
    assert fake.features[0][0].grad is None or fake.features[0][0].grad.abs().sum() == 0
    assert fake.features[0][1].grad.abs().sum() > 0
    assert all(m.grad is None for m in real.features[0])  # the target's features are a constant
    assert LOSSES.create("feature_matching", layers="full").layers == "full"
    with pytest.raises(ValueError, match="k >= 1"):
        FeatureMatchingLoss("weak", 0)


def test_multiscale_discriminator_returns_features_and_logits_per_scale() -> None:
    torch.manual_seed(0)
    discriminator = DISCRIMINATORS.create("multiscale", in_channels=3, resolution=64, dims=8, n_layers=3, scales=3)
    out = discriminator(torch.rand(2, 3, 64, 64))
    assert len(out.features) == len(out.logits) == 3
    assert all(len(head) == 3 + 1 for head in out.features)  # n_layers strided blocks + one stride-1 block
    assert [head[0].shape[1] for head in out.features] == [8, 8, 8]
    assert [head[-1].shape[1] for head in out.features] == [64, 64, 64]
    assert out.logits[0].shape[:2] == (2, 1)
    assert out.logits[0].shape[-1] > out.logits[1].shape[-1] > out.logits[2].shape[-1]  # coarser scales


@pytest.mark.parametrize("name", ["residual", "dcgan"])
def test_the_zoo_discriminators_are_parts_a_swapper_can_pick(name: str) -> None:
    """StyleGAN2's and DCGAN's discriminators answer the registry's construction keywords and return one head
    of per-image logits with its feature maps, so the swappers' losses (feature matching included) take them."""
    torch.manual_seed(0)
    words = {"in_channels": 3, "resolution": 32, "dims": 32, "n_layers": 3, "scales": 2, "norm": "batch"}
    discriminator = DISCRIMINATORS.create(name, **words)
    real, fake = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32, requires_grad=True)
    out_fake, out_real = discriminator(fake), discriminator(real)
    assert isinstance(out_fake, DiscriminatorOutput) and len(out_fake.logits) == len(out_fake.features) == 1
    assert out_fake.logits[0].shape == (4, 1, 1, 1)
    sides = [m.shape[-1] for m in out_fake.features[0]]
    assert sides == sorted(sides, reverse=True) and sides[-1] < 32  # each block halves the side
    # the losses read it: a generator loss and feature matching both reach the input image
    loss = AdversarialLoss("nonsaturating").generator_loss(out_fake) + FeatureMatchingLoss("weak", 1)(
        out_fake, out_real
    )
    loss.backward()
    assert fake.grad is not None and float(fake.grad.abs().sum()) > 0
    with pytest.raises(ValueError):
        DISCRIMINATORS.create(name, **{**words, "resolution": 20})  # a side neither one can halve down to its end


def test_projected_discriminator_freezes_its_backbone_but_passes_gradients_to_the_image() -> None:
    torch.manual_seed(0)
    discriminator = DISCRIMINATORS.create("projected", in_channels=3, resolution=64, dims=8, n_layers=2, scales=2)
    discriminator.requires_grad_(True)  # what a careless training loop does: must not unfreeze the backbone
    assert list(discriminator.stem.parameters()) == [] and list(discriminator.stages.parameters()) == []
    trainable = {name for name, _ in discriminator.named_parameters()}
    assert trainable and all(name.startswith("heads.") for name in trainable)
    assert not any(key.startswith(("stem.", "stages.")) for key in discriminator.state_dict())
    frozen_before = {name: b.clone() for name, b in discriminator.named_buffers()}

    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    out = discriminator(images)
    assert len(out.features) == len(out.logits) == 2
    assert [head[0].shape[1:] for head in out.features] == [(64, 17, 17), (128, 8, 8)]  # frozen levels first
    assert all(len(head) == 1 + 2 for head in out.features)
    optimiser = torch.optim.SGD(discriminator.parameters(), lr=0.1)
    AdversarialLoss("hinge").generator_loss(out).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    optimiser.step()
    for name, buffer in discriminator.named_buffers():
        assert torch.equal(buffer, frozen_before[name]), name
    # Same structure as the multi-scale one, so every loss reads both.
    FeatureMatchingLoss("early", 1)(out, discriminator(torch.rand(2, 3, 64, 64)))


class TinyEncoder(nn.Module):
    """A stand-in identity network: the per-channel mean colour (3-d 'embeddings')."""

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return faces.mean(dim=(2, 3))


def test_simswap_objective_weights_terms_and_drops_zero_ones() -> None:
    torch.manual_seed(0)
    cfg = SimSwapLossConfig()
    assert (cfg.identity.weight, cfg.reconstruction.weight, cfg.feature_matching.weight) == (10.0, 10.0, 10.0)
    assert cfg.gradient_penalty.weight == 1e-5 and cfg.feature_matching.layers == "weak"
    assert cfg.reconstruction.norm == cfg.feature_matching.norm == "l1"
    swapped = torch.rand(4, 3, 8, 8, requires_grad=True)
    target = torch.rand(4, 3, 8, 8)
    identity = torch.rand(4, 3)
    same = torch.tensor([True, False, True, False])
    fake = labelled_output([[1.0, 2.0]], requires_grad=True)
    real = labelled_output([[0.0, 0.0]])
    terms = SimSwapObjective(cfg, TinyEncoder()).generator_loss(swapped, target, identity, same, fake, real)
    assert set(terms.components) == {"adversarial", "identity", "reconstruction", "feature_matching"}
    assert float(terms.total.detach()) == pytest.approx(float(sum(terms.components.values())), rel=1e-6)
    # Reconstruction: L1 averaged over the two same-identity pairs only.
    recon = (swapped[[0, 2]] - target[[0, 2]]).abs().mean().detach()
    assert float(terms.components["reconstruction"]) == pytest.approx(10.0 * float(recon), rel=1e-5)
    assert float(terms.components["feature_matching"]) == pytest.approx(10.0 * (1.0 + 2.0) / 2)

    no_same = SimSwapObjective(cfg, TinyEncoder()).generator_loss(
        swapped, target, identity, torch.zeros(4, dtype=torch.bool), fake, real
    )
    assert float(no_same.components["reconstruction"]) == 0.0

    ablated = apply_overrides(cfg, ["identity.weight=0", "feature_matching.weight=0", "reconstruction.norm=l2"])
    objective = SimSwapObjective(ablated)  # no identity encoder needed once its weight is 0
    assert objective.identity is None and objective.feature_matching is None and not objective.needs_real_output
    terms = objective.generator_loss(swapped, target, identity, same, fake_output=fake)
    assert set(terms.components) == {"adversarial", "reconstruction"}
    recon_l2 = (swapped[[0, 2]] - target[[0, 2]]).square().mean().detach()
    assert float(terms.components["reconstruction"]) == pytest.approx(10.0 * float(recon_l2), rel=1e-5)
    with pytest.raises(ValueError, match="identity_encoder"):
        SimSwapObjective(cfg)


def test_simswap_discriminator_loss_has_real_fake_and_penalty_terms() -> None:
    torch.manual_seed(0)
    weight = torch.randn(3, 4, 4)
    critic = LinearCritic(weight / weight.norm() * 2.0)
    real, fake = torch.rand(3, 3, 4, 4), torch.rand(3, 3, 4, 4, requires_grad=True)
    objective = SimSwapObjective(
        apply_overrides(SimSwapLossConfig(), ["identity.weight=0", "gradient_penalty.weight=0.5"])
    )
    terms = objective.discriminator_loss(critic, real, fake)
    assert set(terms.components) == {"real", "fake", "gradient_penalty"}
    assert float(terms.components["gradient_penalty"]) == pytest.approx(0.5 * (2.0 - 1.0) ** 2, rel=1e-5)
    hinge = AdversarialLoss("hinge")
    real_term, fake_term = hinge.discriminator_terms(critic(real), critic(fake))
    assert float(terms.components["real"]) == pytest.approx(float(real_term.detach()))
    terms.total.backward()
    assert fake.grad is None  # D's step never reaches the generator
    no_gp = SimSwapObjective(apply_overrides(SimSwapLossConfig(), ["identity.weight=0", "gradient_penalty.weight=0"]))
    assert "gradient_penalty" not in no_gp.discriminator_loss(critic, real, fake).components


def test_loss_presets_and_the_l2_ablation() -> None:
    presets = config_group("loss")
    assert isinstance(presets.create("simswap"), SimSwapLossConfig)
    l2 = presets.create("simswap-l2")
    assert (l2.reconstruction.norm, l2.feature_matching.norm) == ("l2", "l2")
    assert l2.identity.weight == 10.0
