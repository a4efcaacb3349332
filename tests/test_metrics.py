"""Evaluation metrics: each against a hand-computed or constructed case, on synthetic and LFW inputs."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import imageio.v3 as iio
import kornia
import numpy as np
import pytest
import scipy.linalg
import torch

from swaplab.faces.analyze import sharpness
from swaplab.faces.detect import DETECTORS
from swaplab.faces.landmarks import LANDMARKERS, inter_ocular_distance, mirror_landmarks
from swaplab.faces.pose import head_poses
from swaplab.identity import chip_from_landmarks, dlib_chip, identity_features, load_dlib_identity
from swaplab.metrics import (
    EXPRESSION_POINTS_68,
    METRICS,
    IdentityDrift,
    KernelDistance,
    PerItem,
    better,
    compute,
    direction,
    expression_error,
    flicker,
    frechet_distance,
    identity_drift,
    identity_retrieval,
    identity_similarity,
    kernel_distance,
    landmark_jitter,
    laplacian_variance,
    masked_l1,
    masked_psnr,
    masked_ssim,
    polynomial_mmd2,
    pose_error,
    roc_auc,
    sharpness_ratio,
    summarize,
    warped_flicker,
)

# LFW faces that are turned (|yaw| > 15 degrees), so mirroring them changes their pose clearly.
TURNED = ("George_W_Bush_0001", "George_W_Bush_0004", "George_W_Bush_0011")
PEOPLE = ("George_W_Bush", "Colin_Powell", "Tony_Blair", "Ariel_Sharon")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def hog():
    return DETECTORS.create("dlib-hog")


@pytest.fixture(scope="module")
def turned_landmarks(lfw: Path, hog) -> np.ndarray:
    """(3, 68, 2) dlib landmarks of three turned 250 x 250 LFW faces."""
    predictor = LANDMARKERS.create("dlib-68")
    points = []
    for name in TURNED:
        image = iio.imread(lfw / "George_W_Bush" / f"{name}.jpg")
        points.append(predictor.landmarks(image, hog.detect(image)[0]))
    return np.stack(points)


@pytest.fixture(scope="module")
def crops(lfw: Path) -> np.ndarray:
    """(4, 128, 128, 3) uint8: the central 128 px (the face) of four people's first LFW photo."""
    return np.stack([iio.imread(lfw / p / f"{p}_0001.jpg")[61:189, 61:189] for p in PEOPLE])


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0).contiguous()


def ellipse_masks(n: int, size: int = 128) -> torch.Tensor:
    """(n, 1, size, size) hard masks of a face-shaped ellipse in the middle of the crop."""
    yy, xx = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
    inside = ((xx - (size - 1) / 2) / (0.35 * size)) ** 2 + ((yy - 0.55 * size) / (0.45 * size)) ** 2 <= 1
    return inside.float().expand(n, 1, size, size).contiguous()


# ---------------------------------------------------------------- registry


def test_every_metric_is_registered_with_a_direction():
    expected = {
        "identity_similarity": "higher",
        "identity_retrieval": "higher",
        "pose_error": "lower",
        "expression_error": "lower",
        "masked_ssim": "higher",
        "masked_psnr": "higher",
        "masked_l1": "lower",
        "sharpness_ratio": "one",
        "frechet_distance": "lower",
        "kernel_distance": "lower",
        "landmark_jitter": "lower",
        "identity_drift": "lower",
        "flicker": "lower",
        "warped_flicker": "lower",
        "roc_auc": "lower",
        "occluder_error": "lower",  # tests/test_families.py
    }
    assert set(METRICS.names()) == set(expected)
    assert {name: better(name) for name in expected} == expected
    for name in expected:
        assert METRICS.get(name).__doc__, name
    # Quantities the evaluator composes from metrics have their directions in the same place.
    assert direction("detectability_auc") == "lower" and direction("no_face_in_swap") == "lower"
    assert direction("target_identity_similarity/lfw-arcface") == "reference"
    assert direction("identity_retrieval/dlib-resnet top5") == "higher"
    assert direction("masked_ssim/src") == "higher" and direction("unheard_of") == "reference"


