"""Per-pair terms that sharpen: eye-aware weights, the edge loss, the optional GAN term, the final
stretch of a schedule, and the faceswap-GAN model (self-attention, alpha mask) trained on real faces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from swaplab.config import ConfigError, fill_absent, to_dict
from swaplab.faces.masks import landmark_mask
from swaplab.facesets.format import Faceset
from swaplab.losses import LOSSES, LossConfig, ReconstructionObjective
from swaplab.losses.functional import eye_aware_weights
from swaplab.models.parts.faceswap_gan import SelfAttention
from swaplab.train.augment import Augmenter
from swaplab.train.data import scale_points
from swaplab.train.entry import build_config
from swaplab.train.loop import train
from swaplab.train.session import learning_rate

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_MODEL = ["model=liae-cpu", "model.ae_dims=32", "model.e_dims=8", "model.d_dims=8", "model.d_mask_dims=4"]


def overrides(pair: tuple[Path, Path], run_dir: Path, *extra: str) -> list[str]:
    src, dst = pair
    return [*TINY_MODEL, "trainer=test", f"data.src={src}", f"data.dst={dst}", f"run_dir={run_dir}", *extra]


def checkpoint(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run_dir / f"checkpoints/step-{step:07d}/model.safetensors")


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- eye-aware weights


def test_eye_aware_weight_map_is_larger_in_the_eyes_of_a_real_face(pair_facesets):
    faceset = Faceset(pair_facesets[0])
    record, size = faceset.records[0], 64
    points = scale_points(record.landmarks_array, size / faceset.size)
    face = torch.from_numpy(landmark_mask(points, size, "face"))[None, None]
    eyes_mouth = torch.from_numpy(landmark_mask(points, size, "eyes_mouth"))[None, None]
    eyes = landmark_mask(points, size, "eyes") > 0.99
    cheeks = (landmark_mask(points, size, "face") > 0.99) & (landmark_mask(points, size, "eyes_mouth", erode=-3) == 0)
    assert eyes.sum() > 20 and cheeks.sum() > 200  # the landmarks put eyes and plain skin where expected
    weights = eye_aware_weights(face, eyes_mouth, priority=2.0)[0, 0].numpy()
    assert np.allclose(weights[eyes], 3.0, atol=1e-4)  # 1 + priority inside the eyes
    assert np.allclose(weights[cheeks], 1.0)  # the face's own weight elsewhere
    assert weights[eyes].mean() > 2.5 * weights[cheeks].mean()
    assert float(weights.max()) == pytest.approx(3.0, abs=1e-4) and float(weights.min()) == 0.0
    with pytest.raises(ValueError, match="priority"):
        eye_aware_weights(face, eyes_mouth, priority=-1.0)


def test_priority_moves_the_loss_towards_the_eyes_and_needs_the_mask():
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 32, 32, generator=generator)
    face = torch.ones(2, 1, 32, 32)
    eyes = torch.zeros(2, 1, 32, 32)
    eyes[..., 8:12, 8:24] = 1.0
    pred = target.clone()
    pred[..., 8:12, 8:24] += 0.2  # an error only in the eye band
    plain = LossConfig(name="t", dssim=LossConfig().dssim.__class__(weight=0.0))
    plain.masked.soften = False
    prioritised = LossConfig(name="t", dssim=plain.dssim)
    prioritised.masked.soften, prioritised.masked.eyes_mouth_priority = False, 2.0
    mask = face[:, :1]
    base = ReconstructionObjective(plain)(pred, mask, target, face, eyes).components["pixel"]
    more = ReconstructionObjective(prioritised)(pred, mask, target, face, eyes).components["pixel"]
    # The band is 64 of 1024 pixels: weight 3 there raises the weighted mean by 3 / (1 + 2 * 64/1024).
    assert float(more / base) == pytest.approx(3.0 / (1.0 + 2.0 * 64 / 1024), rel=1e-5)
    with pytest.raises(ValueError, match="eyes_mouth_mask"):
        ReconstructionObjective(prioritised)(pred, mask, target, face, None)


# ---------------------------------------------------------------- edge loss


def test_edge_loss_is_zero_for_identical_images_and_matches_a_hand_computed_case():
    edge = LOSSES.create("edge")
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert float(edge(images, images)) == 0.0
    assert float(edge(images, images + 0.3)) == pytest.approx(0.0, abs=1e-6)  # a constant shift has no edges
    pred = torch.tensor([[[[0.0, 1.0, 3.0], [0.0, 0.0, 0.0]]]])
    target = torch.zeros_like(pred)
    # x differences: |1|, |2|, |0|, |0| -> mean 3/4; y differences: |0|, |-1|, |-3| -> mean 4/3.
    assert float(edge(pred, target)) == pytest.approx(0.5 * (3 / 4 + 4 / 3))
    # L2 on the same: x (1 + 4) / 4, y (1 + 9) / 3.
    assert float(LOSSES.create("edge", "l2")(pred, target)) == pytest.approx(0.5 * (5 / 4 + 10 / 3))
    # A weight that keeps only the first column: x pairs weigh (1+0)/2 in column pair 0, 0 in pair 1;
    # y pairs weigh 1 in column 0 only, whose difference is 0.
    weight = torch.tensor([[[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]]])
    assert float(edge(pred, target, weight)) == pytest.approx(0.5 * ((0.5 * 1 + 0.5 * 0) / 1.0 + 0.0))


# ---------------------------------------------------------------- GAN term


@pytest.mark.slow
def test_gan_term_off_changes_nothing_and_on_trains_a_discriminator(pair_facesets, tmp_path):
    plain = tmp_path / "plain"
    train(build_config(overrides(pair_facesets, plain, "trainer.steps=2")))
    off = tmp_path / "off"  # every other GAN setting changed, power 0: nothing of it may act
    train(build_config(overrides(pair_facesets, off, "trainer.steps=2", "gan.discriminator=residual", "gan.dims=8")))
    want, got = checkpoint(plain, 2), checkpoint(off, 2)
    assert sorted(got) == sorted(want) and not any(key.startswith("discriminator.") for key in got)
    assert all(torch.equal(got[key], want[key]) for key in want)
    assert [row["loss"] for row in metrics(off)] == [row["loss"] for row in metrics(plain)]

    on = tmp_path / "on"
    train(build_config(overrides(pair_facesets, on, "trainer.steps=2", "gan.power=0.1", "gan.dims=8")))
    tensors = checkpoint(on, 2)
    assert any(key.startswith("discriminator.") for key in tensors)
    assert not torch.equal(tensors["generator.encoder.body.0.conv.weight"], want["encoder.body.0.conv.weight"])
    rows = metrics(on)
    assert all("d_loss" in row and "loss/gan/generator" in row for row in rows)

    from swaplab.models.card import load_model
    from swaplab.train.export import export_model

    export_model(on, tmp_path / "model")
    model = load_model(tmp_path / "model")  # the per-pair network alone: the discriminator stays in the run
    assert torch.equal(
        model.state_dict()["encoder.body.0.conv.weight"], tensors["generator.encoder.body.0.conv.weight"]
    )
    with pytest.raises(ConfigError, match="gan.power"):
        build_config(overrides(pair_facesets, on, "gan.power=-1"))
    with pytest.raises(ConfigError, match="gan.criterion"):
        build_config(overrides(pair_facesets, on, "gan.criterion=pixel"))


# ---------------------------------------------------------------- the final stretch


def test_final_stretch_switches_warp_off_and_lowers_the_lr_at_the_stated_step(pair_facesets, tmp_path, monkeypatch):
    cfg = build_config(overrides(pair_facesets, tmp_path / "run", "trainer.steps=8", "trainer.final_stretch=0.25"))
    tcfg = cfg.trainer
    assert tcfg.final_stretch_start == 6
    assert [tcfg.in_final_stretch(s) for s in range(8)] == [False] * 6 + [True] * 2
    assert learning_rate(5, tcfg) == pytest.approx(tcfg.lr) and learning_rate(6, tcfg) == pytest.approx(0.1 * tcfg.lr)
    warps: list[bool] = []
    original = Augmenter.__call__

    def record(self, batch, *args, **kwargs):
        out = original(self, batch, *args, **kwargs)
        warps.append(self.config.warp and not torch.equal(out["warped"], out["target"]))
        return out

    monkeypatch.setattr(Augmenter, "__call__", record)
    train(cfg)
    assert warps == [True] * 12 + [False] * 4  # two sides per step
    lrs = [row["lr"] for row in metrics(tmp_path / "run")]
    assert lrs == pytest.approx([tcfg.lr] * 6 + [0.1 * tcfg.lr] * 2)
    with pytest.raises(ConfigError, match="final_stretch"):
        build_config(overrides(pair_facesets, tmp_path / "x", "trainer.final_stretch=1.5"))


def test_dst_flip_mirrors_the_dst_faces_and_no_src_face(pair_facesets, tmp_path, monkeypatch):
    """``data.dst_flip=1`` with every other augmentation off: each dst face is trained on as its
    mirror image, each src face as it is."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = Augmenter.__call__

    def record(self, batch, *args, **kwargs):
        out = original(self, batch, *args, **kwargs)
        seen.append((batch["image"], out["target"]))
        return out

    monkeypatch.setattr(Augmenter, "__call__", record)
    run = tmp_path / "run"
    train(build_config(overrides(pair_facesets, run, "trainer.steps=1", "augment=off", "data.dst_flip=1")))
    (src_in, src_target), (dst_in, dst_target) = seen  # one step: src, then dst
    torch.testing.assert_close(src_target, src_in, atol=2e-3, rtol=0)
    torch.testing.assert_close(dst_target, dst_in.flip(-1), atol=2e-3, rtol=0)
    assert not torch.allclose(dst_in, dst_in.flip(-1), atol=0.05)  # a real face is not its own mirror
    with pytest.raises(ConfigError, match="dst_flip"):
        build_config(overrides(pair_facesets, tmp_path / "x", "data.dst_flip=1.5"))


