"""Colour transfer: every mode pulls the masked colour statistics of a real face onto the target's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from swaplab.swap.colour import COLOUR_TRANSFERS, MIN_PIXELS, transfer_colour

Faces = tuple[torch.Tensor, torch.Tensor]

SIZE = 96
MODES = ["rct", "lct", "mkl", "idt", "sot", "hist"]


def _face(lfw: Path, name: str) -> torch.Tensor:
    """A real LFW face, centre crop, (1, 3, SIZE, SIZE) in [0, 1]."""
    image = Image.open(lfw / name.rsplit("_", 1)[0] / f"{name}.jpg").convert("RGB")
    pixels = np.asarray(image.crop((61, 61, 189, 189)).resize((SIZE, SIZE), Image.BILINEAR), np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()[None]


def _tint(image: torch.Tensor, gains: tuple[float, float, float], offset: float) -> torch.Tensor:
    return (image * torch.tensor(gains).view(1, 3, 1, 1) + offset).clamp(0, 1)


def _ellipse_mask(batch: int = 1) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(float(SIZE)), torch.arange(float(SIZE)), indexing="ij")
    inside = ((xx - (SIZE - 1) / 2) / (0.35 * SIZE)) ** 2 + ((yy - 0.52 * SIZE) / (0.44 * SIZE)) ** 2 <= 1
    return inside.float()[None, None].repeat(batch, 1, 1, 1)


def _masked_stats(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = image.reshape(3, -1).T[mask.reshape(-1) >= 0.5].double()
    return pixels.mean(0), torch.cov(pixels.T)


def _distance(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    (mean_a, cov_a), (mean_b, cov_b) = _masked_stats(a, mask), _masked_stats(b, mask)
    return float((mean_a - mean_b).norm()), float((cov_a - cov_b).norm())


@pytest.fixture(scope="module")
def faces(lfw: Path) -> Faces:
    """(source, target): Bush with a warm tint, Powell as he is."""
    source = _tint(_face(lfw, "George_W_Bush_0001"), (1.15, 0.9, 0.7), 0.05)
    return source, _face(lfw, "Colin_Powell_0001")


@pytest.mark.parametrize("mode", MODES)
def test_mode_moves_masked_statistics_onto_target(mode: str, faces: tuple[torch.Tensor, torch.Tensor]) -> None:
    source, target = faces
    mask = _ellipse_mask()
    mean_before, cov_before = _distance(source, target, mask)
    out = transfer_colour(mode, source, target, mask)
    mean_after, cov_after = _distance(out, target, mask)
    assert mean_before > 0.15 and cov_before > 0.02  # the tint really is a large shift
    assert mean_after < 0.1 * mean_before, (mode, mean_before, mean_after)
    assert cov_after < 0.25 * cov_before, (mode, cov_before, cov_after)
    assert out.shape == source.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_none_is_identity(faces: Faces) -> None:
    source, target = faces
    out = transfer_colour("none", source, target, _ellipse_mask())
    assert torch.equal(out, source) and out is not source


@pytest.mark.parametrize("mode", MODES)
def test_batch_items_use_their_own_statistics(mode: str, faces: Faces) -> None:
    source, target = faces
    # Item 1 goes the other way round, with a cold tint: the items share nothing.
    other_source = _tint(target, (0.7, 0.95, 1.2), 0.0)
    sources, targets = torch.cat([source, other_source]), torch.cat([target, source])
    mask = _ellipse_mask(2)
    batch = transfer_colour(mode, sources, targets, mask)
    for i in range(2):
        single = transfer_colour(mode, sources[i : i + 1], targets[i : i + 1], mask[i : i + 1])
        # idt/sot draw their random directions per item from one seeded stream, so item 1 of a
        # batch uses other directions than a lone call: compare statistics, not pixels.
        if mode in ("idt", "sot"):
            assert _distance(batch[i : i + 1], targets[i : i + 1], mask[:1])[0] < 0.02
        else:
            torch.testing.assert_close(batch[i : i + 1], single, atol=1e-6, rtol=0)
        before = _distance(sources[i : i + 1], targets[i : i + 1], mask[:1])[0]
        after = _distance(batch[i : i + 1], targets[i : i + 1], mask[:1])[0]
        assert after < 0.1 * before


@pytest.mark.parametrize("mode", MODES)
def test_outside_mask_does_not_change_fit_but_is_mapped(mode: str, faces: tuple[torch.Tensor, torch.Tensor]) -> None:
    source, target = faces
    mask = _ellipse_mask()
    outside = mask < 0.5
    noise = torch.rand(source.shape, generator=torch.Generator().manual_seed(3))
    noisy_source = torch.where(outside, noise, source)
    noisy_target = torch.where(outside, 1 - noise, target)
    # Only masked pixels feed the fit: garbage outside changes nothing inside the mask.
    plain = transfer_colour(mode, source, target, mask)
    noisy = transfer_colour(mode, noisy_source, noisy_target, mask)
    inside = (~outside).expand_as(plain)
    torch.testing.assert_close(noisy[inside], plain[inside], atol=1e-5, rtol=0)
    # The fitted map applies everywhere: an outside pixel with an inside pixel's colour maps alike.
    probe = source.clone()
    probe[0, :, 0, 0] = source[0, :, SIZE // 2, SIZE // 2]
    mapped = transfer_colour(mode, probe, target, mask)
    torch.testing.assert_close(mapped[0, :, 0, 0], mapped[0, :, SIZE // 2, SIZE // 2], atol=1e-5, rtol=0)
    assert not torch.equal(mapped[0, :, 0, 0], probe[0, :, 0, 0])


def test_empty_mask_leaves_item_unchanged(faces: Faces) -> None:
    source, target = faces
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., :3, :3] = 1  # 9 pixels < MIN_PIXELS
    assert 9 < MIN_PIXELS
    assert torch.equal(transfer_colour("lct", source, target, mask), source)


def test_whole_image_without_mask_and_seeded_modes(faces: Faces) -> None:
    source, target = faces
    full = torch.ones(1, 1, SIZE, SIZE)
    torch.testing.assert_close(transfer_colour("mkl", source, target), transfer_colour("mkl", source, target, full))
    first = transfer_colour("idt", source, target, seed=1)
    assert torch.equal(first, transfer_colour("idt", source, target, seed=1))
    assert not torch.equal(first, transfer_colour("idt", source, target, seed=2))


def test_lct_matches_covariance_exactly_without_clipping() -> None:
    generator = torch.Generator().manual_seed(0)
    source = 0.5 + 0.05 * torch.randn(1, 3, 32, 32, generator=generator)
    target = 0.45 + 0.07 * torch.randn(1, 3, 32, 32, generator=generator)
    out = transfer_colour("lct", source, target)
    full = torch.ones(1, 1, 32, 32)
    (mean_o, cov_o), (mean_t, cov_t) = _masked_stats(out, full), _masked_stats(target, full)
    torch.testing.assert_close(mean_o, mean_t, atol=1e-5, rtol=0)
    torch.testing.assert_close(cov_o, cov_t, atol=1e-5, rtol=0)


def test_errors_name_the_problem(faces: Faces) -> None:
    source, target = faces
    with pytest.raises(KeyError, match="Known: hist, idt, lct, mkl, none, rct, sot"):
        transfer_colour("reinhard", source, target)
    with pytest.raises(ValueError, match="batch sizes differ"):
        transfer_colour("rct", torch.cat([source, source]), target)
    with pytest.raises(ValueError, match="does not match image size"):
        transfer_colour("rct", source, target, torch.ones(1, 1, 8, 8))
    assert COLOUR_TRANSFERS.names() == sorted(["none", *MODES])