def test_compute_runs_a_metric_by_name_and_summaries_are_plain_floats():
    a = torch.full((2, 3, 8, 8), 0.5)
    result = compute("masked_l1", pred=a + 0.25, target=a)
    assert isinstance(result, PerItem)
    np.testing.assert_allclose(result.values, [0.25, 0.25])
    assert summarize(result) == {"mean": pytest.approx(0.25)}
    assert summarize(KernelDistance(0.5, 0.1)) == {"mean": 0.5, "std": 0.1}
    assert summarize({"top1": 1}) == {"top1": 1.0}
    assert summarize(np.float32(2.0)) == {"value": 2.0}
    with pytest.raises(KeyError, match="Did you mean 'masked_l1'"):
        compute("masked_l2", pred=a, target=a)


# ---------------------------------------------------------------- identity


def test_identity_similarity_is_the_cosine_of_each_pair():
    swaps = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    sources = np.array([[0.0, 1.0], [2.0, 2.0], [-3.0, -4.0]])
    result = identity_similarity(swaps, sources)
    np.testing.assert_allclose(result.values, [0.0, 1.0, -1.0], atol=1e-12)
    assert result.mean == pytest.approx(0.0)
    # One source broadcasts to every swap; tensors are accepted.
    np.testing.assert_allclose(
        identity_similarity(torch.tensor(swaps), torch.tensor([1.0, 0.0])).values, [1.0, 1 / 2**0.5, 0.6]
    )
    with pytest.raises(ValueError, match="do not pair up"):
        identity_similarity(swaps, sources[:2])


def clustered_gallery(identities: int, per_identity: int, dim: int = 128, noise: float = 0.3, seed: int = 0):
    """Embeddings around random unit centres: (identities * per_identity, dim) and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(identities, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat([f"person_{i:02d}" for i in range(identities)], per_identity)
    members = np.repeat(centres, per_identity, axis=0) + noise / dim**0.5 * rng.normal(size=(len(labels), dim))
    return members, labels


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_retrieval_of_gallery_members_is_perfect_and_shuffled_labels_fall_to_chance(distance):
    gallery, labels = clustered_gallery(identities=20, per_identity=20)
    assert identity_retrieval(gallery, gallery, labels, labels, distance=distance) == {"top1": 1.0, "top5": 1.0}
    shuffled = np.random.default_rng(1).permutation(labels)
    result = identity_retrieval(gallery, gallery, labels, shuffled, distance=distance)
    # Chance is k / 20 identities: 0.05 and 0.25; 400 queries put the binomial sd near 0.011 and 0.022.
    assert result["top1"] == pytest.approx(0.05, abs=0.035)
    assert result["top5"] == pytest.approx(0.25, abs=0.07)


def test_retrieval_ranks_identities_by_their_mean_embedding():
    # Person A's photos sit at x = 0 and x = 4 (mean 2), B's single photo at x = 5. A query at 3.9 is
    # nearest to one of A's photos but nearer B's mean (1.1) than A's (1.9): the mean decides.
    gallery = np.array([[0.0, 0.0], [4.0, 0.0], [5.0, 0.0]])
    labels = ["A", "A", "B"]
    result = identity_retrieval([[3.9, 0.0]], gallery, labels, ["A"], k=(1, 2), distance="euclidean")
    assert result == {"top1": 0.0, "top2": 1.0}
    # Cosine ignores length, Euclidean does not: (10, 1) points along A's mean (1, 0) but lies nearer
    # B's mean (5, 5).
    gallery = np.array([[1.0, 0.0], [5.0, 5.0]])
    assert identity_retrieval([[10.0, 1.0]], gallery, ["A", "B"], ["A"], k=(1,))["top1"] == 1.0
    assert identity_retrieval([[10.0, 1.0]], gallery, ["A", "B"], ["A"], k=(1,), distance="euclidean")["top1"] == 0.0


def test_retrieval_counts_ties_against_the_swap_and_refuses_impossible_requests():
    gallery = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert identity_retrieval([[1.0, 0.1]], gallery, [0, 1, 2], [0], k=(1, 2)) == {"top1": 0.0, "top2": 1.0}
    with pytest.raises(ValueError, match=r"k=\(1, 5\) must lie in 1..3"):
        identity_retrieval([[1.0, 0.1]], gallery, [0, 1, 2], [0])
    with pytest.raises(ValueError, match="not in the gallery: 7"):
        identity_retrieval([[1.0, 0.1]], gallery, [0, 1, 2], [7], k=(1,))


@pytest.fixture(scope="module")
def faces5(lfw: Path, hog) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Two photos each of four LFW people: images (8, 250, 250, 3), 5-point landmarks, names."""
    predictor = LANDMARKERS.create("dlib-5")
    images, points, names = [], [], []
    for person in PEOPLE:
        for k in (1, 2):
            image = iio.imread(lfw / person / f"{person}_{k:04d}.jpg")
            box = max(hog.detect(image), key=lambda b: b.area)
            images.append(image)
            points.append(predictor.landmarks(image, box))
            names.append(person)
    return np.stack(images), np.stack(points), names


