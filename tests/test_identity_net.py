"""swaplab's own identity network: shapes, the margin, the verification maths, its recipe, the build, loading.

Loading never trains: an identity network that is not built says which command builds it.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from swaplab.data.lfw import SplitError, read_pairs
from swaplab.evaluate.lfw_verification import lfw_view1
from swaplab.identity import IDENTITY_ENCODERS, embed_faces
from swaplab.identity.lfw_arcface import (
    WEIGHTS_ENV,
    CompactFaceNet,
    IdentityNetConfig,
    IdentityNetworkMissing,
    installed_weights,
    load_identity_weights,
    save_identity_weights,
)
from swaplab.losses.margin import MarginHead, margin_logits
from swaplab.metrics import roc_auc
from swaplab.metrics.verification import best_threshold, pair_scores, verification_accuracy
from swaplab.system import user_cache_dir
from swaplab.train.augment import AugmentConfig, Augmenter
from swaplab.train.identity_chips import batch_indices, build_chip_set
from swaplab.train.loop import train
from swaplab.train.recipes.identity_net import build_identity_network, identity_config
from swaplab.train.run import RunConfigMismatch

pytestmark = pytest.mark.usefixtures("one_thread")


def _lfw_like(tmp_path: Path, lfw: Path, people: dict[str, int]) -> Path:
    """A folder shaped like LFW: the real photos (linked), the real lists, our own people list."""
    root = tmp_path / "lfw"
    root.mkdir()
    (root / "lfw-deepfunneled").symlink_to(lfw)
    for name in ("peopleDevTest.txt", "peopleDevTrain.txt"):
        shutil.copy(lfw.parent / name, root / name)
    lines = [str(len(people))] + [f"{name}\t{count}" for name, count in people.items()]
    (root / "mine.txt").write_text("\n".join(lines) + "\n")
    return root


def _test_config(run_dir: Path, *overrides: str):
    return identity_config("lfw-arcface", "test", [f"run_dir={run_dir}", *overrides])


@pytest.fixture(scope="module")
def preset_chips(lfw: Path):
    cfg = identity_config("lfw-arcface", "test")
    return build_chip_set(cfg.data, cfg.model.chip_size, cfg.model.chip_padding, progress=False)


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


def test_one_roc_auc_serves_verification_and_detection() -> None:
    # roc_auc(negatives, positives): the chance that a positive (a same-person pair) outscores a negative
    assert roc_auc([0.1, 0.2], [0.9, 0.8]) == 1.0
    assert roc_auc([0.8, 0.2], [0.9, 0.1]) == 0.5
    assert roc_auc([0.5], [0.5]) == 0.5  # a tie counts one half


def test_read_pairs_view1(shared_data: Path) -> None:
    pairs = read_pairs(shared_data / "lfw" / "pairsDevTest.txt")
    assert len(pairs) == 1000
    assert sum(a == b for a, _, b, _ in pairs) == 500
    assert pairs[0] == ("Abdullah_Gul", 13, "Abdullah_Gul", 14)


# -- data, split and augmentation ----------------------------------------------------------------
def test_training_refuses_evaluation_split_people_before_writing_anything(tmp_path: Path, lfw: Path) -> None:
    root = _lfw_like(tmp_path, lfw, {"Aaron_Peirsol": 4, "Abdullah_Gul": 19})
    cfg = _test_config(tmp_path / "run", f"data.lfw_dir={root}", "data.people=mine.txt")
    with pytest.raises(SplitError, match="1 people of peopleDevTest.txt.*Abdullah_Gul"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_chip_set_of_the_test_preset(preset_chips) -> None:
    summary = preset_chips.summary()
    assert summary["people"] == 12 and 40 <= summary["images"] <= 48
    assert preset_chips.chips.shape[1:] == (32, 32, 3) and preset_chips.chips.dtype == np.uint8
    assert preset_chips.landmarks.shape == (len(preset_chips), 5, 2)
    assert set(preset_chips.labels.tolist()) == set(range(12))


def test_training_chips_are_the_evaluators_chips(preset_chips, lfw: Path) -> None:
    from swaplab.io.images import read_image

    torch.manual_seed(0)
    net = CompactFaceNet(identity_config("lfw-arcface", "test").model).eval()
    rows = [0, 5, 9]
    images = [read_image(lfw / preset_chips.files[r])[0] for r in rows]
    evaluator = embed_faces(images, [preset_chips.landmarks[r] for r in rows], net)
    with torch.no_grad():
        chips = torch.from_numpy(preset_chips.chips[rows]).permute(0, 3, 1, 2).float().div(255.0)
        ours = net(chips).numpy()
    # the stored chips differ from the evaluator's only by rounding to uint8
    assert np.abs(evaluator - ours).max() < 0.02
    assert (pair_scores(evaluator, ours) > 0.999).all()


def test_chip_augmentation_off_is_identity_and_flip_mirrors() -> None:
    chips = torch.rand(4, 3, 16, 16)
    preset = identity_config("lfw-arcface").augment
    off = AugmentConfig(warp=False, rotation_deg=0, scale=0, translation=0, brightness=0, contrast=0,
                        saturation=0, hue_deg=0, padding="reflection")  # fmt: skip
    assert torch.allclose(
        Augmenter(off)({"image": chips}, torch.Generator().manual_seed(0))["target"], chips, atol=1e-6
    )
    flip = AugmentConfig(**{**off.__dict__, "flip_prob": 1.0})
    flipped = Augmenter(flip)({"image": chips}, torch.Generator().manual_seed(0))["target"]
    assert torch.allclose(flipped, chips.flip(-1), atol=1e-6)
    first = Augmenter(preset)({"image": chips}, torch.Generator().manual_seed(7))["target"]
    again = Augmenter(preset)({"image": chips}, torch.Generator().manual_seed(7))["target"]
    assert torch.equal(first, again) and not torch.allclose(first, chips, atol=1e-3)
    assert first.min() >= 0 and first.max() <= 1


def test_batch_indices_walk_whole_epochs() -> None:
    seen = np.concatenate([batch_indices(12, 4, step, seed=1) for step in range(3)])
    assert sorted(seen.tolist()) == list(range(12))
    crossing = batch_indices(10, 4, 2, seed=1)  # rows 8, 9 of epoch 0 and two of epoch 1
    assert len(crossing) == 4
    assert np.array_equal(batch_indices(10, 4, 2, seed=1), crossing)
    assert not np.array_equal(batch_indices(12, 4, 0, seed=2), batch_indices(12, 4, 0, seed=1))


# -- the recipe on the shared loop: resume, validation, the build and loading -------------------------
def test_resume_after_interruption_is_exact(tmp_path: Path, preset_chips, monkeypatch: pytest.MonkeyPatch) -> None:
    straight = train(_test_config(tmp_path / "whole"))
    assert straight.step == 6 and straight.stop_reason == "steps" and straight.recipe == "identity-net"

    # kill the run during step 5: the last checkpoint is step 3's, step 4 was logged but is lost
    calls = {"n": 0}
    original = Augmenter.__call__

    def dies_at_fifth_batch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Augmenter, "__call__", dies_at_fifth_batch)
    with pytest.raises(KeyboardInterrupt):
        train(_test_config(tmp_path / "parts"))
    monkeypatch.setattr(Augmenter, "__call__", original)
    assert (tmp_path / "parts" / "checkpoints" / "step-0000003").is_dir()
    resumed = train(_test_config(tmp_path / "parts"))
    assert resumed.start_step == 3 and resumed.step == 6
    a = load_file(tmp_path / "whole" / "checkpoints" / "step-0000006" / "model.safetensors")
    b = load_file(tmp_path / "parts" / "checkpoints" / "step-0000006" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    manifest = json.loads((tmp_path / "parts" / "manifest.json").read_text())
    assert [s["start_step"] for s in manifest["sessions"]] == [0, 3]
    rows = [json.loads(line) for line in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if "val/threshold" in r] == [6]  # held-out people, at the end
    assert (tmp_path / "parts" / "curves.png").is_file()
    with pytest.raises(RunConfigMismatch, match="head.margin"):
        train(_test_config(tmp_path / "parts", "head.margin=0.1"))


def test_loading_never_trains_and_names_the_build_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWAPLAB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(IdentityNetworkMissing, match="swaplab identity build lfw-arcface"):
        IDENTITY_ENCODERS.create("lfw-arcface")
    assert not (tmp_path / "empty-cache").exists()


def test_build_installs_the_network_and_loading_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lfw: Path
) -> None:
    monkeypatch.setenv("SWAPLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert user_cache_dir() == tmp_path / "cache"
    path = build_identity_network("lfw-arcface", "test", progress=False)
    assert path == installed_weights() == tmp_path / "cache" / "identity" / "lfw-arcface" / "model.safetensors"
    card = json.loads(path.with_name("model.json").read_text())
    assert card["recipe"] == "identity-net" and card["step"] == 6 and card["swapper"] is None
    net = IDENTITY_ENCODERS.create("lfw-arcface")
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    # the same-person threshold calibrated on the 3 held-out people travels with the weights
    assert isinstance(net.cosine_threshold, float) and -1.0 <= net.cosine_threshold <= 1.0
    assert card["identity_network"]["cosine_threshold"] == net.cosine_threshold
    assert card["facesets"]["lfw"]["validation_people"] == 3 and card["facesets"]["lfw"]["people"] == 9
    chips = torch.rand(5, 3, net.chip_size, net.chip_size)
    with torch.no_grad():
        before = net(chips)
        assert torch.equal(load_identity_weights(path).eval()(chips), before)
    # a second build of a finished run trains nothing and installs the same weights
    assert build_identity_network("lfw-arcface", "test", progress=False) == path
    assert json.loads(path.with_name("model.json").read_text())["weights"] == card["weights"]
    # a file the user gives, by environment variable (architecture read from the file itself)
    given = tmp_path / "mine" / "weights.safetensors"
    given.parent.mkdir()
    shutil.copy(path, given)
    monkeypatch.setenv(WEIGHTS_ENV, str(given))
    with torch.no_grad():
        assert torch.equal(IDENTITY_ENCODERS.create("lfw-arcface")(chips), before)


def test_weights_cached_by_an_older_swaplab_still_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWAPLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    torch.manual_seed(1)
    net = CompactFaceNet(IdentityNetConfig(chip_size=32, widths=(8, 16), blocks=(1, 1), embedding_dim=16)).eval()
    net.cosine_threshold = 0.25
    old = tmp_path / "cache" / "identity" / "lfw-arcface-0123456789abcdef" / "model.safetensors"
    save_identity_weights(net, old, {"config": {"name": "default"}})
    loaded = IDENTITY_ENCODERS.create("lfw-arcface")
    chips = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(chips), net(chips)) and loaded.cosine_threshold == 0.25


def test_missing_lfw_names_the_fetch_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWAPLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SWAPLAB_DATA", str(tmp_path / "no-data"))
    with pytest.raises(FileNotFoundError, match="swaplab data fetch lfw"):
        build_identity_network("lfw-arcface", "test", progress=False)


def test_lfw_view1_on_a_small_pair_list(tmp_path: Path, lfw: Path) -> None:
    root = _lfw_like(tmp_path, lfw, {"Aaron_Peirsol": 4})
    train_pairs = ["3", "Aaron_Peirsol\t1\t2", "Colin_Powell\t1\t2", "Tony_Blair\t1\t2"]
    train_pairs += [
        "Aaron_Peirsol\t1\tColin_Powell\t1",
        "Colin_Powell\t2\tTony_Blair\t1",
        "Tony_Blair\t2\tAaron_Peirsol\t2",
    ]
    test = ["2", "George_W_Bush\t1\t2", "Gerhard_Schroeder\t1\t2"]
    test += ["George_W_Bush\t1\tGerhard_Schroeder\t1", "Gerhard_Schroeder\t2\tGeorge_W_Bush\t2"]
    (root / "train.txt").write_text("\n".join(train_pairs) + "\n")
    (root / "test.txt").write_text("\n".join(test) + "\n")
    results = lfw_view1(["dlib-resnet"], lfw=root, train_pairs="train.txt", test_pairs="test.txt", progress=False)
    (result,) = results
    assert result.encoder == "dlib-resnet" and (result.train_pairs, result.test_pairs) == (6, 4)
    # dlib's network separates these well-known faces completely
    assert result.train_accuracy == 1.0 and result.test_auc == 1.0
    assert 0.0 < result.threshold < 1.0
    assert result.photos_without_face == 0
