"""Losses against hand-computed values, masks, eyes/mouth priority and the objective's bookkeeping."""

from __future__ import annotations

import math

import kornia
import pytest
import torch

from swaplab.config import ConfigError, apply_overrides, config_group
from swaplab.losses import (
    LOSSES,
    DSSIMLoss,
    IdentityLoss,
    LossConfig,
    MaskLoss,
    MSDSSIMLoss,
    PixelLoss,
    ReconstructionObjective,
)
from swaplab.losses.functional import dfl_dssim_window_sizes, soften_mask, weighted_mean


def constant(value: float, n: int = 2, c: int = 3, size: int = 32) -> torch.Tensor:
    return torch.full((n, c, size, size), value)


def test_registry_names() -> None:
    assert {"dssim", "ms_dssim", "pixel", "mask", "identity"} <= set(LOSSES.names())
    assert isinstance(LOSSES.create("pixel", norm="l2"), PixelLoss)


def test_dssim_window_sizes_follow_deepfacelab() -> None:
    assert dfl_dssim_window_sizes(64) == (5,)
    assert dfl_dssim_window_sizes(128) == (11,)
    assert dfl_dssim_window_sizes(256) == (22, 11)
    assert dfl_dssim_window_sizes(128, two_scale_from=128) == (11, 5)


def test_dssim_of_an_image_with_itself_is_zero() -> None:
    image = torch.rand(2, 3, 64, 64)
    assert DSSIMLoss()(image, image).item() == pytest.approx(0.0, abs=1e-6)


def test_dssim_of_two_constants_is_the_luminance_term() -> None:
    # Flat images: variances are 0 so cs = c2 / c2 = 1, SSIM = (2ab + c1) / (a^2 + b^2 + c1).
    a, b, c1 = 0.2, 0.6, (0.01 * 1.0) ** 2
    ssim = (2 * a * b + c1) / (a * a + b * b + c1)
    assert DSSIMLoss()(constant(a), constant(b)).item() == pytest.approx((1 - ssim) / 2, rel=1e-5)


def test_dssim_matches_kornia_ssim_with_valid_windows() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 48, 48)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    reference = kornia.metrics.ssim(x, y, 7, padding="valid").mean()
    assert DSSIMLoss(window_sizes=[7])(x, y).item() == pytest.approx((1 - reference.item()) / 2, rel=1e-5)


def test_dssim_accepts_even_windows_and_bf16_inputs() -> None:
    torch.manual_seed(0)
    x, y = torch.rand(1, 3, 96, 96), torch.rand(1, 3, 96, 96)
    assert dfl_dssim_window_sizes(96) == (8,)
    value = DSSIMLoss()(x.bfloat16(), y.bfloat16())
    assert value.dtype == torch.float32 and 0.0 < value.item() < 1.0


def test_ms_dssim_hand_computed() -> None:
    image = torch.rand(1, 3, 64, 64)
    assert MSDSSIMLoss()(image, image).item() == pytest.approx(0.0, abs=1e-6)
    # Constants: every cs is 1, so MS-SSIM = luminance ** (last exponent, renormalised).
    a, b, c1 = 0.3, 0.5, 1e-4
    luminance = (2 * a * b + c1) / (a * a + b * b + c1)
    exponent = 0.3001 / (0.0448 + 0.2856 + 0.3001)
    got = MSDSSIMLoss(levels=3, window_size=7)(constant(a, size=64), constant(b, size=64)).item()
    assert got == pytest.approx((1 - luminance**exponent) / 2, rel=1e-4)
    with pytest.raises(ValueError, match="below the window"):
        MSDSSIMLoss(levels=5, window_size=7)(constant(a, size=64), constant(b, size=64))


@pytest.mark.parametrize(("norm", "expected"), [("l1", 0.1), ("l2", 0.01)])
def test_pixel_loss_of_a_constant_shift(norm: str, expected: float) -> None:
    image = torch.rand(2, 3, 16, 16) * 0.8
    assert PixelLoss(norm)(image + 0.1, image).item() == pytest.approx(expected, rel=1e-5)


def test_masked_losses_ignore_pixels_outside_the_mask() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 3, 64, 64)
    mask = torch.zeros(2, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1.0
    pred = target.clone()
    pred[..., :, :8] = 1.0 - pred[..., :, :8]  # errors only in a band outside the mask
    for loss in (PixelLoss("l1"), PixelLoss("l2"), DSSIMLoss(), MSDSSIMLoss(levels=2)):
        assert loss(pred, target, mask).item() == pytest.approx(0.0, abs=1e-6), type(loss).__name__
        assert loss(pred, target).item() > 1e-3
    # Inside the mask, the masked mean is the error inside the mask, whatever the mask's area.
    shifted = target.clone()
    shifted[..., 16:48, 16:48] += 0.2
    assert PixelLoss("l1")(shifted, target, mask).item() == pytest.approx(0.2, rel=1e-4)
    assert PixelLoss("l1")(shifted, target).item() == pytest.approx(0.2 * 0.25, rel=1e-4)


def test_weighted_mean_rejects_a_badly_shaped_weight() -> None:
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        weighted_mean(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))


def test_softened_mask_covers_the_hull_and_a_soft_border() -> None:
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 20:44, 20:44] = 1.0
    soft = soften_mask(mask)
    assert soft[..., 21:43, 21:43].min().item() == pytest.approx(1.0)
    assert 0.0 < soft[0, 0, 32, 18].item() < 1.0  # just outside the hull: partly weighted
    assert soft[0, 0, 32, 5].item() == 0.0