def test_identity_features_are_the_dlib_port_on_chips_cut_here_or_given(faces5):
    images, points, names = faces5
    net = load_dlib_identity()
    chips = np.stack([dlib_chip(image, p) for image, p in zip(images, points)])
    features = identity_features(chips, batch_size=3)
    embeddings = identity_features(chips, layer="embedding")
    assert features.shape == (8, 256) and embeddings.shape == (8, 128) and features.dtype == np.float32
    with torch.inference_mode():
        expected = net(to_tensor(chips)).numpy()
        np.testing.assert_allclose(net.fc(torch.from_numpy(features)).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)
    # Cutting the chips here (float images + landmarks) agrees with dlib's own chips to dlib's tolerance.
    cut = identity_features(to_tensor(images), landmarks5=points, layer="embedding")
    with torch.inference_mode():
        kornia_chips = net(chip_from_landmarks(to_tensor(images), points)).numpy()
    np.testing.assert_allclose(cut, kornia_chips, atol=1e-5)
    assert np.linalg.norm(cut - expected, axis=1).max() < 0.05
    # Each person's second photo is more similar to their first than to anyone else's.
    first, second = embeddings[0::2], embeddings[1::2]
    same = identity_similarity(second, first).values
    other = identity_similarity(second, np.roll(first, 1, axis=0)).values
    assert (same > other).all()
    assert identity_retrieval(second, first, names[0::2], names[1::2], k=(1,))["top1"] == 1.0
    with pytest.raises(ValueError, match="not 150 px identity chips"):
        identity_features(images)


# ---------------------------------------------------------------- pose and expression


def test_pose_error_of_a_face_with_itself_is_zero(turned_landmarks):
    result = pose_error(turned_landmarks, turned_landmarks, (250, 250))
    np.testing.assert_array_equal(result.values, 0.0)


def test_mirrored_face_gives_the_pose_error_of_negated_yaw_and_roll(turned_landmarks):
    yaw, _, roll = head_poses(turned_landmarks, (250, 250)).T
    assert (np.abs(yaw) > 15).all()
    mirrored = mirror_landmarks(turned_landmarks, 250)
    result = pose_error(turned_landmarks, mirrored, (250, 250))
    # (yaw, pitch, roll) -> (-yaw, pitch, -roll): the L2 error is |(2 yaw, 0, 2 roll)|.
    np.testing.assert_allclose(result.values, 2 * np.hypot(yaw, roll), atol=0.05)
    assert pose_error(turned_landmarks[0], mirrored[0], (250, 250)).values.shape == (1,)


