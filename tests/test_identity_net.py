"""swaplab's own identity network: shapes, the margin, the verification maths, the cache, the split, resume."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from swaplab.config import apply_overrides
from swaplab.faces.identity import IDENTITY_ENCODERS
from swaplab.faces.lfw_identity import (
    PRESET_ENV,
    WEIGHTS_ENV,
    CompactFaceNet,
    MarginHead,
    load_identity_weights,
    margin_logits,
    user_cache_dir,
)
from swaplab.faces.lfw_identity_train import (
    ChipAugmentConfig,
    augment_chips,
    batch_indices,
    best_threshold,
    build_chip_set,
    cache_key,
    lfw_view1,
    pair_scores,
    preset_config,
    read_pairs,
    roc_auc,
    train_identity_net,
    verification_accuracy,
    weights_path,
)
from swaplab.train.oneshot_data import SplitError
from swaplab.train.run import RunConfigMismatch


def _lfw_like(tmp_path: Path, lfw: Path, people: dict[str, int]) -> Path:
    """A folder shaped like LFW: the real photos (linked), the real evaluation list, our own people list."""
    root = tmp_path / "lfw"
    root.mkdir()
    (root / "lfw-deepfunneled").symlink_to(lfw)
    shutil.copy(lfw.parent / "peopleDevTest.txt", root / "peopleDevTest.txt")
    lines = [str(len(people))] + [f"{name}\t{count}" for name, count in people.items()]
    (root / "mine.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def test_chips(lfw: Path):
    cfg = preset_config("test")
    return build_chip_set(cfg.data, cfg.net, progress=False)


# -- the network and the head -----------------------------------------------------------------
def test_embeddings_are_unit_length_flip_invariant_and_features_are_pooled() -> None:
    torch.manual_seed(0)
    net = CompactFaceNet().eval()
    chips = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        embeddings = net(chips)
        features = net.features(chips)
        mirrored = net(chips.flip(-1))
    assert embeddings.shape == (3, 128) and features.shape == (3, 256)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(3), atol=1e-6)
    # forward averages the chip and its mirror image, so mirroring the input changes nothing
    assert torch.allclose(embeddings, mirrored, atol=1e-5)
    assert net.chip_size == 64 and net.chip_padding == 0.2
    with pytest.raises(ValueError, match="64 x 64 chips"):
        net(torch.rand(1, 3, 150, 150))


def test_default_network_is_compact() -> None:
    parameters = sum(p.numel() for p in CompactFaceNet().parameters())
    assert 1.5e6 < parameters < 3e6


def test_arcface_margin_on_a_hand_computed_case() -> None:
    cosine = torch.tensor([[0.6, 0.2, -0.1], [0.3, -0.95, 0.5]])
    labels = torch.tensor([0, 1])
    logits = margin_logits(cosine, labels, margin=0.5, scale=10.0, kind="arcface")
    # cos(acos(0.6) + 0.5) = 0.6 cos 0.5 - 0.8 sin 0.5
    expected_first = 0.6 * math.cos(0.5) - 0.8 * math.sin(0.5)
    assert logits[0, 0].item() == pytest.approx(10 * expected_first, abs=1e-4)
    assert logits[0, 0].item() == pytest.approx(1.4300916, abs=1e-4)
    # acos(-0.95) + 0.5 > pi: the angle is capped at pi, the logit at -scale
    assert logits[1, 1].item() == pytest.approx(-10.0, abs=1e-4)
    # other classes keep scale * cosine
    assert torch.allclose(logits[0, 1:], torch.tensor([2.0, -1.0]))
    assert torch.allclose(logits[1, [0, 2]], torch.tensor([3.0, 5.0]))
    cosface = margin_logits(cosine, labels, margin=0.35, scale=10.0, kind="cosface")
    assert cosface[0, 0].item() == pytest.approx(2.5, abs=1e-5)
    assert cosface[1, 1].item() == pytest.approx(-13.0, abs=1e-5)


def test_margin_head_cosines_against_its_class_centres() -> None:
    head = MarginHead(embedding_dim=2, num_classes=2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    embeddings = torch.tensor([[1.0, 1.0]])
    assert torch.allclose(head.cosine(embeddings), torch.full((1, 2), 1 / math.sqrt(2)), atol=1e-6)
    logits = head(embeddings, torch.tensor([0]), margin=0.0)
    assert torch.allclose(logits, torch.full((1, 2), head.config.scale / math.sqrt(2)), atol=1e-4)


# -- verification maths -------------------------------------------------------------------------
def _unit(angle_deg: float) -> np.ndarray:
    return np.array([math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))])


def test_verification_accuracy_on_constructed_embeddings() -> None:
    # pairs at known angles: cosine = cos(angle difference)
    angles = [(0, 10), (30, 50), (0, 70), (10, 100), (0, 40), (20, 160)]
    same = np.array([True, True, True, False, False, False])
    a = np.stack([_unit(x) for x, _ in angles]) * 3.0  # scale must not matter
    b = np.stack([_unit(y) for _, y in angles])
    scores = pair_scores(a, b)
    expected = np.cos(np.radians([10, 20, 70, 90, 40, 140]))
    np.testing.assert_allclose(scores, expected, atol=1e-12)
    # at 0.5 (60 degrees): pair 3 (70 deg, same) is missed and pair 5 (40 deg, different) accepted
    assert verification_accuracy(scores, same, 0.5) == pytest.approx(4 / 6)
    assert verification_accuracy(scores, same, 0.9) == pytest.approx(5 / 6)  # only the 70-degree pair wrong


def test_best_threshold_separable_and_against_brute_force() -> None:
    scores = np.array([0.9, 0.8, 0.6, 0.1, 0.2, 0.4])
    same = np.array([1, 1, 1, 0, 0, 0], bool)
    threshold, accuracy = best_threshold(scores, same)
    assert accuracy == 1.0 and threshold == pytest.approx(0.5)
    rng = np.random.default_rng(3)
    for _ in range(20):
        same = rng.random(40) < 0.5
        scores = np.round(rng.normal(size=40) + same, 2)  # rounded: ties happen
        threshold, accuracy = best_threshold(scores, same)
        grid = np.linspace(scores.min() - 1, scores.max() + 1, 4001)
        brute = max(verification_accuracy(scores, same, t) for t in grid)
        assert accuracy == pytest.approx(brute)
        assert verification_accuracy(scores, same, threshold) == pytest.approx(accuracy)


def test_roc_auc_known_values() -> None:
    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0], bool)) == 1.0
    assert roc_auc(np.array([0.9, 0.1, 0.8, 0.2]), np.array([1, 1, 0, 0], bool)) == 0.5
    assert roc_auc(np.array([0.5, 0.5]), np.array([1, 0], bool)) == 0.5  # a tie counts one half


def test_read_pairs_view1(shared_data: Path) -> None:
    pairs = read_pairs(shared_data / "lfw" / "pairsDevTest.txt")
    assert len(pairs) == 1000
    assert sum(a == b for a, _, b, _ in pairs) == 500
    assert pairs[0] == ("Abdullah_Gul", 13, "Abdullah_Gul", 14)


# -- data, split and augmentation ----------------------------------------------------------------
def test_training_refuses_evaluation_split_people(tmp_path: Path, lfw: Path, test_chips) -> None:
    root = _lfw_like(tmp_path, lfw, {"Aaron_Peirsol": 4, "Abdullah_Gul": 19})
    cfg = apply_overrides(
        preset_config("test"), [f"data.lfw_dir={root}", "data.people=mine.txt", f"run_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(SplitError, match="1 people of peopleDevTest.txt.*Abdullah_Gul"):
        train_identity_net(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
    # a prepared chip set is checked too
    test_chips_with_intruder = test_chips.subset(np.arange(len(test_chips)))
    test_chips_with_intruder.people[0] = "Abdullah_Gul"
    with pytest.raises(SplitError, match="Abdullah_Gul"):
        train_identity_net(preset_config("test"), chips=test_chips_with_intruder)


def test_chip_set_of_the_test_preset(test_chips) -> None:
    summary = test_chips.summary()
    assert summary["people"] == 12 and 40 <= summary["images"] <= 48
    assert test_chips.chips.shape[1:] == (32, 32, 3) and test_chips.chips.dtype == np.uint8
    assert test_chips.landmarks.shape == (len(test_chips), 5, 2)
    assert set(test_chips.labels.tolist()) == set(range(12))


def test_training_chips_are_the_evaluators_chips(test_chips, lfw: Path) -> None:
    from swaplab.evaluate.evaluator import embed_faces
    from swaplab.io.images import read_image

    torch.manual_seed(0)
    net = CompactFaceNet(preset_config("test").net).eval()
    rows = [0, 5, 9]
    images = [read_image(lfw / test_chips.files[r])[0] for r in rows]
    evaluator = embed_faces(images, [test_chips.landmarks[r] for r in rows], net)
    with torch.no_grad():
        chips = torch.from_numpy(test_chips.chips[rows]).permute(0, 3, 1, 2).float().div(255.0)
        ours = net(chips).numpy()
    # the stored chips differ from the evaluator's only by rounding to uint8
    assert np.abs(evaluator - ours).max() < 0.02
    assert (pair_scores(evaluator, ours) > 0.999).all()


def test_augmentation_off_is_identity_and_flip_mirrors() -> None:
    chips = torch.rand(4, 3, 16, 16)
    off = ChipAugmentConfig(0, 0, 0, 0, 0, 0, 0)
    assert torch.equal(augment_chips(chips, off, torch.Generator().manual_seed(0)), chips)
    flip = ChipAugmentConfig(1.0, 0, 0, 0, 0, 0, 0)
    assert torch.equal(augment_chips(chips, flip, torch.Generator().manual_seed(0)), chips.flip(-1))
    default = ChipAugmentConfig()
    first = augment_chips(chips, default, torch.Generator().manual_seed(7))
    again = augment_chips(chips, default, torch.Generator().manual_seed(7))
    assert torch.equal(first, again) and not torch.equal(first, chips)
    assert first.min() >= 0 and first.max() <= 1


def test_batch_indices_walk_whole_epochs() -> None:
    seen = np.concatenate([batch_indices(12, 4, step, seed=1) for step in range(3)])
    assert sorted(seen.tolist()) == list(range(12))
    crossing = batch_indices(10, 4, 2, seed=1)  # rows 8, 9 of epoch 0 and two of epoch 1
    assert len(crossing) == 4
    assert np.array_equal(batch_indices(10, 4, 2, seed=1), crossing)
    assert not np.array_equal(batch_indices(12, 4, 0, seed=2), batch_indices(12, 4, 0, seed=1))


# -- training, resume and the cache -----------------------------------------------------------------
def _state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_resume_after_interruption_is_exact(tmp_path: Path, test_chips, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = apply_overrides(preset_config("test"), [f"run_dir={tmp_path / 'whole'}"])
    straight = train_identity_net(whole, chips=test_chips)
    assert straight.step == 6 and straight.stop_reason == "steps"

    # kill the run during step 5: the last checkpoint is step 3's, step 4 was logged but is lost
    import swaplab.faces.lfw_identity_train as training

    parts = apply_overrides(preset_config("test"), [f"run_dir={tmp_path / 'parts'}"])
    calls = {"n": 0}
    original = training.augment_chips

    def dies_at_fifth_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "augment_chips", dies_at_fifth_batch)
    with pytest.raises(KeyboardInterrupt):
        train_identity_net(parts, chips=test_chips)
    monkeypatch.setattr(training, "augment_chips", original)
    assert (tmp_path / "parts" / "checkpoints" / "step-0000003").is_dir()
    resumed = train_identity_net(parts, chips=test_chips)
    assert resumed.start_step == 3 and resumed.step == 6
    a, b = _state(straight.net), _state(resumed.net)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    manifest = json.loads((tmp_path / "parts" / "manifest.json").read_text())
    assert [s["start_step"] for s in manifest["sessions"]] == [0, 3]
    rows = [json.loads(line) for line in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if "val/threshold" in r] == [6]  # held-out people, at the end
    assert (tmp_path / "parts" / "curves.png").is_file()

    changed = apply_overrides(parts, ["head.margin=0.1"])
    with pytest.raises(RunConfigMismatch, match="head.margin"):
        train_identity_net(changed, chips=test_chips)


def test_cache_round_trip_and_user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert os.environ.get(PRESET_ENV) == "test", "tests/conftest.py must select the test preset"
    monkeypatch.setenv("SWAPLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert user_cache_dir() == tmp_path / "cache"
    net = IDENTITY_ENCODERS.create("lfw-arcface")  # no cache: trains the test preset
    path = weights_path(preset_config("test"))
    assert path.is_file() and path.parent.name == f"lfw-arcface-{cache_key(preset_config('test'))}"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["format"] == "swaplab-identity-net" and meta["training"]["steps"] == 6
    assert meta["cache_key"] == cache_key(preset_config("test"))
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    # the same-person threshold calibrated on the 3 held-out people travels with the weights
    assert isinstance(net.cosine_threshold, float) and -1.0 <= net.cosine_threshold <= 1.0
    assert meta["cosine_threshold"] == net.cosine_threshold
    assert meta["data"]["validation_people"] == 3 and meta["data"]["people"] == 9

    chips = torch.rand(5, 3, net.chip_size, net.chip_size)
    with torch.no_grad():
        before = net(chips)
    # a second call loads the cached file and must not train
    import swaplab.faces.lfw_identity_train as training

    monkeypatch.setattr(training, "train_and_export", lambda *a, **k: pytest.fail("trained again"))
    with torch.no_grad():
        assert torch.equal(IDENTITY_ENCODERS.create("lfw-arcface")(chips), before)
        reloaded = load_identity_weights(path).eval()
        assert torch.equal(reloaded(chips), before)
        assert reloaded.cosine_threshold == net.cosine_threshold
    # a file the user gives, by environment variable (architecture read from the file itself)
    given = tmp_path / "mine" / "weights.safetensors"
    given.parent.mkdir()
    shutil.copy(path, given)
    monkeypatch.setenv(WEIGHTS_ENV, str(given))
    with torch.no_grad():
        assert torch.equal(IDENTITY_ENCODERS.create("lfw-arcface")(chips), before)


def test_cache_key_ignores_where_data_lives_but_not_what_is_trained() -> None:
    base = preset_config("default")
    moved = apply_overrides(base, ["data.lfw_dir=/elsewhere", "data.facesets=[/x]", "trainer.threads=1"])
    assert cache_key(moved) == cache_key(base)
    assert cache_key(apply_overrides(base, ["trainer.steps=10"])) != cache_key(base)
    assert cache_key(apply_overrides(base, ["net.chip_size=80"])) != cache_key(base)


def test_missing_lfw_names_the_fetch_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWAPLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SWAPLAB_DATA", str(tmp_path / "no-data"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="swaplab data fetch lfw"):
        IDENTITY_ENCODERS.create("lfw-arcface")
    with pytest.raises(FileNotFoundError, match="no trained lfw-arcface weights"):
        IDENTITY_ENCODERS.create("lfw-arcface", train_if_missing=False)


def test_lfw_view1_on_a_small_pair_list(tmp_path: Path, lfw: Path) -> None:
    root = _lfw_like(tmp_path, lfw, {"Aaron_Peirsol": 4})
    train = ["3", "Aaron_Peirsol\t1\t2", "Colin_Powell\t1\t2", "Tony_Blair\t1\t2"]
    train += ["Aaron_Peirsol\t1\tColin_Powell\t1", "Colin_Powell\t2\tTony_Blair\t1", "Tony_Blair\t2\tAaron_Peirsol\t2"]
    test = ["2", "George_W_Bush\t1\t2", "Gerhard_Schroeder\t1\t2"]
    test += ["George_W_Bush\t1\tGerhard_Schroeder\t1", "Gerhard_Schroeder\t2\tGeorge_W_Bush\t2"]
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "test.txt").write_text("\n".join(test) + "\n")
    results = lfw_view1(["dlib-resnet"], lfw=root, train_pairs="train.txt", test_pairs="test.txt", progress=False)
    (result,) = results
    assert result.encoder == "dlib-resnet" and (result.train_pairs, result.test_pairs) == (6, 4)
    # dlib's network separates these well-known faces completely
    assert result.train_accuracy == 1.0 and result.test_auc == 1.0
    assert 0.0 < result.threshold < 1.0
    assert result.photos_without_face == 0
