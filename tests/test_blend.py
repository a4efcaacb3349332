"""Paste-back blending: locality (nothing beyond the feathered mask changes), identities, and what
each mode is for, on real LFW photographs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from swaplab.swap.blend import BLENDERS, blend, erode, feather, sharpen

Pair = tuple[np.ndarray, np.ndarray]

MODES = ["alpha", "poisson", "laplacian"]


def _photo(lfw: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(lfw / name.rsplit("_", 1)[0] / f"{name}.jpg").convert("RGB"))


@pytest.fixture(scope="module")
def frame_and_face(lfw: Path) -> Pair:
    return _photo(lfw, "George_W_Bush_0001"), _photo(lfw, "Colin_Powell_0001")


def _ellipse(
    shape: tuple[int, int], centre: tuple[int, int] = (125, 130), axes: tuple[int, int] = (55, 70)
) -> np.ndarray:
    mask = np.zeros(shape, np.float32)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1.0, -1)
    return mask


def _reach(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Pixels within ``pixels`` (Chebyshev) of the mask's support."""
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate((mask > 0).astype(np.uint8), kernel) > 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("feather_px", [0, 7])
def test_nothing_changes_beyond_the_feathered_mask(mode: str, feather_px: int, frame_and_face: Pair) -> None:
    frame, face = frame_and_face
    frame_before, face_before = frame.copy(), face.copy()
    mask = _ellipse(frame.shape[:2])
    out = blend(frame, face, mask, mode, feather_px=feather_px)
    assert out.shape == frame.shape and out.dtype == np.uint8
    outside = ~_reach(mask, feather_px)
    assert np.array_equal(out[outside], frame[outside])
    inside = mask > 0.99
    assert np.abs(out[inside].astype(int) - frame[inside]).mean() > 10  # the face really went in
    assert np.array_equal(frame, frame_before) and np.array_equal(face, face_before)


@pytest.mark.parametrize("mode", MODES)
def test_face_equal_to_frame_returns_the_frame(mode: str, frame_and_face: Pair) -> None:
    frame, _ = frame_and_face
    out = blend(frame, frame.copy(), _ellipse(frame.shape[:2]), mode, feather_px=5)
    tolerance = 0 if mode == "alpha" else 2
    assert np.abs(out.astype(int) - frame).max() <= tolerance


@pytest.mark.parametrize("feather_px", [0, 9])
def test_alpha_with_full_mask_returns_the_face(feather_px: int, frame_and_face: Pair) -> None:
    frame, face = frame_and_face
    out = blend(frame, face, np.ones(frame.shape[:2], np.float32), "alpha", feather_px=feather_px)
    assert np.array_equal(out, face)


def test_alpha_is_the_weighted_mean(frame_and_face: Pair) -> None:
    frame, face = frame_and_face
    out = blend(frame, face, np.full(frame.shape[:2], 0.25, np.float32), "alpha")
    expected = np.rint(0.75 * frame.astype(np.float64) + 0.25 * face)
    assert np.abs(out - expected).max() <= 1


@pytest.mark.parametrize("mode", MODES)
def test_mask_touching_the_border(mode: str, frame_and_face: Pair) -> None:
    frame, face = frame_and_face
    mask = np.zeros(frame.shape[:2], np.float32)
    mask[:90, :120] = 1.0  # touches the top and left edges
    out = blend(frame, face, mask, mode, feather_px=4)
    assert out.shape == frame.shape
    assert np.array_equal(out[100:, :], frame[100:, :]) and np.array_equal(out[:, 130:], frame[:, 130:])
    assert np.abs(out[10:80, 10:110].astype(int) - frame[10:80, 10:110]).mean() > 5


@pytest.mark.parametrize("mode", MODES)
def test_empty_mask_returns_a_copy_of_the_frame(mode: str, frame_and_face: Pair) -> None:
    frame, face = frame_and_face
    out = blend(frame, face, np.zeros(frame.shape[:2], np.float32), mode, feather_px=3)
    assert np.array_equal(out, frame) and out is not frame