def similarity_copy(points: np.ndarray, scale: float, degrees: float, shift: tuple[float, float]) -> np.ndarray:
    angle = np.radians(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return points @ (scale * rotation).T + np.asarray(shift)


#: The lower lip (outer 55-59, inner 65-67): what moves when the mouth opens.
LOWER_LIP = [55, 56, 57, 58, 59, 65, 66, 67]


def test_expression_error_ignores_similarity_transforms_and_sees_an_opened_mouth(turned_landmarks):
    target = turned_landmarks.astype(np.float64)
    assert expression_error(target, target).values.max() < 1e-12
    moved = similarity_copy(target, scale=1.7, degrees=25.0, shift=(40.0, -13.0))
    assert expression_error(target, moved).values.max() < 1e-9

    opened = target.copy()
    drop = 0.3 * inter_ocular_distance(target)  # the lower lip drops by 0.3 eye spans
    opened[:, LOWER_LIP, 1] += drop[:, None]
    # The alignment points (nose, eye corners) did not move, so the fit is the identity and the
    # error is 8 of the 42 measured points moved by 0.3 eye spans.
    expected = len(LOWER_LIP) * 0.3 / len(EXPRESSION_POINTS_68)
    np.testing.assert_allclose(expression_error(target, opened).values, expected, rtol=1e-9)
    # ... and stays so for a scaled, rotated copy of the opened face.
    opened_moved = similarity_copy(opened, scale=0.6, degrees=-40.0, shift=(5.0, 9.0))
    np.testing.assert_allclose(expression_error(target, opened_moved).values, expected, rtol=1e-6)
    # Aligning on all 68 points lets the moved lip pull the fit: eyes and brows, which did not
    # move, then show an error too.
    eyes_and_brows = [*range(17, 27), *range(36, 48)]
    assert expression_error(target, opened, measure_indices=eyes_and_brows).values.max() < 1e-9
    assert (expression_error(target, opened, range(68), eyes_and_brows).values > 0.01).all()


# ---------------------------------------------------------------- reconstruction and sharpness


def test_an_image_against_itself_is_perfect(crops):
    images, masks = to_tensor(crops), ellipse_masks(4)
    np.testing.assert_allclose(masked_ssim(images, images, masks).values, 1.0, atol=1e-5)
    np.testing.assert_array_equal(masked_psnr(images, images, masks).values, 100.0)
    assert np.isinf(masked_psnr(images, images, masks, max_db=float("inf")).values).all()
    np.testing.assert_array_equal(masked_l1(images, images, masks).values, 0.0)


def test_a_constant_offset_gives_the_hand_computed_psnr_l1_and_ssim():
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.uniform(0.2, 0.8, size=(3, 3, 32, 32))).float()
    masks = torch.zeros(3, 1, 32, 32)
    masks[:, :, 8:24, 4:30] = 1.0
    offset = torch.tensor([0.1, 0.05, 0.01]).view(3, 1, 1, 1)
    # L1 = offset; MSE = offset^2, so PSNR = 10 log10(1 / offset^2) = 20, 26.02, 40 dB.
    np.testing.assert_allclose(masked_l1(target + offset, target, masks).values, [0.1, 0.05, 0.01], rtol=1e-5)
    np.testing.assert_allclose(
        masked_psnr(target + offset, target, masks).values, [20.0, 20 * np.log10(20), 40.0], rtol=1e-5
    )
    # Flat images: SSIM's structure term is 1, the luminance term (2ab + c1) / (a^2 + b^2 + c1).
    flat = torch.full((1, 3, 32, 32), 0.5)
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)
    # kornia's float32 variances (E[x^2] - E[x]^2) are off by ~1e-8, which c2 = 9e-4 turns into ~3e-5.
    assert masked_ssim(flat + 0.1, flat).values[0] == pytest.approx(expected, rel=1e-4)
    assert masked_ssim(flat.double() + 0.1, flat).values[0] == pytest.approx(expected, rel=1e-8)  # eps 1e-12


