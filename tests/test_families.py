"""The cross-family study's pieces: runs that use another run's result (``${run:NAME}``), the
occluded-target protocol (occluders pasted on the targets, ``occluder_error``), further protocols in
a study's scoring (``eval.also``) and the report's grid of every scored run's evaluation swaps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_study import FakeLauncher, sweep

from swaplab.evaluate.evaluator import EvalOptions, evaluate
from swaplab.evaluate.occluded import occlude_image
from swaplab.evaluate.protocol import OCCLUDED_PAIRS, lfw_test_people, load_protocol
from swaplab.io.images import read_image
from swaplab.metrics import compute, direction
from swaplab.provenance import verify
from swaplab.study import StudyError, load_study, read_sweep
from swaplab.study.report import best_runs, scored_swap_grid
from swaplab.study.sweep import eval_command, run_references
from swaplab.study.sweep_data import load_study_data

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- runs that use another run


def chained_study(**extra) -> dict:
    return {
        "name": "chain",
        "runs": {
            "second": ["trainer=test", "aei=${run:first}"],  # listed first: it must still wait for `first`
            "first": ["trainer=test"],
            "other": ["trainer=test"],
        },
        "eval": "off",
        "launcher": {"max_parallel": 2, "threads_per_run": 1},
        **extra,
    }


def test_a_run_naming_another_runs_folder_gets_its_path_and_starts_after_it_trained(tmp_path):
    launcher = FakeLauncher(max_parallel=2)
    result = sweep(chained_study(), tmp_path, launcher)
    assert result.exit_code == 0
    # `second` was queued first but waited: `first` and `other` started, `second` after `first` finished.
    assert launcher.started.index("first") < launcher.started.index("second")
    assert launcher.started[:2] == ["first", "other"]
    runs = {r["name"]: r for r in read_sweep(tmp_path / "sweep")["runs"]}
    assert f"aei={tmp_path / 'sweep' / 'first'}" in runs["second"]["overrides"]
    assert runs["second"]["own_overrides"] == ["trainer=test", "aei=${run:first}"]
    assert run_references(["a=${run:x}", "b=${run:y}/z", "c=${run:x}"]) == ["x", "y"]


def test_a_run_trained_on_a_run_that_trains_again_is_flagged_as_stale(tmp_path):
    sweep(chained_study(), tmp_path, FakeLauncher())
    lines: list[str] = []
    again = FakeLauncher()
    sweep(chained_study(), tmp_path, again, "trainer.lr=1e-3", printer=lines.append, only=["first", "second"])
    assert "first" in again.started and "second" in again.started  # the command line changed both
    lines.clear()
    again = FakeLauncher()
    study = chained_study(runs={**chained_study()["runs"], "first": ["trainer=test", "trainer.lr=1e-2"]})
    sweep(study, tmp_path, again, "trainer.lr=1e-3", printer=lines.append)
    assert again.started[0] == "first" and "second" not in again.started
    assert any("run second was trained on run(s) first, which train again now" in line for line in lines)


def test_a_run_whose_referenced_run_failed_fails_without_starting(tmp_path):
    launcher = FakeLauncher(max_parallel=1, fail=("first",))
    lines: list[str] = []
    result = sweep(chained_study(), tmp_path, launcher, printer=lines.append)
    assert result.exit_code == 1 and "second" not in launcher.started and "other" in launcher.started
    runs = {r.name: r for r in result.runs}
    assert runs["first"].status == "failed" and runs["second"].status == "failed"
    assert any("second: it needs run(s) first, which did not train" in line for line in lines)


def test_a_reference_to_no_run_or_to_itself_is_refused(tmp_path):
    study = chained_study(runs={"a": ["aei=${run:nope}"], "b": []})
    with pytest.raises(StudyError, match=r"\$\{run:nope\} names no run of the study; its runs: a, b"):
        sweep(study, tmp_path, FakeLauncher())
    with pytest.raises(StudyError, match="refers to the run itself"):
        sweep(chained_study(runs={"a": ["aei=${run:a}"]}), tmp_path, FakeLauncher())


def test_the_families_study_compares_each_family_once_at_one_budget():
    study = load_study(REPO / "studies" / "oneshot-families.yaml")
    runs = {run.name: run for run in study.expand()}
    models = {name: next(o for o in run.own if o.startswith("model=")) for name, run in runs.items()}
    assert models == {
        "simswap": "model=simswap-tiny",
        "faceshifter": "model=faceshifter-tiny",
        "faceshifter-hear": "model=hearnet-tiny",
        "glgan": "model=glgan-tiny",
        "fsgan": "model=fsgan-tiny",
        "diffusion": "model=ddpm-tiny",
    }
    # the budget comes last, after each run's own trainer preset, so no preset can reset it
    assert all(run.overrides[-2] == "trainer.time_budget_s=300" for run in runs.values())
    assert run_references(runs["faceshifter-hear"].own) == ["faceshifter"]
    assert study.eval.protocol == "oneshot_v1" and study.eval.encoders == ["dlib-resnet", "lfw-arcface"]
    assert study.eval.also == ["oneshot_occluded_v1"]
    command = eval_command(study, Path("sweeps/x/simswap"))
    assert command[1:4] == ["-m", "swaplab.study.score", "sweeps/x/simswap"]
    assert command[command.index("--also") + 1] == "oneshot_occluded_v1"


# ---------------------------------------------------------------- occluders


def test_occluder_error_is_zero_when_kept_one_when_painted_over_and_a_ratio_in_between():
    torch.manual_seed(0)
    original = torch.rand(2, 3, 8, 8)
    occluded = original.clone()
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 2:6] = 1
    occluded[:, :, 2:5, 2:6] = 0.9
    assert np.allclose(
        compute("occluder_error", swap=occluded, occluded=occluded, original=original, mask=mask).values, 0
    )
    back = compute("occluder_error", swap=original, occluded=occluded, original=original, mask=mask).values
    assert np.allclose(back, 1.0)
    # half-way between the occluder and the face under it, inside the mask; outside it does not count
    halfway = torch.where(mask.bool(), (original + occluded) / 2, torch.rand(2, 3, 8, 8))
    values = compute("occluder_error", swap=halfway, occluded=occluded, original=original, mask=mask).values
    assert np.allclose(values, 0.5, atol=1e-6)
    assert direction("occluder_error") == "lower"


def test_occluded_targets_change_only_the_masked_pixels_of_the_central_square_and_repeat_with_the_seed(lfw):
    image = read_image(sorted((lfw / "Colin_Powell").glob("*.jpg"))[0])[0]
    occlusion = load_protocol("oneshot_occluded_v1").occlusion
    occluded, mask = occlude_image(image, 1234, occlusion)
    again, mask_again = occlude_image(image, 1234, occlusion)
    assert np.array_equal(occluded, again) and np.array_equal(mask, mask_again)
    changed = (occluded != image).any(axis=2)
    assert changed.any() and not (changed & ~mask).any()
    side = int(round(min(image.shape[:2]) * occlusion["region_share"]))
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    outside = np.ones_like(mask)
    outside[top : top + side, left : left + side] = False
    assert not (mask & outside).any()
    other, _ = occlude_image(image, 99, occlusion)
    assert not np.array_equal(other, occluded)


def test_occluded_protocol_pairs_are_test_people_with_their_own_draw_and_seeds(shared_data):
    spec = load_protocol("oneshot_occluded_v1")
    oneshot = load_protocol("oneshot_v1")
    assert spec.kind == "oneshot" and len(spec.pairs) == OCCLUDED_PAIRS
    assert all(p.occluder_seed is not None for p in spec.pairs)
    assert len({p.occluder_seed for p in spec.pairs}) == len(spec.pairs)
    assert [p.target for p in spec.pairs[:5]] != [p.target for p in oneshot.pairs[:5]]
    assert all(p.occluder_seed is None for p in oneshot.pairs) and not oneshot.occlusion
    everyone = set(lfw_test_people(shared_data))
    assert all(p.source_identity in everyone and p.target_identity in everyone for p in spec.pairs)


def test_the_per_pair_occluded_protocol_is_per_pair_v1_with_an_occluder_on_each_target():
    spec, plain = load_protocol("per_pair_occluded_v1"), load_protocol("per_pair_v1")
    assert spec.kind == "per_pair" and spec.occlusion == load_protocol("oneshot_occluded_v1").occlusion
    strip = [(p.id, p.source_identity, p.source_images, p.target) for p in spec.pairs]
    assert strip == [(p.id, p.source_identity, p.source_images, p.target) for p in plain.pairs]
    assert (spec.gallery, spec.reference, spec.heldout) == (plain.gallery, plain.reference, plain.heldout)
    seeds = [p.occluder_seed for p in spec.pairs]
    assert None not in seeds and len(set(seeds)) == len(seeds)
    assert not set(seeds) & {p.occluder_seed for p in load_protocol("oneshot_occluded_v1").pairs}


@pytest.fixture(scope="module")
def occluded_scores(tmp_path_factory, shared_data):
    """Two 'tools' scored on the first 3 occluded pairs: one returns the occluded targets untouched
    (keeps every occluder), the other the original photos (paints every occluder over)."""
    root = tmp_path_factory.mktemp("occluded")
    options = EvalOptions(limit=3, reference_limit=4, gallery_limit=3, gallery_images=1, detector_pairs=-1)
    spec = load_protocol("oneshot_occluded_v1")
    # a first pass writes the occluded targets the other tool is given (their swaps: the targets themselves)
    keeps = root / "keeps-swaps"
    keeps.mkdir()
    paints = root / "paints-swaps"
    paints.mkdir()
    for pair in spec.pairs[:3]:
        shutil.copy(shared_data / pair.target, paints / f"{pair.id}.jpg")
    paint = evaluate(
        swaps=paints, protocol="oneshot_occluded_v1", out_dir=root / "sweep" / "paints" / "eval", options=options
    )
    for pair in spec.pairs[:3]:
        shutil.copy(
            root / "sweep" / "paints" / "eval" / "occluded-targets" / f"{pair.id}.png", keeps / f"{pair.id}.png"
        )
    keep = evaluate(
        swaps=keeps, protocol="oneshot_occluded_v1", out_dir=root / "sweep" / "keeps" / "eval", options=options
    )
    return root, keep, paint


@pytest.mark.slow
def test_the_evaluator_scores_how_much_of_each_occluder_survives(occluded_scores):
    _, keep, paint = occluded_scores
    kept, painted = keep.metrics["metrics"]["occluder_error"], paint.metrics["metrics"]["occluder_error"]
    assert kept["n"] >= 2 and kept["mean"] == pytest.approx(0.0, abs=1e-6) and kept["better"] == "lower"
    # the original photo as the 'swap' is exactly the face under the occluder: 1, up to JPEG's rounding
    assert painted["n"] == kept["n"] and painted["mean"] == pytest.approx(1.0, abs=1e-6)
    items = json.loads((keep.out_dir / "per_item.json").read_text())["items"]
    assert all(Path(i["target"]).parent.name == "occluded-targets" and i["original"].endswith(".jpg") for i in items)
    assert all(i["occluder_error"] == pytest.approx(0.0, abs=1e-6) for i in items if i["occluder_error"] is not None)


@pytest.mark.slow
def test_the_study_report_merges_further_protocols_and_shows_every_runs_evaluation_swaps(occluded_scores):
    root, _, _ = occluded_scores
    sweep_dir = root / "sweep"
    for name in ("keeps", "paints"):  # the occluded set as each run's `also` protocol, oneshot's copy as main
        shutil.copytree(sweep_dir / name / "eval", sweep_dir / name / "eval-oneshot_occluded_v1", dirs_exist_ok=True)
        (sweep_dir / name / "config.yaml").write_text("recipe: oneshot\n")
    runs = [
        {"name": n, "own_overrides": [], "run_dir": str(sweep_dir / n), "status": "done"} for n in ("keeps", "paints")
    ]
    document = {"format": "swaplab-sweep", "study": "occ", "baseline": "keeps", "runs": runs}
    document["eval"] = {"protocol": "oneshot_v1", "also": ["oneshot_occluded_v1"]}
    (sweep_dir / "sweep.json").write_text(json.dumps(document))
    data = load_study_data(sweep_dir)
    summary = {run.name: run.summary for run in data.runs}
    assert summary["keeps"]["occluder_error @oneshot_occluded_v1"] == pytest.approx(0.0, abs=1e-6)
    assert summary["paints"]["occluder_error @oneshot_occluded_v1"] == pytest.approx(1.0, abs=1e-6)
    assert direction("occluder_error @oneshot_occluded_v1") == "lower"
    lines = best_runs(data.runs)
    assert any(
        line.startswith("best occluder_error @oneshot_occluded_v1 (lower): keeps 0, next paints 1") for line in lines
    )
    assert lines[-1].startswith("metrics won of ")
    grid, shown = scored_swap_grid(data, root / "grid.png", count=3)
    assert shown == ["keeps", "paints"]
    image = read_image(grid)[0]
    assert image.shape[0] > 4 * 96  # sources, targets and one row per run, each with its label strip
    marked = verify(grid)
    assert marked.synthetic and marked.watermark.present


# ---------------------------------------------------------------- the diffusion family in the study


@pytest.mark.slow
def test_a_conditioned_diffusion_swapper_takes_one_identity_per_target(pair_facesets, tmp_path):
    """The evaluator's self-reconstruction conditions each target on its own identity: rows stay rows."""
    from test_diffusion import TINY

    from swaplab.models.swapper import load_swapper
    from swaplab.train.entry import build_config
    from swaplab.train.export import export_model
    from swaplab.train.loop import train

    words = ["model=ddpm-tiny", *TINY, "model.condition=identity", f"data.train=[{pair_facesets[0]}]",
             "data.holdout=4", "trainer=ddpm-test", "trainer.steps=2", f"run_dir={tmp_path / 'run'}"]  # fmt: skip
    train(build_config(words))
    export_model(tmp_path / "run", tmp_path / "model")
    swapper = load_swapper(tmp_path / "model")
    swapper.configure(sampler="ddim", **{"sampler.steps": "4", "swap.strength": "1.0", "swap.cfg_scale": "3"})
    faces = torch.rand(2, 3, 16, 16)
    first, second = torch.randn(1, 128), torch.randn(1, 128)

    def swap(*rows: torch.Tensor) -> torch.Tensor:  # the same noise draws every time
        return swapper.swap(faces, torch.cat(rows), torch.Generator().manual_seed(0)).rgb

    ab, ba, aa = swap(first, second), swap(second, first), swap(first, first)
    assert swapper.reconstruct(faces, "self", torch.cat([first, second])).rgb.shape == (2, 3, 16, 16)
    assert ab.shape == (2, 3, 16, 16)
    assert (ab[0] - ba[0]).abs().max() > 1e-4  # row 0 follows its own identity
    torch.testing.assert_close(ab[0], aa[0])  # and only its own: row 1's identity does not reach it
    with pytest.raises(ValueError, match="3 source identities for 2 targets"):
        swapper.swap(faces, torch.randn(3, 128))