def test_dst_flip_is_on_by_default_and_off_for_runs_saved_before_it(pair_facesets, tmp_path):
    """0.4 by default; a run config saved before the setting existed reads it as 0, so such a run
    is not resumed with mirrored faces halfway."""
    config = build_config(overrides(pair_facesets, tmp_path / "run"))
    assert config.data.dst_flip == 0.4
    saved = to_dict(config)
    del saved["data"]["dst_flip"]
    tree, filled, _ = fill_absent(type(config), saved)
    assert tree["data"]["dst_flip"] == 0.0 and "data.dst_flip" in filled


def test_dst_prior_mixes_other_faces_into_dst_batches_only(pair_facesets, tmp_path):
    """``data.dst_prior``: the last quarter of each dst batch comes from the other faceset, by a
    stream of its own; the pair's dst faces keep their own order and src is untouched. A run
    trains with it and its manifest names the faceset."""
    from swaplab.train.data import PairData

    bush, powell = pair_facesets
    plain = PairData(bush, powell, 64, holdout=2, seed=0)
    mixed = PairData(bush, powell, 64, holdout=2, seed=0, dst_prior=bush, dst_prior_share=0.25)
    assert mixed.dst_prior_count(8) == 2 and mixed.epochs(800)["dst"] == pytest.approx(600 / mixed.num_train("dst"))
    dst_rows = []
    for step in range(3):
        batch, alone = mixed.batch(step, batch_size=8), plain.batch(step, batch_size=8)
        assert torch.equal(batch["src"], alone["src"])
        own = plain._gather("dst", plain.streams["dst"].positions(6 * step, 6))
        assert torch.equal(batch["dst"][:6], own.images)
        dst_rows.append(batch["dst"][6:])
    bush_faces = PairData(bush, bush, 64, holdout=0, seed=0).faces["src"].images
    for rows in dst_rows:  # every mixed-in face is one of the other faceset's
        assert all(any(torch.equal(row, face) for face in bush_faces) for row in rows)
    assert len({bytes(row.flatten().numpy()) for rows in dst_rows for row in rows}) == 6  # no repeat within an epoch

    run = tmp_path / "run"
    train(build_config(overrides(pair_facesets, run, "trainer.steps=2", f"data.dst_prior={bush}")))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["facesets"]["dst_prior"]["path"] == str(bush)
    with pytest.raises(ConfigError, match="dst_prior_share"):
        build_config(overrides(pair_facesets, tmp_path / "x", "data.dst_prior_share=1.5"))