def test_pixels_outside_the_mask_do_not_matter(crops):
    images, masks = to_tensor(crops), ellipse_masks(4)
    pred = (images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    scrambled = torch.where(masks > 0, pred, torch.rand(pred.shape, generator=torch.Generator().manual_seed(1)))
    for metric in (masked_psnr, masked_l1):
        np.testing.assert_array_equal(metric(scrambled, images, masks).values, metric(pred, images, masks).values)
    # SSIM's 11 px window reaches 5 px beyond the mask: scrambling farther out changes nothing,
    # scrambling the rim does.
    grown = kornia.morphology.dilation(masks, torch.ones(11, 11))
    far = torch.where(grown > 0, pred, scrambled)
    np.testing.assert_array_equal(masked_ssim(far, images, masks).values, masked_ssim(pred, images, masks).values)
    assert (masked_ssim(scrambled, images, masks).values < masked_ssim(pred, images, masks).values).all()
    # Without a mask the same scrambling counts everywhere.
    assert (masked_l1(scrambled, images).values > masked_l1(pred, images).values).all()


def test_bad_masks_are_refused():
    images = torch.rand(2, 3, 16, 16)
    masks = torch.ones(2, 1, 16, 16)
    masks[1] = 0
    with pytest.raises(ValueError, match=r"mask is empty for image\(s\) \[1\]"):
        masked_l1(images, images, masks)
    with pytest.raises(ValueError, match="mask must be N x 1 x H x W"):
        masked_psnr(images, images, torch.ones(2, 16, 16))
    with pytest.raises(ValueError, match="one shape"):
        masked_ssim(images, images[:1])


def test_sharpness_ratio_is_one_for_the_image_and_well_below_for_a_blurred_copy(crops):
    images, masks = to_tensor(crops), ellipse_masks(4)
    np.testing.assert_array_equal(sharpness_ratio(images, images, masks).values, 1.0)
    blurred = kornia.filters.gaussian_blur2d(images, (11, 11), (1.5, 1.5))
    ratio = sharpness_ratio(blurred, images, masks).values
    assert (ratio < 0.25).all()  # measured 0.05-0.15 on these faces
    more_blur = sharpness_ratio(kornia.filters.gaussian_blur2d(images, (11, 11), (2.5, 2.5)), images, masks)
    assert (more_blur.values < ratio).all()
    noisy = images + 0.03 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    assert (sharpness_ratio(noisy, images, masks).values > 1.5).all()


def test_laplacian_variance_matches_the_extractors_sharpness_score(crops):
    # analyze.sharpness: cv2.Laplacian of the uint8 grey crop; ours is on [0, 1] without rounding.
    ours = laplacian_variance(to_tensor(crops)).numpy() * 255.0**2
    np.testing.assert_allclose(ours, [sharpness(crop) for crop in crops], rtol=0.02)


# ---------------------------------------------------------------- distribution distances


def with_exact_moments(n: int, mean: np.ndarray, cov: np.ndarray, seed: int) -> np.ndarray:
    """n samples whose sample mean and (ddof 1) covariance are exactly ``mean`` and ``cov``."""
    z = np.random.default_rng(seed).normal(size=(n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(z, rowvar=False)))).T  # whiten exactly
    return z @ np.linalg.cholesky(cov).T + mean


def test_frechet_distance_of_identical_sets_is_zero():
    feats = np.random.default_rng(0).normal(size=(300, 64)) * 3 + 1
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)
    # More dimensions than samples (singular covariances) stays finite and zero.
    wide = feats[:40]
    assert frechet_distance(wide, wide) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_matches_the_closed_form_of_two_gaussians():
    # Diagonal covariances: |mu_a - mu_b|^2 + sum (sqrt(var_a) - sqrt(var_b))^2.
    mean_a, mean_b = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, 0.5])
    var_a, var_b = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4.0, 1.0, 0.25, 1.0])
    a = with_exact_moments(500, mean_a, np.diag(var_a), seed=1)
    b = with_exact_moments(700, mean_b, np.diag(var_b), seed=2)
    expected = 5.0 + (1.0 + 1.0 + 0.0 + 4.0)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    # One dimension: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2.
    a1 = with_exact_moments(50, np.array([2.0]), np.array([[9.0]]), seed=3)
    b1 = with_exact_moments(60, np.array([-1.0]), np.array([[1.0]]), seed=4)
    assert frechet_distance(a1, b1) == pytest.approx(9.0 + 4.0, rel=1e-9)


