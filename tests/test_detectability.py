"""The detectability metric: a small real-vs-swapped CNN and its held-out AUC, on real LFW faces.

"Swaps" here are real faces with a known, visible manipulation inside a face ellipse (blurred and
pasted back with a hard seam, or colour-shifted), so the right answer is known: near 1. Against
other real faces of the same distribution the right answer is 0.5, within a sampling tolerance.
Training uses LFW's peopleDevTrain identities, testing peopleDevTest ones, as the protocol does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from swaplab.config import ConfigError, config_group
from swaplab.evaluate.detectability import (
    DetectabilityResult,
    detector_config,
    holdout_detectability,
    measure_detectability,
    split_groups,
    train_detector,
)
from swaplab.io.images import read_image
from swaplab.metrics import compute, direction
from swaplab.models.card import load_model
from swaplab.models.swap_detector import SwapDetector, SwapDetectorConfig, prepare_crops
from swaplab.train.export import export_model

CROP = 128  # the central 128 px of LFW's 250 px deep-funneled photos: the face and a little around it


def _people(lfw: Path, listing: str, count: int, offset: int = 0) -> list[np.ndarray]:
    """Central crops of the first photo of ``count`` people of an LFW list (file order), from ``offset``."""
    names = [line.split("\t")[0] for line in (lfw.parent / listing).read_text().splitlines()[1:]]
    crops = []
    for name in names[offset : offset + count]:
        image, _ = read_image(sorted((lfw / name).glob("*.jpg"))[0])
        start = (image.shape[0] - CROP) // 2
        crops.append(np.ascontiguousarray(image[start : start + CROP, start : start + CROP]))
    return crops


def _face_ellipse() -> np.ndarray:
    mask = np.zeros((CROP, CROP), np.uint8)
    cv2.ellipse(mask, (CROP // 2, CROP // 2 + 6), (36, 46), 0, 0, 360, 1, -1)
    return mask[..., None].astype(bool)


def _manipulate(crop: np.ndarray, kind: str) -> np.ndarray:
    """A crude "swap": the face ellipse blurred (sigma 2 px) or colour-shifted, pasted back with a hard seam."""
    if kind == "blur":
        inside = cv2.GaussianBlur(crop, (0, 0), 2.0)
    else:
        inside = np.clip(crop * np.array([1.15, 1.0, 0.85]), 0, 255).round().astype(np.uint8)
    return np.where(_face_ellipse(), inside, crop)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def train_faces(lfw: Path) -> list[np.ndarray]:
    return _people(lfw, "peopleDevTrain.txt", 120)


@pytest.fixture(scope="module")
def devtest_faces(lfw: Path) -> list[np.ndarray]:
    return _people(lfw, "peopleDevTest.txt", 200)


@pytest.fixture(scope="module")
def blur_run(train_faces, devtest_faces, tmp_path_factory) -> tuple[DetectabilityResult, Path, list[np.ndarray]]:
    """60 DevTrain pairs (face, blurred-seam face) to train, 40 DevTest pairs to test; detector saved."""
    config = config_group("detector").create("test")
    train_real, test_real = train_faces[:60], devtest_faces[:40]
    folder = tmp_path_factory.mktemp("detector")
    result = measure_detectability(
        train_real,
        [_manipulate(c, "blur") for c in train_real],
        test_real,
        [_manipulate(c, "blur") for c in test_real],
        config,
        train_real_groups=range(60),
        train_fake_groups=range(60),
        save_to=folder,
    )
    return result, folder, test_real


def test_a_blurred_face_pasted_with_a_seam_is_detected_on_held_out_identities(blur_run):
    result, _, _ = blur_run
    # 40 test pairs, measured 0.989: 0.95 is about 4 standard errors below (Hanley and McNeil)
    assert result.auc >= 0.95, result
    assert result.train_auc >= 0.95, result
    assert (result.n_train_real, result.n_train_fake, result.n_test_real, result.n_test_fake) == (60, 60, 40, 40)
    assert result.steps == detector_config("test").trainer.steps == 120
    summary = result.summary()
    assert summary["value"] == result.auc and "seconds" not in summary
    assert json.loads(json.dumps(result.to_json()))["config"]["model"]["resolution"] == 48


def test_pair_aware_holdout_detects_the_seam_and_keeps_pairs_together(train_faces):
    real = train_faces[:80]
    fake = [_manipulate(c, "blur") for c in real]
    result, split = holdout_detectability(real, fake, config_group("detector").create("test"), paired=True)
    # 24 test pairs: at a true AUC of 0.97 the estimate's standard error is about 0.026 (Hanley and
    # McNeil), so 0.9 leaves about 3 standard errors; measured 0.953.
    assert result.auc >= 0.9, result
    # paired: a face and its swap always land on the same side
    np.testing.assert_array_equal(split.train_real, split.train_fake)
    np.testing.assert_array_equal(split.test_real, split.test_fake)
    assert result.n_test_real == len(split.test_real) == round(0.3 * 80)


@pytest.mark.slow
def test_default_preset_detects_a_colour_shift_on_held_out_identities(train_faces, lfw):
    """The evaluation preset on 200 DevTrain pairs, tested on 100 DevTest pairs (about a minute)."""
    train_real = train_faces + _people(lfw, "peopleDevTrain.txt", 80, offset=120)
    test_real = _people(lfw, "peopleDevTest.txt", 100)
    result = measure_detectability(
        train_real,
        [_manipulate(c, "colour") for c in train_real],
        test_real,
        [_manipulate(c, "colour") for c in test_real],
        config_group("detector").create("default"),
        train_real_groups=range(200),
        train_fake_groups=range(200),
    )
    assert result.auc >= 0.9, result


def test_real_faces_against_other_real_faces_score_chance(train_faces, devtest_faces):
    """Both "classes" are first photos of different LFW people: nothing to detect, so AUC ~ 0.5.

    The detector is fixed before it sees the 100 + 100 test faces (other people than its training
    set), so under "no difference" its test AUC is a Mann-Whitney statistic with mean 0.5 and
    standard deviation sqrt((n + m + 1) / (12 n m)) = 0.041 for n = m = 100. The tolerance is 3.29
    of those (0.135): a correct detector fails it with probability 0.001. Training AUC is not
    bounded: a small CNN can memorise 120 faces, which is why the metric uses held-out swaps.
    """
    n = m = 100
    tolerance = 3.29 * math.sqrt((n + m + 1) / (12 * n * m))
    result = measure_detectability(
        train_faces[:60],
        train_faces[60:120],
        devtest_faces[:n],
        devtest_faces[n : n + m],
        config_group("detector").create("test"),
    )
    assert abs(result.auc - 0.5) <= tolerance, (result.auc, tolerance)


@pytest.mark.parametrize(("precision", "channels_last"), [("fp32", False), ("bf16", True)])
def test_same_seed_gives_the_same_scores_and_another_seed_does_not(train_faces, precision, channels_last):
    real = train_faces[:16]
    fake = [_manipulate(c, "blur") for c in real]
    config = detector_config("test", steps=6, precision=precision, channels_last=channels_last)
    torch.manual_seed(123)
    before = torch.rand(3)
    first = train_detector(real, fake, config).scores(real + fake, precision)
    torch.manual_seed(123)
    second = train_detector(real, fake, config).scores(real + fake, precision)
    assert torch.equal(torch.rand(3), before)  # the caller's global RNG is left as it was
    other = train_detector(real, fake, detector_config(config, seed=1)).scores(real + fake, precision)
    assert first.shape == (32,) and first.dtype == np.float64
    assert np.isfinite(first).all() and ((first >= 0) & (first <= 1)).all()
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_the_detector_is_a_run_of_the_shared_loop_and_exports_like_any_model(blur_run, tmp_path):
    result, folder, test_real = blur_run
    # save_to kept the detector's training run: config with its recipe, curves, a checkpoint
    assert (folder / "config.yaml").read_text().startswith("recipe: swap-detector\n")
    assert (folder / "curves.png").is_file() and (folder / "checkpoints" / "step-0000120").is_dir()
    card = json.loads(export_model(folder, tmp_path / "detector").read_text())
    assert card["recipe"] == "swap-detector" and card["model"]["widths"] == [8, 16, 32] and card["swapper"] is None
    assert "rgb_stem.0.weight" in load_file(tmp_path / "detector" / "model.safetensors")  # plain safetensors
    loaded = load_model(tmp_path / "detector")
    assert isinstance(loaded, SwapDetector) and loaded.config == result.config.model
    fake = [_manipulate(c, "blur") for c in test_real]
    # the exported detector reproduces the measured AUC exactly
    assert compute("roc_auc", scores_real=loaded.logits(test_real), scores_fake=loaded.logits(fake)) == result.auc


def test_split_keeps_groups_together():
    # 30 targets, each with 1 real crop and 2 swaps (two models), plus labels that are strings
    real_groups = [f"t{i}" for i in range(30)]
    fake_groups = [f"t{i}" for i in range(30) for _ in range(2)]
    split = split_groups(30, 60, test_fraction=0.25, seed=3, real_groups=real_groups, fake_groups=fake_groups)
    train = {real_groups[i] for i in split.train_real} | {fake_groups[i] for i in split.train_fake}
    test = {real_groups[i] for i in split.test_real} | {fake_groups[i] for i in split.test_fake}
    assert not train & test
    assert len(test) == round(0.25 * 30) and len(train) == 30 - len(test)
    assert len(split.test_fake) == 2 * len(split.test_real)
    # every index is used exactly once
    assert sorted([*split.train_real, *split.test_real]) == list(range(30))
    assert sorted([*split.train_fake, *split.test_fake]) == list(range(60))
    # the same seed draws the same split, another seed another one
    again = split_groups(30, 60, test_fraction=0.25, seed=3, real_groups=real_groups, fake_groups=fake_groups)
    np.testing.assert_array_equal(again.test_real, split.test_real)
    other = split_groups(30, 60, test_fraction=0.25, seed=4, real_groups=real_groups, fake_groups=fake_groups)
    assert not np.array_equal(other.test_real, split.test_real)


def test_split_without_groups_splits_each_class():
    split = split_groups(20, 10, test_fraction=0.5, seed=0)
    assert len(split.test_real) + len(split.test_fake) == 15
    assert len(split.train_real) + len(split.test_real) == 20 and len(split.train_fake) + len(split.test_fake) == 10


def test_split_errors():
    with pytest.raises(ValueError, match="the split left (train|test)_fake empty"):
        split_groups(2, 2, 0.5, 0, real_groups=["a", "b"], fake_groups=["a", "a"])
    with pytest.raises(ValueError, match="3 group labels for 2 crops"):
        split_groups(2, 2, real_groups=["a", "b", "c"])
    with pytest.raises(ValueError, match="test_fraction"):
        split_groups(2, 2, test_fraction=1.0)


def test_prepare_crops_accepts_every_input_format_alike():
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    as_uint8 = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
    expected = prepare_crops(arrays, 48)
    assert expected.shape == (3, 3, 48, 48) and expected.dtype == torch.uint8
    for crops in (list(arrays), as_uint8, as_uint8.float() / 255):
        assert torch.equal(prepare_crops(crops, 48), expected)
    # shrinking averages areas: 2 x 2 blocks here, exactly
    block_mean = as_uint8.float().view(3, 3, 48, 2, 48, 2).mean((3, 5))
    assert (prepare_crops(arrays, 48).float() - block_mean).abs().max() <= 0.5
    # growing works too, and a constant image stays constant
    assert torch.equal(prepare_crops(np.full((1, 20, 20, 3), 77, np.uint8), 48), torch.full((1, 3, 48, 48), 77))


def test_input_validation_errors(train_faces):
    real, config = train_faces[:4], config_group("detector").create("test")
    fake = [_manipulate(c, "blur") for c in real]
    small = [cv2.resize(c, (64, 64), interpolation=cv2.INTER_AREA) for c in fake]
    with pytest.raises(ValueError, match="real is empty"):
        train_detector([], fake, config)
    with pytest.raises(ValueError, match="test_fake is empty"):
        measure_detectability(real, fake, real, [], config)
    with pytest.raises(ValueError, match="share one input size .*fake 64x64"):
        train_detector(real, small, config)
    with pytest.raises(ValueError, match="crops of one set must share one size"):
        prepare_crops([real[0], small[0]], 48)
    with pytest.raises(ValueError, match=r"crops\[0\]: expected a uint8 H x W x 3 RGB array"):
        prepare_crops([real[0][..., :2]], 48)
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        prepare_crops(torch.zeros(2, 4, 8, 8), 48)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        prepare_crops(torch.full((1, 3, 8, 8), 255.0), 48)
    with pytest.raises(ValueError, match="numpy crops must be uint8"):
        prepare_crops(np.zeros((2, 8, 8, 3), np.float32), 48)
    with pytest.raises(ValueError, match="5 group labels for 4 crops"):
        train_detector(real, fake, config, real_groups=range(5))
    with pytest.raises(ValueError, match="appear in both training and test"):
        measure_detectability(real, fake, real, fake, config, train_real_groups=range(4), test_real_groups=range(4))
    with pytest.raises(ValueError, match="paired crops must come in equal numbers"):
        holdout_detectability(real, fake[:3], config, paired=True)


def test_config_presets_and_validation():
    from swaplab.train.entry import build_config

    default = detector_config("default")
    assert default == build_config(["model=swap-detector"])
    assert (default.trainer.steps, default.trainer.batch_size, default.augment.jpeg_prob) == (300, 32, 0.5)
    test = detector_config("test")
    assert (test.model.name, test.trainer.precision, test.trainer.channels_last) == (
        "swap-detector-test",
        "fp32",
        False,
    )
    with pytest.raises(ConfigError, match="batch_size must be >= 2"):
        build_config(["model=swap-detector", "trainer.batch_size=1"])
    with pytest.raises(ConfigError, match="too small for 4 stages"):
        SwapDetectorConfig(resolution=4)
    with pytest.raises(ConfigError, match="detector: unknown detector preset 'nope'"):
        from swaplab.config import apply_overrides
        from swaplab.evaluate.results import EvalOptions

        apply_overrides(EvalOptions(), ["detector=nope"])


def test_high_pass_branch_ignores_flat_colour_and_stays_fp32_under_bf16():
    detector = SwapDetector(SwapDetectorConfig())
    flat = torch.full((1, 3, 16, 16), 0.4)
    assert detector.residuals(flat).abs().max() < 1e-5  # zero up to 0.4 * 255 in float32
    noisy = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = detector.residuals(noisy)
    assert under_autocast.dtype == torch.float32
    assert torch.equal(under_autocast, detector.residuals(noisy))
    assert under_autocast.shape == (2, 9, 32, 32) and under_autocast.abs().max() <= 1


def test_detectability_is_scored_lower_is_better():
    assert direction("detectability_auc") == "lower"


def test_gradient_reversal_leaves_the_forward_pass_and_flips_the_gradient():
    from swaplab.models.parts.gradient_reversal import GradientReversal

    x = torch.randn(4, 3, requires_grad=True)
    layer = GradientReversal(scale=0.5)
    y = layer(x)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.5 * torch.arange(3.0).expand(4, 3))


def test_domain_adversarial_training_logs_both_losses_and_keeps_its_domain_head(train_faces, tmp_path):
    from swaplab.train.run import RunFolder

    real = train_faces[:16]
    fake = [_manipulate(c, "blur") for c in real]
    target = [cv2.GaussianBlur(c, (0, 0), 1.0) for c in train_faces[16:32]]  # another domain, unlabelled
    config = detector_config("dann", steps=4, batch_size=8, precision="fp32", channels_last=False)
    detector = train_detector(real, fake, config, run_dir=tmp_path / "run", target_domain=target)
    assert detector.domain is not None and detector.config.domain_head == 64
    rows = RunFolder(tmp_path / "run").read_metrics()
    logged = [r for r in rows if "loss/domain" in r]
    assert len(logged) >= 1 and all(np.isfinite(r["loss/domain"]) for r in logged)
    # Ganin's schedule: the reversal grows from 0 over the run
    assert [r["reversal"] for r in logged] == sorted(r["reversal"] for r in logged)
    with pytest.raises(ValueError, match="adapting detector"):
        train_detector(real, fake, detector_config("test", steps=1), target_domain=target)