def test_mask_loss() -> None:
    pred, target = torch.full((2, 1, 8, 8), 0.75), torch.ones(2, 1, 8, 8)
    assert MaskLoss()(pred, target).item() == pytest.approx(0.0625)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        MaskLoss()(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_identity_loss_with_a_stand_in_encoder() -> None:
    def mean_colour(faces: torch.Tensor) -> torch.Tensor:  # a tiny "identity network"
        return faces.mean(dim=(2, 3))

    loss = IdentityLoss(mean_colour)
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1.0
    green = torch.zeros(1, 3, 8, 8)
    green[:, 1] = 1.0
    assert loss(red, red).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(green, red).item() == pytest.approx(1.0)  # orthogonal embeddings
    yellow = (red + green).requires_grad_()
    value = loss(yellow, red)
    assert value.item() == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-5)
    value.backward()
    assert yellow.grad is not None and yellow.grad.abs().sum() > 0
    embedding = mean_colour(red)
    assert loss(green, target_embedding=embedding).item() == pytest.approx(1.0)


# ---------------------------------------------------------------- the objective


def _face_batch(size: int = 64):
    torch.manual_seed(0)
    target = torch.rand(2, 3, size, size)
    mask = torch.zeros(2, 1, size, size)
    mask[..., 8:56, 12:52] = 1.0
    eyes_mouth = torch.zeros(2, 1, size, size)
    eyes_mouth[..., 20:26, 18:46] = 1.0
    return target, mask, eyes_mouth


def test_objective_total_is_the_sum_of_weighted_components() -> None:
    target, mask, _ = _face_batch()
    pred = (target + 0.1).clamp(0, 1)
    pred_mask = torch.full_like(mask, 0.5)
    objective = ReconstructionObjective(LossConfig())
    terms = objective(pred, pred_mask, target, mask)
    assert set(terms.components) == {"dssim", "pixel", "mask"}
    assert terms.total.item() == pytest.approx(sum(v.item() for v in terms.components.values()), rel=1e-6)
    assert terms.components["mask"].item() == pytest.approx(10 * MaskLoss()(pred_mask, mask).item(), rel=1e-6)
    assert terms.total.requires_grad is False  # no parameters: nothing needs gradients here
    assert all(not v.requires_grad for v in terms.components.values())


def test_zero_weight_terms_are_not_built_nor_computed() -> None:
    cfg = apply_overrides(LossConfig(), ["dssim.weight=0", "mask.weight=0", "pixel.norm=l1"])
    objective = ReconstructionObjective(cfg)
    assert list(objective.image_terms) == ["pixel"] and objective.mask_term is None
    target, mask, _ = _face_batch()
    terms = objective(target + 0.1, mask, target, mask)
    assert list(terms.components) == ["pixel"]
    with pytest.raises(ConfigError, match="'l1', 'l2'"):
        apply_overrides(LossConfig(), ["pixel.norm=l3"])


def test_eyes_and_mouth_priority_raises_the_loss_of_an_error_there() -> None:
    target, mask, eyes_mouth = _face_batch()
    in_eyes, elsewhere = target.clone(), target.clone()
    in_eyes[..., 20:26, 18:46] += 0.2
    elsewhere[..., 40:46, 18:46] += 0.2  # the same error, same area, inside the face but not eyes/mouth
    pred_mask = mask.clone()
    plain = ReconstructionObjective(LossConfig())
    prio = ReconstructionObjective(config_group("loss").create("dfl-eyes"))
    assert plain(in_eyes, pred_mask, target, mask).total.item() == pytest.approx(
        plain(elsewhere, pred_mask, target, mask).total.item(), rel=0.05
    )
    with_prio = prio(in_eyes, pred_mask, target, mask, eyes_mouth)
    assert with_prio.components["eyes_mouth"].item() == pytest.approx(20 * 0.2, rel=1e-4)
    assert prio(elsewhere, pred_mask, target, mask, eyes_mouth).components["eyes_mouth"].item() == 0.0
    with pytest.raises(ValueError, match="eyes_mouth_mask"):
        prio(in_eyes, pred_mask, target, mask)


def test_objective_requires_what_its_terms_need() -> None:
    target, mask, _ = _face_batch()
    with pytest.raises(ValueError, match="identity_encoder"):
        ReconstructionObjective(apply_overrides(LossConfig(), ["identity.weight=1"]))
    with pytest.raises(ValueError, match="target_mask is required"):
        ReconstructionObjective(LossConfig())(target, mask, target)
    unmasked = apply_overrides(LossConfig(), ["masked.enabled=false", "mask.weight=0"])
    assert ReconstructionObjective(unmasked)(target, mask, target).total.item() == pytest.approx(0.0, abs=1e-6)


def test_identity_term_and_pair_prefixes() -> None:
    target, mask, _ = _face_batch()
    cfg = apply_overrides(LossConfig(), ["identity.weight=2"])
    objective = ReconstructionObjective(cfg, identity_encoder=lambda faces: faces.mean(dim=(2, 3)))
    pred = target.flip(1)
    terms = objective.pair(
        (pred, mask), (target, mask), {"target": target, "mask": mask}, {"image": target, "mask": mask}
    )
    assert {"src/identity", "dst/identity", "src/dssim", "dst/pixel"} <= set(terms.components)
    assert terms.components["dst/identity"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms.components["src/identity"].item() > 0.0
    assert terms.total.item() == pytest.approx(sum(v.item() for v in terms.components.values()), rel=1e-6)


def test_loss_presets() -> None:
    presets = config_group("loss")
    assert presets.create("dfl").pixel.norm == "l2" and presets.create("l1").pixel.norm == "l1"
    assert presets.create("dfl").eyes_mouth.weight == 0.0 and presets.create("dfl-eyes").eyes_mouth.weight == 20.0
