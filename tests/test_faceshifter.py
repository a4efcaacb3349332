"""FaceShifter: AAD's mask and branches, the attribute loss, HEAR-Net's input, the ablation
switches, synthetic occluders, learning on real faces, both training phases end to end (train,
export, swap two unseen peopleDevTest faces, HEAR on and off) and a two-run sweep's report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from swaplab.config import ConfigError, config_group
from swaplab.losses.faceshifter import FaceShifterLossConfig, FaceShifterObjective, attribute_loss
from swaplab.models.faceshifter import FaceShifter, FaceShifterSwapper, create_discriminator
from swaplab.models.parts.faceshifter import AADLayer, HearRefiner
from swaplab.train.entry import build_config
from swaplab.train.occlusion import OcclusionConfig, paste_occluders

TRAIN_PEOPLE = ("George_W_Bush", "Colin_Powell", "Tony_Blair")  # peopleDevTrain.txt
EVAL_PEOPLE = ("Donald_Rumsfeld", "Al_Pacino")  # peopleDevTest.txt

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**changes) -> object:
    cfg = config_group("model").create("faceshifter-tiny")
    for key, value in changes.items():
        setattr(cfg, key, value)
    cfg.__post_init__()
    return cfg


# ---------------------------------------------------------------- parts


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_aad_mask_zero_is_the_attribute_branch_and_one_the_identity_branch(norm: str) -> None:
    torch.manual_seed(0)
    h, z_att, z_id = torch.randn(3, 8, 6, 6), torch.randn(3, 5, 6, 6), torch.randn(3, 16)
    layers = {m: AADLayer(8, 5, 16, norm, fixed_mask=m) for m in (0.0, 1.0, None)}
    state = layers[None].state_dict()
    for m in (0.0, 1.0):
        layers[m].load_state_dict({k: v for k, v in state.items() if not k.startswith("mask.")})
    attribute, identity, mask = layers[None].branches(h, z_att, z_id)
    torch.testing.assert_close(layers[0.0](h, z_att, z_id), attribute)
    torch.testing.assert_close(layers[1.0](h, z_att, z_id), identity)
    # The learned mask mixes the two: (1 - M) * A + M * I, M in (0, 1) and not constant.
    torch.testing.assert_close(layers[None](h, z_att, z_id), (1 - mask) * attribute + mask * identity)
    assert 0 < mask.min() < mask.max() < 1 and not torch.allclose(attribute, identity)
    # The identity branch is an affine map of the normalised h by linear functions of z_id.
    h_bar = layers[None].norm(h)
    scale = layers[None].identity_scale(z_id)[:, :, None, None]
    torch.testing.assert_close(identity, scale * h_bar + layers[None].identity_shift(z_id)[:, :, None, None])


def test_attribute_loss_is_zero_for_identical_inputs_and_matches_a_hand_computed_case() -> None:
    a = [torch.zeros(2, 1, 1, 1), torch.zeros(2, 2, 2, 2)]
    b = [torch.tensor([1.0, 3.0]).view(2, 1, 1, 1), torch.ones(2, 2, 2, 2)]
    assert float(attribute_loss(b, b)) == 0.0 and float(attribute_loss(b, b, "sum")) == 0.0
    # sum: 1/2 * (mean over samples of per-sample squared norms) = 1/2 * ((1 + 9) / 2 + 8) = 6.5
    assert float(attribute_loss(a, b, "sum")) == pytest.approx(6.5)
    # mean: 1/2 * (mean of squares per level) = 1/2 * (5 + 1) = 3
    assert float(attribute_loss(a, b, "mean")) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="same non-zero number of levels"):
        attribute_loss(a, b[:1])


def test_hear_input_is_the_swap_concatenated_with_the_heuristic_error() -> None:
    torch.manual_seed(0)
    model = FaceShifter(tiny(with_hear=True)).eval()
    target, source, own = torch.rand(2, 3, 64, 64), torch.randn(2, 128), torch.randn(2, 128)
    seen: list[torch.Tensor] = []
    handle = model.hear.unet.down[0].register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    with torch.no_grad():
        refined = model(target, source, own)
        swap = model(target, source)  # no target identity: HEAR off, AEI's swap
        error = target - model(target, own)
    handle.remove()
    assert len(seen) == 1 and seen[0].shape == (2, 6, 64, 64)
    torch.testing.assert_close(seen[0], torch.cat([swap, error], dim=1), rtol=0, atol=0)
    # An untrained residual refiner returns the swap (its head starts at zero).
    torch.testing.assert_close(refined, swap.clamp(0, 1))
    assert torch.equal(HearRefiner.refiner_input(swap, error), torch.cat([swap, error], 1))


def test_presets_build_and_the_paper_sizes_match_faceshifter() -> None:
    with torch.device("meta"):
        paper = FaceShifter(config_group("model").create("faceshifter-paper"))
    assert paper.encoder.level_sizes == [2, 4, 8, 16, 32, 64, 128, 256]
    assert paper.encoder.level_channels == [1024, 2048, 1024, 512, 256, 128, 64, 64]
    widths = [block.conv2.out_channels for block in paper.generator.blocks]
    assert widths == [1024, 1024, 1024, 512, 256, 128, 64, 3]
    assert len(create_discriminator(paper.config).heads) == 3
    model = FaceShifter(tiny())
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64), torch.randn(2, 128))
    assert out.shape == (2, 3, 64, 64) and 0 <= float(out.min()) and float(out.max()) <= 1
    with pytest.raises(ConfigError, match="attribute_levels must be in 0..6"):
        tiny(attribute_levels=7)
    with pytest.raises(ConfigError, match="bottom"):
        tiny(resolution=96)


def test_each_ablation_switch_changes_the_model_as_stated() -> None:
    torch.manual_seed(0)
    targets, z_id = torch.rand(2, 3, 64, 64), torch.randn(1, 128).expand(2, -1)
    base = FaceShifter(tiny()).eval()
    assert all(layer.has_attributes for layer in base.generator.modules() if isinstance(layer, AADLayer))
    # AAD -> AdaIN: no attribute branch anywhere, so the swap no longer depends on the target.
    adain = FaceShifter(build_config(["model=faceshifter-tiny", "model.parts.generator=adain"]).model).eval()
    assert not any(layer.has_attributes for layer in adain.generator.modules() if isinstance(layer, AADLayer))
    with torch.no_grad():
        a = adain(targets, z_id)
        b = base(targets, z_id)
    torch.testing.assert_close(a[0], a[1])
    assert (b[0] - b[1]).abs().max() > 1e-3
    # The mask fixed at 0.5: no mask convolution, and every layer mixes the branches half and half.
    half = FaceShifter(tiny(mask="half")).eval()
    layers = [m for m in half.generator.modules() if isinstance(m, AADLayer)]
    assert all(layer.fixed_mask == 0.5 and not hasattr(layer, "mask") for layer in layers)
    h = torch.randn(2, layers[0].norm.num_features, 2, 2)
    attribute, identity, mask = layers[0].branches(h, base.attributes(targets)[0], z_id)
    assert bool((mask == 0.5).all())
    # Fewer attribute levels: the encoder stops early and the finer blocks lose their attribute branch.
    fewer = FaceShifter(tiny(attribute_levels=3)).eval()
    assert len(fewer.attributes(targets)) == 3 and len(base.attributes(targets)) == 6
    branches = [block.aad1.has_attributes for block in fewer.generator.blocks]
    assert branches == [True, True, True, False, False, False]
    assert fewer(targets, z_id).shape == (2, 3, 64, 64)
    # The discriminator by name.
    projected = build_config(["model=faceshifter-tiny", "ablation.discriminator=projected"]).model
    assert type(create_discriminator(projected)).__name__ == "ProjectedDiscriminator"
    assert type(create_discriminator(tiny())).__name__ == "MultiScaleDiscriminator"


@pytest.mark.parametrize("term", ["adversarial", "attribute", "identity", "reconstruction"])
def test_a_loss_weight_of_zero_drops_its_term(term: str) -> None:
    torch.manual_seed(0)
    cfg = build_config(["model=faceshifter-tiny", f"loss.{term}.weight=0", "loss.identity.weight=0"]).loss
    objective = FaceShifterObjective(cfg)
    model, d = FaceShifter(tiny()), create_discriminator(tiny())
    target = torch.rand(2, 3, 64, 64)
    swap, z_att = model.aei(target, torch.randn(2, 128))
    terms = objective.generator_loss(
        swap, target, torch.randn(2, 128), torch.tensor([True, False]), lambda: model.attributes(swap), z_att, d(swap)
    )
    expected = {"adversarial", "attribute", "reconstruction"} - {term}
    assert set(terms.components) == expected
    assert float(terms.total.detach()) == pytest.approx(sum(float(v) for v in terms.components.values()), rel=1e-5)
    assert isinstance(cfg, FaceShifterLossConfig) and cfg.attribute.weight == (0 if term == "attribute" else 10)


def test_occluders_cover_only_their_mask_and_repeat_with_the_seed() -> None:
    torch.manual_seed(0)
    faces = torch.rand(6, 3, 64, 64)
    cfg = OcclusionConfig(probability=1.0)
    out, masks = paste_occluders(faces, 7, cfg)
    again, _ = paste_occluders(faces, 7, cfg)
    assert torch.equal(out, again) and not torch.equal(out, paste_occluders(faces, 8, cfg)[0])
    inside = masks.bool().expand_as(faces)
    assert torch.equal(out[~inside], faces[~inside])  # outside the occluder nothing moved
    share = masks.mean(dim=(1, 2, 3))
    assert bool((share > 0.01).all()) and bool((share < 0.5).all())
    for kind in ("cutout", "hand", "texture"):
        one, m = paste_occluders(faces, 3, OcclusionConfig(probability=1.0, kinds=[kind]))
        assert bool((m.flatten(1).sum(1) > 0).all()) and (one - faces).abs().sum() > 0
    none, m = paste_occluders(faces, 3, OcclusionConfig(probability=0.0))
    assert torch.equal(none, faces) and float(m.sum()) == 0
    with pytest.raises(ConfigError, match="occlusion.kinds"):
        OcclusionConfig(kinds=["scarf"])


# ---------------------------------------------------------------- real faces


@pytest.fixture(scope="module")
def lfw_facesets(split_facesets) -> dict[str, Path]:
    """128 px crops: 3 photos each of 3 train-split people, 2 each of 2 test-split people."""
    return split_facesets(TRAIN_PEOPLE, 3, EVAL_PEOPLE, 2)


def overrides(facesets: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    return [
        "trainer=faceshifter-test",
        f"data.train=[{facesets['train']}]",
        f"data.eval={facesets['eval']}",
        f"data.lists_dir={facesets['lists']}",
        "data.eval_pairs=2",
        f"run_dir={run_dir}",
        *extra,
    ]


@pytest.mark.slow
def test_aei_net_learns_on_real_faces(lfw_facesets: dict[str, Path]) -> None:
    """24 G + D steps of the tiny preset (batch 8): the generator's non-adversarial loss and its
    self-reconstruction error (eval mode) fall."""
    from swaplab.train.oneshot_data import OneShotPairs, train_pairs

    torch.manual_seed(0)
    config = tiny()
    pairs = train_pairs(lfw_facesets["train"], 64, lists_dir=lfw_facesets["lists"])
    model, discriminator = FaceShifter(config), create_discriminator(config)
    # The identity term (through the dlib port, half the step time here) is left out of this test;
    # the run tests train with it.
    losses_cfg = FaceShifterLossConfig()
    losses_cfg.identity.weight = 0.0
    objective = FaceShifterObjective(losses_cfg)
    opt_g = torch.optim.Adam(model.parameters(), lr=4e-4, betas=(0.0, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=4e-4, betas=(0.0, 0.999))
    probe = OneShotPairs(lfw_facesets["train"], 64, lists_dir=lfw_facesets["lists"], same_identity_ratio=1.0)
    fixed = probe.batch(0, batch_size=8)

    def reconstruction() -> float:
        model.eval()
        with torch.no_grad():
            error = float((model(fixed.target, fixed.target_identity) - fixed.target).abs().mean())
        model.train()
        return error

    before, losses = reconstruction(), []
    for step in range(24):
        batch = pairs.batch(step, batch_size=8)
        swap, z_att = model.aei(batch.target, batch.source_identity)
        d_terms = objective.discriminator_loss(discriminator, batch.target, swap)
        opt_d.zero_grad(set_to_none=True)
        d_terms.total.backward()
        opt_d.step()
        discriminator.requires_grad_(False)
        g_terms = objective.generator_loss(
            swap,
            batch.target,
            batch.source_identity,
            batch.same_identity,
            lambda swap=swap: model.attributes(swap),
            z_att,
            discriminator(swap),
        )
        discriminator.requires_grad_(True)
        opt_g.zero_grad(set_to_none=True)
        g_terms.total.backward()
        opt_g.step()
        assert all(torch.isfinite(v) for v in [g_terms.total, d_terms.total]), step
        losses.append(float(g_terms.total.detach()) - float(g_terms.components["adversarial"]))
    after = reconstruction()
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    assert after < 0.8 * before, (before, after)


@pytest.fixture(scope="module")
def aei_run(lfw_facesets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from swaplab.train.loop import train

    run_dir = tmp_path_factory.mktemp("runs") / "faceshifter"
    result = train(build_config(overrides(lfw_facesets, run_dir, "model=faceshifter-tiny", "trainer.steps=4")))
    assert (result.step, result.stop_reason) == (4, "steps")
    return run_dir


@pytest.fixture(scope="module")
def hear_run(aei_run: Path, lfw_facesets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from swaplab.train.loop import train

    run_dir = tmp_path_factory.mktemp("runs") / "hearnet"
    cfg = build_config(overrides(lfw_facesets, run_dir, "model=hearnet-tiny", f"aei={aei_run}", "trainer.steps=3"))
    assert train(cfg).step == 3
    return run_dir


@pytest.mark.slow
def test_aei_run_logs_every_term_and_exports_a_faceshifter_swapper(aei_run: Path, tmp_path: Path) -> None:
    from swaplab.models.swapper import load_swapper
    from swaplab.train.export import export_model

    rows = [json.loads(line) for line in (aei_run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        for key in ("loss/adversarial", "loss/attribute", "loss/identity", "loss/reconstruction", "d_loss"):
            assert np.isfinite(row[key]), (key, row)
        assert row["loss"] == pytest.approx(sum(v for k, v in row.items() if k.startswith("loss/")), rel=1e-5)
    export_model(aei_run, tmp_path / "model")
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert (card["recipe"], card["arch"], card["swapper"]) == ("faceshifter", "faceshifter", "faceshifter")
    assert card["identity"] == {"conditions_on": "dlib-resnet", "loss_network": "dlib-resnet"}
    assert card["loss_config"]["attribute"]["weight"] == 10 and card["loss_config"]["identity"]["weight"] == 5
    swapper = load_swapper(tmp_path / "model")
    assert isinstance(swapper, FaceShifterSwapper) and not swapper.use_hear
    with pytest.raises(ValueError, match="no HEAR-Net"):
        swapper.configure(hear="on")
    with pytest.raises(ValueError, match="takes the option hear"):
        swapper.configure(steps="3")
    # HEAR-Net's phase starts from the run or from its export alike.
    from swaplab.train.recipes.faceshifter import load_aei

    from_run, from_export = load_aei(aei_run), load_aei(tmp_path / "model")
    assert from_run[0] == from_export[0] and from_run[1].keys() == from_export[1].keys()
    assert all(torch.equal(from_run[1][k], from_export[1][k]) for k in from_run[1])


@pytest.mark.slow
def test_hear_net_trains_with_aei_frozen_and_switches_at_swap_time(
    aei_run: Path, hear_run: Path, lfw: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from swaplab.provenance import verify
    from swaplab.swap.pipeline import SwapConfig, swap
    from swaplab.train.checkpoint import load_checkpoint
    from swaplab.train.export import export_model

    aei = load_file(str(aei_run / "checkpoints" / "step-0000004" / "model.safetensors"))
    hear = load_checkpoint(hear_run / "checkpoints" / "step-0000003", with_optimizer=False).model
    aei_keys = [k for k in hear if not k.startswith("hear.")]
    assert aei_keys and any(k.startswith("hear.") for k in hear)
    for key in aei_keys:  # AEI-Net frozen: its weights and batch-norm statistics did not move
        assert torch.equal(hear[key], aei["generator." + key]), key
    rows = [json.loads(line) for line in (hear_run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/identity", "loss/change", "loss/reconstruction"} <= set(rows[-1])
    assert rows[-1]["loss/change"] > 0  # the refiner has moved away from the AEI swap

    model = tmp_path / "model"
    export_model(hear_run, model)
    card = json.loads((model / "model.json").read_text())
    assert (card["recipe"], card["arch"], card["swapper"]) == ("hearnet", "faceshifter", "faceshifter")
    assert card["model"]["with_hear"] and card["hear"]["aei"] == str(aei_run)
    from swaplab.train.recipes.faceshifter import tensors_sha256

    frozen = {k.removeprefix("generator."): v for k, v in aei.items() if k.startswith("generator.")}
    assert card["hear"]["aei_weights_sha256"] == tensors_sha256(frozen)
    manifest = json.loads((hear_run / "manifest.json").read_text())
    assert manifest["facesets"]["aei"]["weights_sha256"] == tensors_sha256(frozen)

    # Two peopleDevTest people none of the runs saw.
    source = sorted((lfw / "Adel_Al-Jubeir").glob("*.jpg"))[0]
    target = sorted((lfw / "Abid_Hamid_Mahmud_Al-Tikriti").glob("*.jpg"))[0]
    outputs = {}
    for hear_switch in ("on", "off"):
        out = tmp_path / f"swap-{hear_switch}.png"
        cfg = SwapConfig(precision="fp32", source=[source], options={"hear": hear_switch})
        report = swap(model, target, out, cfg, progress=False)
        assert report.faces_swapped == 1, report.lines()
        assert verify(out).synthetic
        outputs[hear_switch] = out
    from swaplab.io.images import read_image

    before = read_image(target)[0].astype(int)
    on, off = (read_image(outputs[k])[0].astype(int) for k in ("on", "off"))
    changed = np.abs(before - on).max(axis=2) > 24
    ys, xs = np.nonzero(changed)
    assert changed.mean() > 0.05 and 60 < ys.mean() < 190 and 60 < xs.mean() < 190
    assert changed[:20].mean() < 0.01 and changed[:, :20].mean() < 0.01
    assert np.abs(on - off).max() > 0  # HEAR-Net refines the swap

    # The evaluator scores it like any identity-conditioned model (HEAR on: the swapper's default).
    from swaplab.evaluate import evaluate

    result = evaluate(
        model,
        out_dir=tmp_path / "eval",
        protocol="oneshot_v1",
        limit=1,
        encoders=("dlib-resnet",),
        detector_pairs=-1,
        reference_limit=4,
        gallery_limit=4,
        gallery_images=1,
        kid_subsets=2,
        kid_subset_size=4,
        report=False,
    )
    metrics = result.metrics["metrics"]
    assert metrics["masked_ssim/self"]["n"] == 1 and 0 < metrics["masked_ssim/self"]["mean"] < 0.95
    assert "identity_similarity/dlib-resnet" in metrics


@pytest.mark.slow
def test_a_model_conditioned_on_another_identity_network_says_so(
    lfw_facesets: dict[str, Path], lfw_arcface: Path, tmp_path: Path
) -> None:
    """model.identity_network=lfw-arcface: the faces are embedded by it up front, the card says so."""
    from swaplab.models.swapper import load_swapper
    from swaplab.train.export import export_model
    from swaplab.train.loop import train

    arcface = ("model=faceshifter-tiny", "model.identity_network=lfw-arcface", "trainer.steps=1")
    with pytest.raises(ConfigError, match="lfw-arcface embeds in 16 dimensions: set model.identity_dim=16"):
        train(build_config(overrides(lfw_facesets, tmp_path / "wrong", *arcface)))
    run = tmp_path / "run"
    assert train(build_config(overrides(lfw_facesets, run, *arcface, "model.identity_dim=16"))).step == 1
    export_model(run, tmp_path / "model")
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert card["identity"] == {"conditions_on": "lfw-arcface", "loss_network": "dlib-resnet"}
    swapper = load_swapper(tmp_path / "model")
    assert swapper.conditions_on == "lfw-arcface"
    assert swapper.swap(torch.rand(2, 3, 64, 64), torch.randn(1, 16)).rgb.shape == (2, 3, 64, 64)


def test_the_hear_phase_needs_a_trained_aei_net(tmp_path: Path) -> None:
    from swaplab.train.loop import train

    with pytest.raises(ConfigError, match="aei must name a trained AEI-Net"):
        train(build_config(["model=hearnet-tiny", f"run_dir={tmp_path / 'h'}", "data.train=[x]"]))
    with pytest.raises(ConfigError, match="aei="):
        train(build_config(["model=hearnet-tiny", f"aei={tmp_path}", f"run_dir={tmp_path / 'h'}", "data.train=[x]"]))


# ---------------------------------------------------------------- a sweep


@pytest.mark.slow
def test_a_two_run_faceshifter_sweep_writes_its_report(lfw_facesets: dict[str, Path], tmp_path: Path) -> None:
    from swaplab.study import read_sweep, run_sweep

    study = tmp_path / "fs.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "name": "fs",
                "base": [
                    "model=faceshifter-tiny",
                    "trainer=faceshifter-test",
                    "trainer.steps=2",
                    "trainer.progress=false",
                ],
                "runs": {"baseline": [], "mask-half": ["model.mask=half"]},
                "eval": "off",
                "launcher": {"name": "local", "max_parallel": 1, "threads_per_run": 1},
            }
        )
    )
    data = overrides(lfw_facesets, tmp_path)[1:5]
    result = run_sweep(study, tmp_path / "sweep", data, printer=None, poll_s=0.2)
    assert result.exit_code == 0, [(r.name, r.status) for r in result.runs]
    runs = {r["name"]: r for r in read_sweep(tmp_path / "sweep")["runs"]}
    assert {n: r["status"] for n, r in runs.items()} == {"baseline": "done", "mask-half": "done"}
    assert runs["baseline"]["config_hash"] != runs["mask-half"]["config_hash"]
    text = result.report.read_text()
    assert "baseline" in text and "mask-half" in text and (result.report.parent / "figures" / "loss.png").is_file()


def test_the_shipped_ablation_study_switches_one_thing_per_run() -> None:
    from swaplab.study import load_study

    study = load_study(Path(__file__).resolve().parents[1] / "studies" / "faceshifter-ablations.yaml")
    configs = {run.name: build_config(list(run.overrides)) for run in study.expand()}
    base = configs.pop("baseline")
    assert base.model.name == "faceshifter-tiny" and base.trainer.steps == 600
    changed = {
        "adain": ("model.parts.generator", "adain"),
        "mask-half": ("model.mask", "half"),
        "attribute-levels-3": ("model.attribute_levels", 3),
        "projected-d": ("model.parts.discriminator", "projected"),
        "no-adversarial": ("loss.adversarial.weight", 0),
        "no-attribute": ("loss.attribute.weight", 0),
        "no-identity": ("loss.identity.weight", 0),
        "no-reconstruction": ("loss.reconstruction.weight", 0),
    }
    assert set(configs) == set(changed)
    for name, (key, value) in changed.items():
        obj, base_obj = configs[name], base
        for part in key.split("."):
            obj, base_obj = getattr(obj, part), getattr(base_obj, part)
        assert obj == value and base_obj != value, name