def test_poisson_keeps_face_gradients_and_frame_colour(frame_and_face: Pair) -> None:
    frame, _ = frame_and_face
    # A "face" that is the frame itself, 40 levels brighter: the gradients agree, the colours do not.
    brighter = np.clip(frame.astype(int) + 40, 0, 255).astype(np.uint8)
    mask = _ellipse(frame.shape[:2], axes=(40, 50))
    inside = erode(mask, 4) > 0.5
    alpha = blend(frame, brighter, mask, "alpha")
    poisson = blend(frame, brighter, mask, "poisson")
    assert np.abs(alpha[inside].astype(int) - frame[inside]).mean() > 30
    assert np.abs(poisson[inside].astype(int) - frame[inside]).mean() < 4


def test_laplacian_softens_the_seam_of_a_hard_mask(frame_and_face: Pair) -> None:
    frame, face = frame_and_face
    shifted = np.clip(face.astype(int) + [40, 0, -30], 0, 255).astype(np.uint8)
    mask = _ellipse(frame.shape[:2])
    # Pairs of horizontal neighbours straddling the mask's edge.
    hard = mask > 0.5
    edge = hard[:, 1:] != hard[:, :-1]

    def seam(image: np.ndarray) -> float:
        step = np.abs(image[:, 1:].astype(int) - image[:, :-1])
        return float(step[edge].mean())

    alpha, laplacian = (
        blend(frame, shifted, mask, "alpha"),
        blend(frame, shifted, mask, "laplacian", levels=4),
    )
    assert seam(laplacian) < 0.75 * seam(alpha)  # measured 0.60
    centre = mask.astype(bool) & (erode(mask, 30) > 0.5)
    assert np.abs(laplacian[centre].astype(int) - shifted[centre]).mean() < 1  # the core stays the face


def test_feather_spreads_by_exactly_its_radius() -> None:
    mask = _ellipse((120, 140), centre=(70, 60), axes=(30, 20))
    soft = feather(mask, 6)
    assert soft.dtype == np.float32 and soft.min() >= 0.0 and soft.max() <= 1.0
    assert np.array_equal(soft > 0, _reach(mask, 6))
    assert 0.3 < soft[60, 100] < 0.7  # half way up on the edge (x = 70 + 30)
    assert np.array_equal(feather(mask, 0), mask)


def test_erode_shrinks_and_negative_grows() -> None:
    mask = _ellipse((100, 100), centre=(50, 50), axes=(30, 30))
    shrunk, grown = erode(mask, 5), erode(mask, -5)
    row = 50
    assert (mask[row] > 0.5).sum() == 61
    assert (shrunk[row] > 0.5).sum() == 51 and (grown[row] > 0.5).sum() == 71


def test_sharpen_raises_detail_and_keeps_flat_areas(frame_and_face: Pair) -> None:
    _, face = frame_and_face
    sharper = sharpen(face, amount=1.0)
    assert sharper.dtype == np.uint8 and sharper.shape == face.shape

    def detail(image: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())

    assert detail(sharper) > 1.5 * detail(face)
    flat = np.full((32, 32, 3), 100, np.uint8)
    assert np.array_equal(sharpen(flat, 2.0), flat)
    assert np.array_equal(sharpen(face, 0.0), face)


def test_bad_inputs_are_named(frame_and_face: Pair) -> None:
    frame, face = frame_and_face
    mask = _ellipse(frame.shape[:2])
    with pytest.raises(ValueError, match="frame must be RGB uint8"):
        blend(frame.astype(np.float32), face, mask)
    with pytest.raises(ValueError, match="face must match the frame"):
        blend(frame, face[:100], mask)
    with pytest.raises(ValueError, match="mask must be"):
        blend(frame, face, mask[:, :10])
    with pytest.raises(KeyError, match="Known: alpha, glgan, laplacian, learned, poisson"):
        blend(frame, face, mask, "seamless")
    # learned: tests/test_learned_blend.py; glgan: tests/test_families.py
    assert BLENDERS.names() == sorted([*MODES, "learned", "glgan"])