def test_a_time_budget_gets_its_final_stretch_in_one_command(pair_facesets, tmp_path, monkeypatch):
    """``trainer=cpu-30min``: the budget is the stop and its last fifth is the stretch; a fake clock
    that advances one second per step puts the stretch at steps 8 and 9 of a 10 s budget."""
    import types

    import swaplab.train.loop as loop_module
    from swaplab.train.recipes.per_pair import PerPairRecipe

    clock = [0.0]
    fake_time = types.SimpleNamespace(perf_counter=lambda: clock[0], process_time=loop_module.time.process_time)
    monkeypatch.setattr(loop_module, "time", fake_time)
    original_step = PerPairRecipe.train_step

    def one_second_step(self, step):
        clock[0] += 1.0
        return original_step(self, step)

    monkeypatch.setattr(PerPairRecipe, "train_step", one_second_step)
    run = tmp_path / "run"
    budget = build_config(overrides(pair_facesets, run, "trainer=cpu-30min")).trainer
    assert (budget.time_budget_s, budget.final_stretch, budget.steps > 10**6) == (1800, 0.2, True)
    quick = ["trainer.time_budget_s=10", "trainer.batch_size=4", "trainer.warmup_steps=0", "trainer.log_every=1"]
    quick += ["trainer.precision=fp32", "trainer.preview_every=0", "trainer.progress=false"]
    cfg = build_config(overrides(pair_facesets, run, "trainer=cpu-30min", *quick))
    result = train(cfg)
    assert result.step == 10 and result.stop_reason in ("steps", "time_budget")
    lrs = [row["lr"] for row in metrics(run) if "lr" in row]
    assert lrs == pytest.approx([cfg.trainer.lr] * 8 + [0.1 * cfg.trainer.lr] * 2)