def test_frechet_distance_agrees_with_the_sqrtm_formula_for_general_covariances():
    rng = np.random.default_rng(5)
    factor_a, factor_b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    cov_a, cov_b = factor_a @ factor_a.T + 0.1 * np.eye(6), factor_b @ factor_b.T + 0.1 * np.eye(6)
    mean_a, mean_b = rng.normal(size=6), rng.normal(size=6)
    a = with_exact_moments(400, mean_a, cov_a, seed=6)
    b = with_exact_moments(400, mean_b, cov_b, seed=7)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
    expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * covmean)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, rel=1e-6)


def test_polynomial_mmd_on_a_hand_computed_case():
    # D = 1, k(u, v) = (u v + 1)^3. x = {0, 1}: k(0, 1) = 1. y = {2, 3}: k(2, 3) = 343.
    # Cross terms k(0, 2), k(0, 3), k(1, 2), k(1, 3) = 1, 1, 27, 64: mean 93 / 4 = 23.25.
    # MMD^2 = 1 + 343 - 2 * 23.25 = 297.5.
    x, y = np.array([[0.0], [1.0]]), np.array([[2.0], [3.0]])
    assert polynomial_mmd2(x, y) == pytest.approx(297.5)
    assert kernel_distance(x, y, subsets=5, subset_size=2) == KernelDistance(pytest.approx(297.5), 0.0)


def test_kernel_distance_of_the_same_rows_is_small_and_shrinks_as_one_over_m():
    feats = np.random.default_rng(0).normal(size=(1000, 32))
    kernel = (feats @ feats.T / 32 + 1) ** 3
    for m in (100, 1000):
        sub = feats[:m]
        k = kernel[:m, :m]
        off_diagonal = (k.sum() - np.trace(k)) / (m * (m - 1))
        expected = -2.0 / m * (np.trace(k) / m - off_diagonal)
        assert kernel_distance(sub, sub).mean == pytest.approx(expected, rel=1e-5)
    assert abs(kernel_distance(feats, feats).mean) < 0.02 * kernel_distance(feats, feats + 0.5).mean


def test_kernel_distance_is_unbiased_where_the_plain_estimate_is_not():
    # 400 independent pairs of small samples (m = 16) of one distribution: the mean estimate is 0
    # within its standard error, while the biased estimate (diagonal included) sits far above 0.
    rng = np.random.default_rng(0)
    unbiased, biased, shifted = [], [], []
    for _ in range(400):
        x, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 4))
        unbiased.append(kernel_distance(x, y, subset_size=16).mean)
        k = lambda u, v: (u @ v.T / 4 + 1) ** 3  # noqa: E731
        biased.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
        shifted.append(kernel_distance(x, y + 0.5, subset_size=16).mean)
    for values, lo, hi in ((unbiased, -4, 4), (biased, 10, np.inf), (shifted, 10, np.inf)):
        z = np.mean(values) / (np.std(values) / np.sqrt(len(values)))
        assert lo < z < hi


def test_kernel_distance_over_subsets_is_reproducible_and_reports_a_spread():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 0.3
    first = kernel_distance(a, b, subsets=20, subset_size=100, seed=3)
    assert first == kernel_distance(a, b, subsets=20, subset_size=100, seed=3)
    assert first != kernel_distance(a, b, subsets=20, subset_size=100, seed=4)
    assert first.mean > 0 and first.std > 0
    assert first.mean == pytest.approx(kernel_distance(a, b).mean, rel=0.2)


# ---------------------------------------------------------------- video


def noisy_sequence(base: np.ndarray, frames: int, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=(frames, *base.shape))
    return base[None] + sigma * noise


