"""The one-shot GAN trainer end to end on real LFW faces: config dispatch and study aliases, the
run folder, exact resume of both players, export, a swap of unseen peopleDevTest faces, and the
one-shot evaluation protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_ddp import train_in_two_processes

from swaplab.config import ConfigError
from swaplab.io.images import read_image
from swaplab.train.checkpoint import load_checkpoint, save_checkpoint
from swaplab.train.entry import build_config, resolve_aliases
from swaplab.train.loop import train
from swaplab.train.recipes.oneshot_config import OneShotTrainConfig
from swaplab.train.recipes.per_pair import TrainConfig

TRAIN_PEOPLE = ("George_W_Bush", "Colin_Powell", "Tony_Blair")  # peopleDevTrain.txt
EVAL_PEOPLE = ("Donald_Rumsfeld", "Al_Pacino")  # peopleDevTest.txt


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lfw_facesets(split_facesets) -> dict[str, Path]:
    """128 px crops: 3 photos each of 3 train-split people, 2 each of 2 test-split people."""
    return split_facesets(TRAIN_PEOPLE, 3, EVAL_PEOPLE, 2)


def overrides(facesets: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    return [
        "model=simswap-tiny",
        "trainer=oneshot-test",
        f"data.train=[{facesets['train']}]",
        f"data.eval={facesets['eval']}",
        f"data.lists_dir={facesets['lists']}",
        "data.eval_pairs=3",
        f"run_dir={run_dir}",
        *extra,
    ]


# ---------------------------------------------------------------- configs


def test_the_model_chooses_the_trainer_and_study_aliases_resolve() -> None:
    cfg = build_config(
        [
            "model=simswap-tiny",
            "ablation.encoder=none-bilinear",
            "ablation.bottleneck=none",
            "loss.fm.layers=full",
            "loss.recon.norm=l2",
            "loss.id.weight=0",
            "model.discriminator=projected",
            "model.discriminator.scales=3",
        ]
    )
    assert isinstance(cfg, OneShotTrainConfig)
    assert (cfg.model.parts.encoder, cfg.model.parts.bottleneck) == ("none-bilinear", "none")
    assert (cfg.loss.feature_matching.layers, cfg.loss.reconstruction.norm) == ("full", "l2")
    assert cfg.loss.identity.weight == 0
    assert (cfg.model.parts.discriminator, cfg.model.discriminator.scales) == ("projected", 3)
    assert (cfg.trainer.lr, cfg.trainer.betas) == (4e-4, (0.0, 0.99))  # SimSwap's optimiser
    assert isinstance(build_config(["model=liae-cpu"]), TrainConfig)
    assert resolve_aliases(["loss.fm=weak", "trainer.steps=3"]) == ["loss.feature_matching=weak", "trainer.steps=3"]
    with pytest.raises(ConfigError, match="unknown key"):
        build_config(["model=simswap-tiny", "ablation.nothing=none"])
    with pytest.raises(ConfigError, match="gp_every"):
        build_config(["model=simswap-tiny", "gan.gp_every=0"])


def test_checkpoints_hold_several_named_optimisers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    pair = torch.nn.ModuleDict({"g": torch.nn.Linear(3, 2), "d": torch.nn.Linear(2, 1)})
    optimizers = {
        "generator": torch.optim.Adam(pair["g"].parameters(), lr=0.1),
        "discriminator": torch.optim.Adam(pair["d"].parameters(), lr=0.2),
    }
    pair["d"](pair["g"](torch.randn(4, 3))).sum().backward()
    for optimizer in optimizers.values():
        optimizer.step()
    names = {"generator": ["g.weight", "g.bias"], "discriminator": ["d.weight", "d.bias"]}
    path = save_checkpoint(tmp_path, 1, model=pair, optimizer=optimizers, param_names=names, keep_last=0)
    ckpt = load_checkpoint(path)
    assert set(ckpt.optimizer) == {"generator", "discriminator"}
    for name, optimizer in optimizers.items():
        saved = optimizer.state_dict()
        loaded = ckpt.optimizer[name]
        assert loaded["param_groups"][0]["lr"] == saved["param_groups"][0]["lr"]
        for index, state in saved["state"].items():
            torch.testing.assert_close(loaded["state"][index]["exp_avg"], state["exp_avg"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="same keys"):
        save_checkpoint(tmp_path, 2, model=pair, optimizer=optimizers, param_names={"generator": []})


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained_run(lfw_facesets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "simswap"
    result = train(build_config(overrides(lfw_facesets, run_dir, "trainer.steps=4")))
    assert (result.step, result.stop_reason) == (4, "steps")
    return run_dir


def test_a_run_logs_both_players_and_writes_previews(trained_run: Path) -> None:
    import json

    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        for key in ("loss", "loss/adversarial", "loss/identity", "loss/reconstruction", "loss/feature_matching"):
            assert np.isfinite(row[key]), (key, row)
        assert np.isfinite(row["d_loss"]) and row["d_loss/real"] >= 0 and row["d_loss/fake"] >= 0
        # The G total is the sum of its weighted parts, D's likewise.
        g_parts = sum(v for k, v in row.items() if k.startswith("loss/"))
        d_parts = sum(v for k, v in row.items() if k.startswith("d_loss/"))
        assert row["loss"] == pytest.approx(g_parts, rel=1e-5) and row["d_loss"] == pytest.approx(d_parts, rel=1e-5)
    # Lazy regularisation: the gradient penalty is computed on steps 0, 4, 8... (logged as 1, 5, ...)
    assert ["d_loss/gradient_penalty" in r for r in rows] == [True, False, False, False]
    previews = trained_run / "previews"
    pairs = json.loads((previews / "eval-pairs.json").read_text())
    assert len(pairs["pairs"]) == 3 and pairs["resolution"] == 64
    assert all(p["source"] != p["target"] for p in pairs["pairs"])
    assert read_image(previews / "eval-swaps.png")[0].shape == (64, 3 * 64, 3)
    assert read_image(previews / "eval-sources.png")[0].shape == (64, 3 * 64, 3)
    from swaplab.provenance import verify

    assert verify(previews / "eval-swaps.png").synthetic and verify(previews / "latest.png").synthetic
    assert (trained_run / "curves.png").is_file()
    ckpt = load_checkpoint(trained_run / "checkpoints" / "step-0000004")
    assert set(ckpt.optimizer) == {"generator", "discriminator"}
    assert any(k.startswith("generator.") for k in ckpt.model) and any(
        k.startswith("discriminator.") for k in ckpt.model
    )


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(
    lfw_facesets: dict[str, Path], tmp_path: Path
) -> None:
    # Both runs train here, under this test's single thread: kernels of another thread count
    # round differently, and Adam turns the rounding noise of a zero gradient (a bias before an
    # instance norm) into a full step.
    resumed = tmp_path / "resumed"
    assert train(build_config(overrides(lfw_facesets, resumed, "trainer.steps=4"))).step == 4
    result = train(build_config(overrides(lfw_facesets, resumed, "trainer.steps=6")))
    assert (result.start_step, result.step) == (4, 6)
    straight = train(build_config(overrides(lfw_facesets, tmp_path / "straight", "trainer.steps=6")))
    assert straight.step == 6
    a = load_file(str(resumed / "checkpoints" / "step-0000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "straight" / "checkpoints" / "step-0000006" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_training_refuses_test_split_people(lfw_facesets: dict[str, Path], tmp_path: Path) -> None:
    from swaplab.data.lfw import SplitError

    bad = overrides(lfw_facesets, tmp_path / "bad")
    bad[2] = f"data.train=[{lfw_facesets['eval']}]"
    with pytest.raises(SplitError, match="peopleDevTest"):
        train(build_config(bad))


# ---------------------------------------------------------------- export, swap, evaluate


@pytest.fixture(scope="module")
def exported(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from swaplab.train.export import export_model

    out = tmp_path_factory.mktemp("model")
    export_model(trained_run, out)
    return out


def test_export_keeps_the_generator_and_names_its_identity_networks(exported: Path) -> None:
    import json

    from swaplab.models.swapper import IdentitySwapper, load_swapper

    card = json.loads((exported / "model.json").read_text())
    assert (card["recipe"], card["arch"], card["swapper"]) == ("oneshot", "simswap", "identity-conditioned")
    assert card["identity"] == {"conditions_on": "dlib-resnet", "loss_network": "dlib-resnet"}
    assert card["loss_config"]["identity"]["network"] == "dlib-resnet"
    assert card["split"]["evaluate_on"] == "peopleDevTest.txt"
    weights = load_file(str(exported / "model.safetensors"))
    assert weights and not any(k.startswith(("discriminator", "generator.")) for k in weights)
    assert card["parameters"] == sum(t.numel() for t in weights.values())
    model = load_swapper(exported)
    assert isinstance(model, IdentitySwapper) and model.reconstruction_sides == ("self",)
    target = torch.rand(2, 3, 64, 64)
    with pytest.raises(ValueError, match="source=PHOTO"):
        model.swap(target)
    rgb, mask = model.swap(target, torch.full((1, 128), 0.05))
    assert rgb.shape == (2, 3, 64, 64) and bool((mask == 1).all())
    with pytest.raises(ValueError, match="one finite source embedding or one per target"):
        model.swap(target, torch.zeros(3, 128))
    self_swap = model.reconstruct(target, "self", torch.full((2, 128), 0.05))
    assert torch.equal(self_swap.rgb, model.swap(target, torch.full((1, 128), 0.05)).rgb)


def test_the_same_weights_exported_twice_mark_alike(exported: Path, trained_run: Path, tmp_path: Path) -> None:
    """The watermark's model hash is the weights' hash, not the card's (whose paths differ), so
    evaluating a model copied or exported elsewhere gives the same marked swaps and scores."""
    from swaplab.swap.pipeline import FaceSwapper, SwapConfig
    from swaplab.train.export import export_model

    again = tmp_path / "again"
    export_model(trained_run, again)
    (again / "model.json").write_text((again / "model.json").read_text().replace(str(trained_run), "/elsewhere"))
    first, second = (FaceSwapper(m, SwapConfig(precision="fp32")) for m in (exported, again))
    assert first.model_id == second.model_id and first.model_id.startswith("simswap-")


def test_one_shot_model_swaps_two_unseen_test_split_faces_end_to_end(exported: Path, lfw: Path, tmp_path: Path) -> None:
    from swaplab.provenance import verify
    from swaplab.swap.pipeline import SwapConfig, swap

    # Two peopleDevTest people the model never saw (its eval faceset used other photos of others).
    source = sorted((lfw / "Adel_Al-Jubeir").glob("*.jpg"))[0]
    target = sorted((lfw / "Abid_Hamid_Mahmud_Al-Tikriti").glob("*.jpg"))[0]
    with pytest.raises(ValueError, match="source=PHOTO"):
        swap(exported, target, tmp_path / "no-source.png", SwapConfig(precision="fp32"), progress=False)
    out = tmp_path / "swap.png"
    report = swap(exported, target, out, SwapConfig(precision="fp32", source=[source]), progress=False)
    assert report.faces_swapped == 1, report.lines()
    before, after = read_image(target)[0], read_image(out)[0]
    assert before.shape == after.shape
    difference = np.abs(before.astype(int) - after.astype(int)).max(axis=2)
    changed = difference > 24  # the invisible watermark moves pixels by a few levels only
    ys, xs = np.nonzero(changed)
    assert changed.mean() > 0.05  # the face was replaced ...
    assert 60 < ys.mean() < 190 and 60 < xs.mean() < 190  # ... in the middle, where the face is
    assert changed[:20].mean() < 0.01 and changed[:, :20].mean() < 0.01  # the borders are not
    assert verify(out).synthetic


def test_one_shot_and_per_pair_protocols_score_the_model(exported: Path, tmp_path: Path) -> None:
    from swaplab.evaluate import evaluate

    result = evaluate(
        exported,
        out_dir=tmp_path / "eval",
        protocol="oneshot_v1",
        limit=2,
        encoders=("dlib-resnet",),
        detector_pairs=24,
        detector="test",
    )
    metrics = result.metrics["metrics"]
    # Detectability: trained on swaps of 24 peopleDevTrain pairs, tested on the 2 scored pairs.
    assert len(list((tmp_path / "eval" / "detector-swaps").glob("dtrain-*.png"))) == 24
    auc = metrics["detectability_auc"]
    assert auc["n_train_fake"] == 24 and auc["n_test_fake"] == 2
    # A 4-step generator's swaps are far from real faces: the detector separates even the 2 test pairs.
    assert auc["value"] == 1.0 and auc["train_auc"] > 0.95, auc
    # Self-swap reconstruction: the mean of the per-face scores written beside it, far from perfect.
    per_face = json.loads((tmp_path / "eval" / "per_item.json").read_text())["reconstruction"]
    ssim = [item["masked_ssim"] for item in per_face if item["side"] == "self"]
    assert metrics["masked_ssim/self"] == {"mean": pytest.approx(np.mean(ssim)), "n": 2, "better": "higher"}
    assert max(ssim) < 0.9
    assert "identity_similarity/dlib-resnet" in metrics
    assert sorted(p.name for p in (tmp_path / "eval" / "swaps").iterdir()) == ["0000.png", "0001.png"]
    assert any("optimised, not measured" in w for w in result.warnings)

    # On a per-pair protocol it swaps in the source person's photos that the protocol scores nothing against.
    from swaplab.evaluate.protocol import load_protocol

    pair = evaluate(exported, out_dir=tmp_path / "pp", protocol="per_pair_v1", limit=1, encoders=("dlib-resnet",))
    spec = load_protocol("per_pair_v1")
    given = pair.metrics["target"]["source_photos"]
    assert len(given) == 24 and all("/George_W_Bush/" in photo for photo in given)
    assert not set(given) & {*spec.heldout["src"], *spec.reference, *spec.gallery["George_W_Bush"]}
    assert [p.name for p in (tmp_path / "pp" / "swaps").iterdir()] == ["Colin_Powell_0213.png"]
    assert pair.metrics["metrics"]["identity_similarity/dlib-resnet"]["n"] == 1


@pytest.mark.slow
def test_two_processes_equal_one_with_the_doubled_batch(lfw_facesets: dict[str, Path], tmp_path: Path) -> None:
    """torchrun, gloo: each player's gradients are averaged across ranks, so 2 x 2 pairs = 1 x 4.

    Comparable settings only: instance norm (batch norm's statistics are per process), whole
    batches of one kind (SimSwap's alternate schedule: the reconstruction mean is per batch), no
    flips and no gradient penalty (their random draws are per rank), and Adam's epsilon above the
    rounding noise of gradients that cancel (see test_ddp.py): the generator's gradients are large
    (norm ~70), so the gradient of a bias before an instance norm, zero in exact arithmetic, is
    rounding noise of ~1e-5 that batch 2 and batch 4 kernels round differently.
    """
    import json

    exact = (
        "model.norm=instance",
        "data.schedule=alternate",
        "data.flip=false",
        "loss.gradient_penalty.weight=0",
        "trainer.eps=1e-2",
        "trainer.steps=3",
        "trainer.checkpoint_every=0",
    )
    single = tmp_path / "single"
    train(build_config(overrides(lfw_facesets, single, *exact, "trainer.batch_size=4")))
    ddp = tmp_path / "ddp"
    train_in_two_processes(overrides(lfw_facesets, ddp, *exact, "trainer.batch_size=2"))
    assert '"world_size": 2' in (ddp / "manifest.json").read_text()
    rows = [[json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] for run in (single, ddp)]
    # Step 1 is computed before any update: the same pairs, split across ranks, give the same losses.
    for key in ("loss", "d_loss", "loss/identity", "loss/reconstruction", "loss/feature_matching"):
        assert rows[1][0][key] == pytest.approx(rows[0][0][key], rel=1e-5), key
    # Later steps follow the same path; the two players amplify kernel rounding (batch 2 and 4
    # round differently), so this is close, not bit-equal (the averaging itself is tested below).
    for key in ("loss", "d_loss"):
        assert [r[key] for r in rows[1]] == pytest.approx([r[key] for r in rows[0]], rel=1e-2), key


def _average_in_group(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    from swaplab.train.session import average_gradients

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        weight, unused = torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(4))
        weight.grad = torch.full((2, 3), float(rank + 1))  # rank 0: 1, rank 1: 2
        if rank == 1:
            unused.grad = torch.full((4,), 6.0)  # a parameter only rank 1 used: rank 0 counts 0
        average_gradients([weight, unused], world_size)
        torch.save({"weight": weight.grad, "unused": unused.grad}, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_gradients_are_averaged_across_processes(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_average_in_group, args=(2, str(tmp_path / "init"), str(tmp_path / "grads")), nprocs=2, join=True)
    for rank in (0, 1):
        grads = torch.load(tmp_path / f"grads.{rank}", weights_only=True)
        torch.testing.assert_close(grads["weight"], torch.full((2, 3), 1.5))
        torch.testing.assert_close(grads["unused"], torch.full((4,), 3.0))


def test_an_lfw_people_list_extracts_exactly_its_split(lfw: Path, tmp_path: Path) -> None:
    from swaplab.facesets.extract import ExtractSummary, expand_inputs, lfw_people_folders

    folders = lfw_people_folders(lfw.parent / "peopleDevTest.txt")
    assert len(folders) == 1711 and folders[0].parent == lfw and all(f.is_dir() for f in folders[:20])
    # A small list beside a copy of two people's folders: the files it expands to.
    (tmp_path / "lfw-deepfunneled").mkdir()
    for person in EVAL_PEOPLE:
        (tmp_path / "lfw-deepfunneled" / person).symlink_to(lfw / person)
    (tmp_path / "people.txt").write_text(f"1\n{EVAL_PEOPLE[1]}\t3\n")
    files = list(expand_inputs([tmp_path / "people.txt"], ExtractSummary(output="x")))
    assert [f.parent.name for f in files] == [EVAL_PEOPLE[1]] * len(list((lfw / EVAL_PEOPLE[1]).glob("*.jpg")))
    (tmp_path / "people.txt").write_text("2\nA\t1\n")
    with pytest.raises(ValueError, match="announces 2"):
        list(expand_inputs([tmp_path / "people.txt"], ExtractSummary(output="x")))