# ---------------------------------------------------------------- faceswap-GAN


def test_self_attention_keeps_the_shape_and_its_weights_sum_to_one():
    block = SelfAttention(16)
    x = torch.randn(2, 16, 6, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(block(x), x)  # gamma starts at 0: the identity
    with torch.no_grad():
        block.gamma.fill_(0.5)
    out = block(x)
    assert out.shape == x.shape and not torch.equal(out, x)
    weights = block.attention(x)
    assert weights.shape == (2, 30, 30) and bool((weights >= 0).all())
    assert torch.allclose(weights.sum(-1), torch.ones(2, 30))


FACESWAP_GAN = ["model=faceswap-gan-64", "model.e_dims=8", "model.d_dims=16", "model.ae_dims=64", "loss=faceswap-gan"]


@pytest.mark.slow
def test_faceswap_gan_learns_a_real_pair_exports_and_swaps(pair_facesets, lfw, tmp_path):
    from swaplab.models.card import load_model
    from swaplab.provenance import verify
    from swaplab.swap.pipeline import SwapConfig, swap
    from swaplab.train.export import export_model

    src, dst = pair_facesets
    run_dir = tmp_path / "run"
    cfg = build_config(
        [
            *FACESWAP_GAN,
            "gan.power=0.1",
            "gan.dims=8",
            "trainer=test",
            "trainer.steps=48",
            "trainer.lr=5e-4",
            "trainer.checkpoint_every=0",
            f"data.src={src}",
            f"data.dst={dst}",
            f"run_dir={run_dir}",
        ]
    )
    assert cfg.model.parts.encoder == cfg.model.parts.decoder == "faceswap-gan"
    train(cfg)
    rows = metrics(run_dir)
    terms = [
        key for key in rows[0] if key.startswith("loss/") and key.split("/")[-1] in ("pixel", "edge", "perceptual")
    ]
    assert len(terms) == 6  # L1, edges and perceptual features, both sides

    def fall(values: list[float]) -> float:
        return float(np.mean(values[-6:]) / np.mean(values[:6]))

    # The edge term first grows as the flat initial output gains structure; L1, the features and the
    # total fall within a few dozen steps.
    assert fall([row["loss"] for row in rows]) < 0.8
    for key in ("pixel", "perceptual"):
        assert fall([row[f"loss/src/{key}"] + row[f"loss/dst/{key}"] for row in rows]) < 0.9, key
    assert all(np.isfinite(row["d_loss"]) for row in rows)

    card_path = export_model(run_dir, tmp_path / "model")
    card = json.loads(card_path.read_text())
    assert card["swapper"] == "per-pair" and card["model"]["parts"]["decoder"] == "faceswap-gan"
    model = load_model(tmp_path / "model")
    rgb, alpha = model.swap(torch.rand(2, 3, 64, 64))
    assert rgb.shape == (2, 3, 64, 64) and alpha.shape == (2, 1, 64, 64)
    photo = sorted((lfw / "Colin_Powell").glob("*.jpg"))[30]  # a photo the faceset did not hold
    out = tmp_path / "swapped.png"
    report = swap(tmp_path / "model", photo, out, SwapConfig(), progress=False)
    assert report.faces_swapped == 1, report
    assert verify(out).synthetic


def test_faceswap_gan_without_attention_has_no_attention_block_and_the_same_shapes():
    from swaplab.models.per_pair import DeepFakesModel

    def attention_blocks(model: torch.nn.Module) -> int:
        return sum(isinstance(m, SelfAttention) for m in model.modules())

    with_attention = build_config(FACESWAP_GAN + ["data.src=x", "data.dst=y"]).model
    without = build_config(
        FACESWAP_GAN
        + [
            "model.parts.encoder=faceswap-gan-no-attention",
            "model.parts.decoder=faceswap-gan-no-attention",
            "data.src=x",
            "data.dst=y",
        ]
    ).model
    full, plain = DeepFakesModel(with_attention), DeepFakesModel(without)
    assert attention_blocks(full) == 2 + 2 * 1  # /4 and /8 in the encoder; at 16 px in each decoder
    assert attention_blocks(plain) == 0
    faces = torch.rand(2, 3, 64, 64)
    assert [t.shape for t in full.swap(faces)] == [t.shape for t in plain.swap(faces)]


def test_the_shipped_per_pair_study_switches_each_part_and_every_run_builds():
    from swaplab.study import load_study

    study = load_study(Path(__file__).resolve().parents[1] / "studies" / "per-pair.yaml")
    runs = {run.name: build_config([*study.base, *run.own, "data.src=x", "data.dst=y"]) for run in study.expand()}
    base = runs["baseline"]
    assert (base.model.name, base.loss.name, base.trainer.name) == ("liae-cpu", "dfl-sharp", "cpu-30min")
    assert runs["no-eye-priority"].loss.masked.eyes_mouth_priority == 0 < base.loss.masked.eyes_mouth_priority
    assert runs["no-edge"].loss.edge.weight == 0 < base.loss.edge.weight
    assert runs["no-stretch"].trainer.final_stretch == 0 < base.trainer.final_stretch
    assert runs["gan-0.1"].gan.power == 0.1 and base.gan.power == 0
    assert (runs["segment-masked-loss"].data.mask, base.data.mask) == ("segment+hull", "hull")
    assert runs["occlusion-augment"].data.occlude == 0.5 and base.data.occlude == 0
    fsg = runs["faceswap-gan"]
    assert fsg.model.parts.decoder == "faceswap-gan" and fsg.gan.power == 0.1
    assert runs["faceswap-gan-no-attention"].model.parts.encoder == "faceswap-gan-no-attention"
    assert runs["faceswap-gan-no-gan"].gan.power == 0
    for name, term in (("no-perceptual", "perceptual"), ("no-edge", "edge"), ("no-mask-loss", "mask")):
        assert getattr(runs[f"faceswap-gan-{name}"].loss, term).weight == 0 < getattr(fsg.loss, term).weight
    assert runs["faceswap-gan-no-eye-priority"].loss.masked.eyes_mouth_priority == 0
    assert study.eval.protocol == "per_pair_v1"


def test_occluded_training_faces_lose_their_masks_exactly_where_the_occluder_lies(pair_facesets):
    from swaplab.train.data import PairData
    from swaplab.train.recipes.per_pair import occluded_batch

    batch = PairData(*pair_facesets, 64, holdout=4).batch(0, batch_size=6)
    same = occluded_batch(batch, 1.0, np.random.default_rng(3))
    again = occluded_batch(batch, 1.0, np.random.default_rng(3))
    for side in ("src", "dst"):
        assert torch.equal(same[side], again[side])  # seeded
        changed = (same[side] != batch[side]).any(dim=1, keepdim=True)
        lost = (same[f"{side}_mask"] == 0) & (batch[f"{side}_mask"] > 0)
        assert changed.flatten(1).any(dim=1).all()  # every face got an occluder
        # the face mask is cut wherever the picture changed inside it, and nowhere else
        assert not (changed & (batch[f"{side}_mask"] > 0) & ~lost).any()
        assert (lost.flatten(1).sum(1) > 0).all() and (same[f"{side}_mask"] <= batch[f"{side}_mask"]).all()
        assert (same[f"{side}_features"] <= batch[f"{side}_features"]).all()
    untouched = occluded_batch(batch, 0.0, np.random.default_rng(3))
    assert all(torch.equal(untouched[key], batch[key]) for key in batch)


def test_a_run_trains_on_occluded_faces_and_refuses_a_share_outside_0_1(pair_facesets, tmp_path):
    with pytest.raises(ConfigError, match=r"data.occlude=1.5 .*\[0, 1\]"):
        build_config(overrides(pair_facesets, tmp_path / "bad", "data.occlude=1.5"))
    result = train(build_config(overrides(pair_facesets, tmp_path / "run", "trainer.steps=2", "data.occlude=0.5")))
    assert result.step == 2
