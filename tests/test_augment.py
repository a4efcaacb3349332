"""Batched augmentation: identity at zero strength, shapes, determinism, flips, affine, colour."""

from __future__ import annotations

import kornia
import pytest
import torch

from swaplab.train.augment import (
    AugmentConfig,
    Augmenter,
    affine_theta,
    random_warp,
    random_warp_field,
    rct_transfer,
)

STILL = dict(
    warp=False,
    rotation_deg=0.0,
    scale=0.0,
    translation=0.0,
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    hue_deg=0.0,
)


def batch(n: int = 4, size: int = 32) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    mask = torch.zeros(n, 1, size, size)
    mask[..., 8:24, 8:24] = 1.0
    return {
        "image": torch.rand(n, 3, size, size),
        "mask": mask,
        "eyes_mouth": mask * 0.5,
        "landmarks": torch.rand(n, 68, 2),
    }


def test_random_warp_with_zero_strength_is_the_identity() -> None:
    images = torch.rand(3, 3, 40, 40)
    out = random_warp(images, strength=0.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)
    warped = random_warp(images, strength=1.0, generator=torch.Generator().manual_seed(1))
    assert (warped - images).abs().mean() > 0.05


def test_warp_field_is_smooth_and_fixed_at_the_border() -> None:
    field = random_warp_field(8, 64, 64, generator=torch.Generator().manual_seed(0))
    assert field.shape == (8, 64, 64, 2)
    assert field[:, 0].abs().max() < 1e-6 and field[:, :, -1].abs().max() < 1e-6
    step = (field[:, 1:] - field[:, :-1]).abs().max()
    assert 0 < step < 0.05  # neighbouring pixels move together (a smooth field, not noise)


def test_augmenter_outputs_and_shapes() -> None:
    out = Augmenter()(batch(), torch.Generator().manual_seed(0))
    assert set(out) == {"warped", "target", "mask", "eyes_mouth", "landmarks"}
    assert out["warped"].shape == out["target"].shape == (4, 3, 32, 32)
    assert out["mask"].shape == out["eyes_mouth"].shape == (4, 1, 32, 32)
    assert torch.equal(out["landmarks"], batch()["landmarks"])  # not spatial: passed through
    assert 0.0 <= out["warped"].min() and out["warped"].max() <= 1.0
    assert not torch.allclose(out["warped"], out["target"])


def test_augmenter_is_deterministic_for_a_seed() -> None:
    augment = Augmenter(AugmentConfig(flip_prob=0.5))
    first = augment(batch(), torch.Generator().manual_seed(7))
    again = augment(batch(), torch.Generator().manual_seed(7))
    other = augment(batch(), torch.Generator().manual_seed(8))
    for key in ("warped", "target", "mask"):
        assert torch.equal(first[key], again[key])
    assert not torch.equal(first["warped"], other["warped"])


def test_without_jitter_the_target_is_the_input_face() -> None:
    data = batch()
    out = Augmenter(AugmentConfig(**{**STILL, "warp": True}))(data, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["target"], data["image"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["mask"], data["mask"], atol=1e-5, rtol=0)
    assert (out["warped"] - data["image"]).abs().mean() > 0.02


def test_flip_moves_a_marked_pixel_to_the_mirrored_position() -> None:
    data = batch(n=2, size=32)
    data["image"] = torch.zeros(2, 3, 32, 32)
    data["image"][:, :, 10, 3] = 1.0
    data["mask"] = data["image"][:, :1].clone()
    out = Augmenter(AugmentConfig(**STILL, flip_prob=1.0))(data, torch.Generator().manual_seed(0))
    for key in ("target", "warped", "mask"):
        assert out[key][:, :, 10, 28].min().item() == pytest.approx(1.0, abs=1e-5), key
        assert out[key][:, :, 10, 3].max().item() == pytest.approx(0.0, abs=1e-5), key
    unflipped = Augmenter(AugmentConfig(**STILL))(data, torch.Generator().manual_seed(0))
    assert unflipped["target"][:, :, 10, 3].min().item() == pytest.approx(1.0, abs=1e-5)


def test_affine_shift_moves_content_by_the_given_fraction() -> None:
    image = torch.zeros(1, 1, 32, 32)
    image[..., 12, 12] = 1.0
    zero, one = torch.zeros(1), torch.ones(1)
    theta = affine_theta(zero, one, torch.tensor([0.25]), zero, torch.tensor([False]))
    grid = torch.nn.functional.affine_grid(theta, [1, 1, 32, 32], align_corners=False)
    moved = torch.nn.functional.grid_sample(image, grid, align_corners=False)
    assert moved[0, 0, 12, 20].item() == pytest.approx(1.0, abs=1e-5)  # 0.25 * 32 = 8 px right
    theta90 = affine_theta(torch.tensor([90.0]), one, zero, zero, torch.tensor([False]))
    assert torch.allclose(theta90[0, :, :2].abs(), torch.tensor([[0.0, 1.0], [1.0, 0.0]]), atol=1e-6)


def test_colour_jitter_is_shared_by_input_and_target() -> None:
    cfg = AugmentConfig(**{**STILL, "brightness": 0.1, "contrast": 0.2, "saturation": 0.3, "hue_deg": 20.0})
    data = batch()
    out = Augmenter(cfg)(data, torch.Generator().manual_seed(3))
    assert torch.equal(out["warped"], out["target"])  # warp off: same image, same colours
    assert (out["target"] - data["image"]).abs().mean() > 0.01
    assert 0.0 <= out["target"].min() and out["target"].max() <= 1.0
    torch.testing.assert_close(out["mask"], data["mask"], atol=1e-5, rtol=0)  # masks keep their values


def test_rct_gives_the_source_the_reference_lab_statistics() -> None:
    torch.manual_seed(0)
    source = 0.3 + 0.3 * torch.rand(2, 3, 32, 32)
    reference = 0.4 + 0.2 * torch.rand(2, 3, 32, 32)
    reference[:, 0] += 0.15  # a warmer reference
    out = rct_transfer(source, reference)
    out_lab, ref_lab = kornia.color.rgb_to_lab(out), kornia.color.rgb_to_lab(reference)
    torch.testing.assert_close(out_lab.mean(dim=(2, 3)), ref_lab.mean(dim=(2, 3)), atol=0.5, rtol=0)
    torch.testing.assert_close(out_lab.std(dim=(2, 3)), ref_lab.std(dim=(2, 3)), atol=0.5, rtol=0.05)

    cfg = AugmentConfig(**STILL, color_transfer="rct")
    with pytest.raises(ValueError, match="reference"):
        Augmenter(cfg)(batch(), torch.Generator().manual_seed(0))
    data = batch()
    moved = Augmenter(cfg)(data, torch.Generator().manual_seed(0), reference=reference[:1].expand(3, -1, -1, -1))
    assert moved["target"][:, 0].mean() > data["image"][:, 0].mean() + 0.05


def test_non_square_faces_are_refused() -> None:
    with pytest.raises(ValueError, match="square"):
        Augmenter()({"image": torch.rand(1, 3, 32, 48)})