def test_a_static_sequence_has_no_jitter_drift_or_flicker(turned_landmarks):
    static = np.repeat(turned_landmarks[:1], 10, axis=0)
    assert landmark_jitter(static) == 0.0
    assert identity_drift(np.ones((10, 128))) == IdentityDrift(0.0, 0.0)
    frames = torch.rand(1, 3, 32, 32).expand(10, 3, 32, 32)
    assert flicker(frames) == 0.0
    assert flicker(frames, torch.ones(10, 1, 32, 32), reference_frames=frames) == 1.0


def test_jitter_drift_and_flicker_grow_in_proportion_to_per_frame_noise(turned_landmarks):
    base = turned_landmarks[0].astype(np.float64)
    iod = float(inter_ocular_distance(base))
    one, two = (landmark_jitter(noisy_sequence(base, 400, sigma)) for sigma in (0.5, 1.0))
    # Not exactly 2x: the eye distance it is scaled by comes from the noisy points themselves.
    assert two == pytest.approx(2 * one, rel=1e-3)
    # |n_t+1 - n_t| for 2-D Gaussian noise of sigma is Rayleigh with mean sqrt(pi) sigma.
    assert two == pytest.approx(np.sqrt(np.pi) * 1.0 / iod, rel=0.03)

    embedding = np.random.default_rng(1).normal(size=128)
    small, large = (identity_drift(noisy_sequence(embedding, 200, sigma)) for sigma in (0.01, 0.02))
    assert large.mean_distance == pytest.approx(2 * small.mean_distance, rel=1e-12)
    assert large.variance == pytest.approx(4 * small.variance, rel=1e-12)
    assert small.variance == pytest.approx(0.01**2 * 128 * 199 / 200, rel=0.03)

    grey = torch.full((1, 3, 24, 24), 0.5)
    noise = torch.randn((200, 3, 24, 24), generator=torch.Generator().manual_seed(0))
    low, high = flicker(grey + 0.01 * noise), flicker(grey + 0.02 * noise)
    assert high == pytest.approx(2 * low, rel=1e-5)
    assert low == pytest.approx(np.sqrt(2) * 0.01, rel=0.02)


def test_relative_video_metrics_are_one_for_the_reference_itself(turned_landmarks):
    # A head that drifts and turns slowly: the reference's own motion.
    t = np.arange(30)[:, None, None]
    target = turned_landmarks[0][None] + np.concatenate([1.5 * t, 0.5 * np.sin(t / 4.0)], axis=-1)
    assert landmark_jitter(target, reference=target) == 1.0
    assert landmark_jitter(noisy_sequence(turned_landmarks[0], 30, 2.0), reference=target) > 1.0
    static = np.repeat(turned_landmarks[:1], 30, axis=0)
    assert landmark_jitter(static, reference=static) == 1.0
    assert landmark_jitter(target, reference=static) == float("inf")

    frames = torch.linspace(0, 1, 20).view(20, 1, 1, 1) * torch.rand(1, 3, 16, 16)  # a slow fade
    masks = torch.ones(20, 1, 16, 16)
    assert flicker(frames, masks, reference_frames=frames) == 1.0
    noisy = frames + 0.05 * torch.randn(frames.shape, generator=torch.Generator().manual_seed(0))
    assert flicker(noisy, masks, reference_frames=frames) > 1.5


def test_second_order_jitter_ignores_steady_motion(turned_landmarks):
    t = np.arange(20)[:, None, None]
    sliding = turned_landmarks[0][None] + 3.0 * t  # 3 px per frame along both axes
    assert landmark_jitter(sliding) == pytest.approx(3.0 * np.sqrt(2) / inter_ocular_distance(turned_landmarks[0]))
    assert landmark_jitter(sliding, order=2) == pytest.approx(0.0, abs=1e-12)