# ---------------------------------------------------------------- blend=glgan


def test_glgan_blend_starts_as_the_alpha_blend_and_changes_only_where_the_mask_reaches(tmp_path, monkeypatch):
    from swaplab.config import config_group
    from swaplab.models.glgan import GLGANBlender
    from swaplab.models.installed import NetworkMissing, save_built
    from swaplab.swap.blend import blend, feather

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (110, 100, 3), dtype=np.uint8)
    face = rng.integers(0, 256, (110, 100, 3), dtype=np.uint8)
    mask = np.zeros((110, 100), np.float32)
    mask[25:85, 20:80] = 1.0
    monkeypatch.delenv("SWAPLAB_GLGAN_BLENDER", raising=False)
    with pytest.raises(NetworkMissing, match="swaplab nets build glgan-blender"):
        blend(frame, face, mask, "glgan")
    config = config_group("model").create("glgan-blend-tiny")
    torch.manual_seed(0)
    untrained = save_built("glgan-blender", GLGANBlender(config), config, tmp_path / "untrained.safetensors")
    monkeypatch.setenv("SWAPLAB_GLGAN_BLENDER", str(untrained))
    for feather_px in (0, 6):
        alpha = blend(frame, face, mask, "alpha", feather_px=feather_px)
        out = blend(frame, face, mask, "glgan", feather_px=feather_px)
        assert np.abs(out.astype(int) - alpha.astype(int)).max() <= 1  # its head starts at zero: the paste
    net = GLGANBlender(config)
    torch.nn.init.normal_(net.unet.head.weight, std=0.5)  # a blender that does re-make the seam
    monkeypatch.setenv(
        "SWAPLAB_GLGAN_BLENDER", str(save_built("glgan-blender", net, config, tmp_path / "w.safetensors"))
    )
    out = blend(frame, face, mask, "glgan", feather_px=6)
    alpha = blend(frame, face, mask, "alpha", feather_px=6)
    outside = feather(mask, 6) == 0
    np.testing.assert_array_equal(out[outside], frame[outside])  # beyond the feathered mask: the frame, exactly
    changed = np.abs(out.astype(int) - alpha.astype(int)).max(axis=2) > 2
    edge = np.zeros_like(mask, bool)
    edge[15:95, 10:90] = True
    edge[35:75, 30:70] = False  # a ring around the pasted square's edge
    assert changed.any() and changed[edge].mean() > 10 * max(changed[~edge].mean(), 1e-3)