def test_warped_flicker_tells_redrawn_detail_from_a_sharp_face_that_moves(lfw: Path) -> None:
    """Raw flicker ranks a blurred face whose detail is drawn anew every frame below a sharp face
    that moves exactly as the target does; once the target's optical flow is taken out, the order
    is right (real photos, a known slow turn and drift)."""

    def crop(person: str) -> np.ndarray:
        image = iio.imread(lfw / person / f"{person}_0001.jpg")
        return image[70:182, 70:182].astype(np.float32) / 255

    def turning(image: np.ndarray) -> np.ndarray:
        moved = []
        for t in range(16):
            matrix = cv2.getRotationMatrix2D((56, 56), 0.5 * t, 1.0)
            matrix[:, 2] += (1.3 * t, 0.7 * t)
            moved.append(
                cv2.warpAffine(image, matrix, (112, 112), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
            )
        return np.stack(moved)[:, 16:96, 16:96]

    rng = np.random.default_rng(0)
    lit = lambda video: video + rng.normal(0, 0.004, video.shape).astype(np.float32)  # noqa: E731
    as_tensor = lambda video: torch.from_numpy(np.clip(video, 0, 1)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    target = as_tensor(lit(turning(crop("Colin_Powell"))))
    other = crop("George_W_Bush")
    sharp = as_tensor(lit(turning(other)))
    redrawn = lit(turning(cv2.GaussianBlur(other, (0, 0), 2.0)))
    redrawn += np.stack(
        [cv2.GaussianBlur(rng.normal(0, 0.03, (80, 80, 3)).astype(np.float32), (0, 0), 0.7) for _ in redrawn]
    )
    redrawn = as_tensor(redrawn)
    masks = torch.zeros(16, 1, 80, 80)
    masks[:, :, 10:70, 10:70] = 1
    assert warped_flicker(target, target, masks) == 1.0
    assert flicker(redrawn, masks, target) < flicker(sharp, masks, target)  # the raw measure's mistake
    assert warped_flicker(redrawn, target, masks) > 2 * warped_flicker(sharp, target, masks)
    assert warped_flicker(sharp, target, masks) < 1.0
    with pytest.raises(ValueError, match="reference frames alike"):
        warped_flicker(sharp, target[:8], masks)


def test_flicker_counts_only_pixels_inside_both_masks():
    frames = torch.full((4, 3, 16, 16), 0.5)
    frames[1::2, :, :, 8:] = 0.9  # the right half blinks every frame
    masks = torch.zeros(4, 1, 16, 16)
    masks[:, :, :, :8] = 1.0
    assert flicker(frames, masks) == 0.0
    assert flicker(frames) == pytest.approx(0.4 / np.sqrt(2), rel=1e-6)  # half the pixels change by 0.4


# ---------------------------------------------------------------- detectability


def test_roc_auc_on_a_hand_computed_case_with_ties():
    real = [0.1, 0.4, 0.35, 0.8]
    fake = [0.8, 0.9, 0.4, 0.2]
    # Pairs (fake beats real = 1, tie = 1/2): 0.8 -> 3.5, 0.9 -> 4, 0.4 -> 2.5, 0.2 -> 1; 11 of 16.
    assert roc_auc(real, fake) == pytest.approx(11 / 16)
    assert roc_auc(fake, real) == pytest.approx(5 / 16)
    assert roc_auc([0, 1, 2], [3, 4]) == 1.0
    assert roc_auc([3, 4], [0, 1, 2]) == 0.0
    assert roc_auc([1, 1, 1], [1, 1]) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([], [1.0])


def test_roc_auc_equals_the_pairwise_count_on_many_ties():
    rng = np.random.default_rng(0)
    real, fake = rng.integers(0, 6, size=57), rng.integers(2, 9, size=43)
    pairs = [(f > r) + 0.5 * (f == r) for r, f in itertools.product(real, fake)]
    assert roc_auc(real, fake) == pytest.approx(np.mean(pairs), rel=1e-12)
    assert roc_auc(torch.tensor(real), torch.tensor(fake)) == pytest.approx(np.mean(pairs), rel=1e-12)