@pytest.mark.slow
def test_nets_build_installs_the_glgan_blender_for_the_swap_stage(lfw, tmp_path, monkeypatch):
    from swaplab.facesets.extract import ExtractConfig, extract
    from swaplab.models.glgan import GLGANBlender
    from swaplab.models.glgan_blend import load_glgan_blender
    from swaplab.train.built_networks import build_network

    cfg = ExtractConfig(size=128)
    cfg.faces.max_faces = 1
    images = [p for person in ("Tony_Blair", "Hugo_Chavez") for p in sorted((lfw / person).glob("*.jpg"))[:2]]
    extract(images, tmp_path / "faces", cfg, progress=False)
    monkeypatch.delenv("SWAPLAB_GLGAN_BLENDER", raising=False)
    monkeypatch.setenv("SWAPLAB_CACHE", str(tmp_path / "cache"))  # installed here, not for the whole session
    words = [f"data.train=[{tmp_path / 'faces'}]", f"data.lists_dir={lfw.parent}"]
    weights = build_network("glgan-blender", "test", words, progress=False)
    net = load_glgan_blender()
    assert isinstance(net, GLGANBlender) and weights.is_file() and net.resolution == 64
    run = json.loads((weights.parent / "run-test" / "manifest.json").read_text())
    assert run["final_step"] == 3
