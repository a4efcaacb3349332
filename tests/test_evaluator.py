"""The evaluator end to end: pinned protocols, a tiny model scored, other tools' swaps, reports, the CLI."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from swaplab.cli import main
from swaplab.evaluate.encoders import identity_loss_warnings
from swaplab.evaluate.evaluator import EvalOptions, evaluate, evaluate_many, expand_targets
from swaplab.evaluate.faces import FaceCache
from swaplab.evaluate.protocol import (
    LFW_IMAGES,
    PROTOCOL_DIR,
    build_protocol,
    lfw_test_people,
    load_protocol,
)
from swaplab.evaluate.targets import find_swap
from swaplab.provenance import verify

#: Small enough for seconds per evaluation: 3 pairs, 4 real faces, the gallery's first 4 other people.
# Detectability (a trained classifier) is tested in test_oneshot_train.py; these checks skip it.
QUICK = EvalOptions(limit=3, reference_limit=4, gallery_limit=4, gallery_images=2, detector_pairs=-1)

IMAGE_KEYS = {
    "no_face_in_swap",
    "identity_similarity/dlib-resnet",
    "target_identity_similarity/dlib-resnet",
    "identity_retrieval/dlib-resnet",
    "pose_error",
    "expression_error",
    "sharpness_ratio",
    "frechet_distance",
    "kernel_distance",
}
RECONSTRUCTION_KEYS = {f"{m}/{side}" for m in ("masked_ssim", "masked_psnr", "masked_l1") for side in ("src", "dst")}


# Both identity networks measure: dlib's port and swaplab's own (its seconds-long test build).
pytestmark = pytest.mark.usefixtures("one_thread", "lfw_arcface")


@pytest.fixture(scope="module")
def tiny_model(pair_facesets, tmp_path_factory) -> Path:
    """A df-cpu model trained for 2 steps on the reference pair's first 24 photos, exported."""
    from swaplab.train.entry import build_config
    from swaplab.train.export import export_model
    from swaplab.train.loop import train

    src, dst = pair_facesets
    work = tmp_path_factory.mktemp("tiny")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(build_config(["model=df-cpu", f"data.src={src}", f"data.dst={dst}", "trainer=test",
                            "trainer.steps=2", f"run_dir={work / 'run'}"]))  # fmt: skip
    finally:
        torch.set_num_threads(before)
    export_model(work / "run", work / "model")
    return work / "model"


@pytest.fixture(scope="module")
def scored(one_thread_module, tiny_model, tmp_path_factory, shared_data):
    return evaluate(tiny_model, out_dir=tmp_path_factory.mktemp("eval") / "a", data_root=shared_data, options=QUICK)


def finite_numbers(entry: dict) -> list[float]:
    return [v for k, v in entry.items() if k != "better" and isinstance(v, (int, float))]


# ---------------------------------------------------------------- protocols


def test_protocol_builder_is_deterministic_and_matches_the_committed_files(shared_data):
    built = build_protocol(shared_data)
    assert built == build_protocol(shared_data)
    for name, content in built.items():
        committed = json.loads((PROTOCOL_DIR / f"{name}.json").read_text())
        assert committed == content, f"{name}.json differs from build_protocol: regenerate it"
        for key in ("protocol", "version", "seed", "created_with", "kind"):
            assert key in committed
    # Every pinned path is relative to the data root and exists there.
    for name in built:
        spec = load_protocol(name)
        paths = [p for pair in spec.pairs for p in (pair.target, *pair.source_images)]
        paths += [p for photos in spec.gallery.values() for p in photos] + list(spec.reference)
        paths += [clip.path for clip in spec.clips]
        assert paths and all(not Path(p).is_absolute() and (shared_data / p).is_file() for p in paths)


def test_oneshot_pairs_come_from_the_test_split_only_and_pair_different_people(shared_data):
    test_people = set(lfw_test_people(shared_data))
    train_people = set(lfw_test_people_file(shared_data / "lfw" / "peopleDevTrain.txt"))
    spec = load_protocol("oneshot_v1")
    assert len(spec.pairs) == 200 and spec.seed == 0
    sources = [p.source_identity for p in spec.pairs]
    assert len(set(sources)) == 200
    for pair in spec.pairs:
        assert pair.source_identity != pair.target_identity
        assert {pair.source_identity, pair.target_identity} <= test_people
        assert not {pair.source_identity, pair.target_identity} & train_people
        assert Path(pair.target).parent.name == pair.target_identity
        assert [Path(s).parent.name for s in pair.source_images] == [pair.source_identity]
        # The gallery holds the source's *other* photos.
        gallery = spec.gallery[pair.source_identity]
        assert gallery and pair.source_images[0] not in gallery
        assert {Path(g).parent.name for g in gallery} == {pair.source_identity}


def lfw_test_people_file(path: Path) -> list[str]:
    return [line.split("\t")[0] for line in path.read_text().split("\n")[1:] if line.strip()]


def test_per_pair_protocol_pins_the_last_24_photos_of_each_person(shared_data):
    spec = load_protocol("per_pair_v1")
    for side, person in (("src", "George_W_Bush"), ("dst", "Colin_Powell")):
        photos = sorted((shared_data / LFW_IMAGES / person).glob("*.jpg"))
        assert [Path(p).name for p in spec.heldout[side]] == [p.name for p in photos[-24:]]
    assert [p.target for p in spec.pairs] == list(spec.heldout["dst"])
    assert all(p.source_images == spec.heldout["src"] for p in spec.pairs)
    assert all(p.id == Path(p.target).stem for p in spec.pairs)
    test_people = set(lfw_test_people(shared_data))
    distractors = [name for name in spec.gallery if name not in ("George_W_Bush", "Colin_Powell")]
    assert len(distractors) == 48 and set(distractors) <= test_people
    # The destination's gallery photos are never the held-out targets.
    assert not set(spec.gallery["Colin_Powell"]) & set(spec.heldout["dst"])


# ---------------------------------------------------------------- a model scored


def test_a_tiny_model_writes_every_metric_and_a_report(scored, shared_data):
    out = scored.out_dir
    document = json.loads((out / "metrics.json").read_text())
    assert document["protocol"]["name"] == "per_pair_v1" and document["protocol"]["version"] == 1
    assert "dlib-resnet" in document["networks"]["identity"]
    assert set(document["metrics"]) >= IMAGE_KEYS | RECONSTRUCTION_KEYS
    assert {"identity_similarity/lfw-arcface", "identity_retrieval/lfw-arcface"} <= set(document["metrics"])
    assert document["networks"]["identity"] == ["dlib-resnet", "lfw-arcface"]
    for key, entry in document["metrics"].items():
        assert entry["better"] in ("higher", "lower", "one", "reference"), key
        numbers = finite_numbers(entry)
        assert numbers and all(math.isfinite(v) for v in numbers), (key, entry)
    samples = document["samples"]
    assert samples["pairs_scored"] == 3 and samples["reference_faces"] == 4
    assert samples["reconstruction_faces"] == {"src": 3, "dst": 3}
    assert document["metrics"]["frechet_distance"]["n_reference"] == 4
    assert document["metrics"]["identity_retrieval/dlib-resnet"]["gallery_identities"] == 5  # Bush + 4 others
    items = json.loads((out / "per_item.json").read_text())
    assert [it["id"] for it in items["items"]] == ["Colin_Powell_0213", "Colin_Powell_0214", "Colin_Powell_0215"]
    assert len(items["reconstruction"]) == 6
    # Each swap's pose change per angle is the pose error's parts; the pose entry says their sizes.
    posed = [it for it in items["items"] if it["pose_error"] is not None]
    assert posed and all(math.isclose(math.hypot(*it["pose_change"]), it["pose_error"], abs_tol=2e-3) for it in posed)
    pose = document["metrics"]["pose_error"]
    assert pose["yaw_abs"] == pytest.approx(np.mean([abs(it["pose_change"][0]) for it in posed]), abs=1e-3)
    # The swaps are written marked as synthetic.
    swap = Path(items["items"][0]["swap"])
    assert swap.parent == out / "swaps" and verify(swap).synthetic
    # The report: the metric table, and images that exist beside it.
    page = (out / "report.html").read_text()
    assert "<table" in page and "pose_error" in page and "&darr; lower" in page and "sharpness ratio" in page
    sources = re.findall(r"<img src='([^']+)'", page)
    assert len(sources) >= 5 and all((out / s).is_file() for s in sources)
    assert "figures/grid.png" in sources and verify(out / "figures" / "grid.png").synthetic


def test_evaluating_twice_gives_identical_numbers(scored, tiny_model, tmp_path, shared_data):
    again = evaluate(tiny_model, out_dir=tmp_path / "b", data_root=shared_data, options=QUICK, cache=FaceCache())
    assert again.metrics["metrics"] == scored.metrics["metrics"]

    def values(result):
        return [{k: v for k, v in item.items() if k != "swap"} for item in result.items]

    assert values(again) == values(scored)


def test_a_run_folder_is_exported_and_scores_like_its_model(scored, tiny_model, tmp_path, shared_data):
    run = Path(json.loads((tiny_model / "model.json").read_text())["trained_from"]["run_dir"])
    result = evaluate(run, out_dir=tmp_path / "run", data_root=shared_data, options=QUICK, report=False)
    assert result.metrics["target"]["kind"] == "run"
    assert result.metrics["metrics"] == scored.metrics["metrics"]
    assert not (tmp_path / "run" / "report.html").exists()


# ---------------------------------------------------------------- other tools' swaps


def test_swaps_that_are_the_targets_score_as_the_targets(tmp_path, lfw, shared_data):
    targets, swaps = tmp_path / "targets", tmp_path / "swaps"
    targets.mkdir()
    for name in ("Colin_Powell_0001", "Colin_Powell_0002", "Colin_Powell_0003"):
        shutil.copy(lfw / "Colin_Powell" / f"{name}.jpg", targets / f"{name}.jpg")
    shutil.copytree(targets, swaps)
    sources = [lfw / "George_W_Bush" / f"George_W_Bush_000{i}.jpg" for i in (1, 2, 3)]
    result = evaluate(swaps=swaps, sources=sources, targets=targets, out_dir=tmp_path / "out",
                      data_root=shared_data, options=QUICK)  # fmt: skip
    metrics = result.metrics["metrics"]
    assert result.metrics["target"]["kind"] == "swaps"
    assert metrics["no_face_in_swap"]["value"] == 0
    assert metrics["pose_error"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["expression_error"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["sharpness_ratio"]["mean"] == pytest.approx(1.0, abs=1e-6)
    for item in result.items:
        similarity, baseline = (
            item["identity_similarity"]["dlib-resnet"],
            item["target_identity_similarity"]["dlib-resnet"],
        )
        assert similarity == pytest.approx(baseline, abs=1e-5)
        assert 0.5 < similarity < 0.95  # a different person: clearly below the same-person range
    assert metrics["identity_similarity/dlib-resnet"]["mean"] == pytest.approx(
        metrics["target_identity_similarity/dlib-resnet"]["mean"], abs=1e-5
    )
    # The gallery: the source, the targets and the protocol's first 4 other people. Unchanged targets
    # are never retrieved as the source.
    retrieval = metrics["identity_retrieval/dlib-resnet"]
    assert retrieval["gallery_identities"] == 6 and retrieval["top1"] == 0.0


def test_the_mark_does_not_count_as_detail(tmp_path, lfw, shared_data):
    """A swap that is its target, marked as swaplab marks every output, is as sharp as its target:
    the watermark's faint texture alone raised the Laplacian ratio of such swaps to about 1.26."""
    from swaplab.io.images import read_image
    from swaplab.provenance import Provenance, write_marked_image

    targets, swaps = tmp_path / "targets", tmp_path / "swaps"
    targets.mkdir()
    swaps.mkdir()
    for name in ("Colin_Powell_0001", "Colin_Powell_0002", "Colin_Powell_0003"):
        shutil.copy(lfw / "Colin_Powell" / f"{name}.jpg", targets / f"{name}.jpg")
        write_marked_image(swaps / f"{name}.png", read_image(targets / f"{name}.jpg")[0], Provenance.create("test"))
    sources = [lfw / "George_W_Bush" / f"George_W_Bush_000{i}.jpg" for i in (1, 2, 3)]
    result = evaluate(swaps=swaps, sources=sources, targets=targets, out_dir=tmp_path / "out",
                      data_root=shared_data, options=QUICK)  # fmt: skip
    ratios = [item["sharpness_ratio"] for item in result.items]
    assert ratios == pytest.approx([1.0] * 3, abs=0.03), ratios


def test_protocol_pairs_from_another_tool_are_found_by_pair_id(tmp_path, shared_data):
    spec = load_protocol("oneshot_v1")
    swaps = tmp_path / "swaps"
    swaps.mkdir()
    for pair in spec.pairs[:2]:  # "swaps" that are the target photos themselves, named <pair id>.jpg
        shutil.copy(shared_data / pair.target, swaps / f"{pair.id}.jpg")
    assert find_swap(swaps, "0001") == swaps / "0001.jpg" and find_swap(swaps, "0002") is None
    options = EvalOptions(limit=3, reference_limit=4, gallery_limit=3, gallery_images=1, detector_pairs=-1)
    result = evaluate(
        swaps=swaps, protocol="oneshot_v1", out_dir=tmp_path / "out", data_root=shared_data, options=options
    )
    assert result.metrics["samples"]["pairs_scored"] == 2 and result.metrics["samples"]["missing_swaps"] == 1
    assert any("no swap file" in w for w in result.warnings)
    # The gallery: the three pairs' sources (two were swapped) and three other identities.
    assert result.metrics["metrics"]["identity_retrieval/dlib-resnet"]["gallery_identities"] == 6


# ---------------------------------------------------------------- warnings, targets, the CLI


def test_identity_loss_on_a_metric_network_is_flagged(tiny_model, tmp_path, shared_data):
    def card(weight: float, network: str | None) -> dict:
        return {"identity": {"loss_network": network}, "loss_config": {"identity": {"weight": weight}}}

    warnings = identity_loss_warnings(card(10.0, "dlib-resnet"), ["dlib-resnet", "lfw-arcface"])
    assert "on dlib-resnet" in warnings[0] and "read the lfw-arcface numbers instead" in warnings[0]
    assert identity_loss_warnings(card(0.0, "dlib-resnet"), ["dlib-resnet"]) == []
    assert identity_loss_warnings(card(1.0, "lfw-arcface"), ["dlib-resnet"]) == []
    # a version-1 card (no identity section) reads as no identity loss for a per-pair model
    assert identity_loss_warnings({"loss_config": {"identity": {"weight": 1.0}}}, ["dlib-resnet"]) == []
    model = tmp_path / "with-identity-loss"
    shutil.copytree(tiny_model, model)
    card_path = model / "model.json"
    edited = json.loads(card_path.read_text())
    edited["loss_config"]["identity"]["weight"] = 10.0
    edited["identity"]["loss_network"] = "dlib-resnet"
    card_path.write_text(json.dumps(edited))
    options = EvalOptions(limit=1, reference_limit=2, gallery_limit=4, gallery_images=1, detector_pairs=-1)
    result = evaluate(model, out_dir=tmp_path / "out", data_root=shared_data, options=options)
    assert any("identity loss (weight 10)" in w for w in result.warnings)
    assert "identity loss (weight 10)" in (tmp_path / "out" / "report.html").read_text()
    assert result.metrics["warnings"] == result.warnings


def test_a_sweep_folder_expands_to_its_runs_and_models(tiny_model, tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.copytree(tiny_model, sweep / "b-model")
    run = Path(json.loads((tiny_model / "model.json").read_text())["trained_from"]["run_dir"])
    shutil.copytree(run, sweep / "a-run")
    (sweep / "notes").mkdir()
    assert expand_targets([sweep]) == [sweep / "a-run", sweep / "b-model"]
    assert expand_targets([tiny_model / "model.json"]) == [tiny_model]
    with pytest.raises(FileNotFoundError, match="holds no model folders"):
        expand_targets([sweep / "notes"])


def small_protocol(path: Path) -> Path:
    """per_pair_v1 cut down to 2 pairs, 2 photos per gallery identity, 3 distractors, 4 real faces."""
    raw = json.loads((PROTOCOL_DIR / "per_pair_v1.json").read_text())
    raw["protocol"] = "per_pair_tiny"
    raw["pairs"] = raw["pairs"][:2]
    raw["heldout"] = {side: {**entry, "images": entry["images"][:2]} for side, entry in raw["heldout"].items()}
    raw["sources"] = {name: photos[:2] for name, photos in raw["sources"].items()}
    raw["reference"]["images"] = raw["reference"]["images"][:4]
    raw["gallery"]["identities"] = {k: v[:2] for k, v in list(raw["gallery"]["identities"].items())[:5]}
    path.write_text(json.dumps(raw))
    return path


def test_cli_compares_models_in_one_report(tiny_model, tmp_path, shared_data, capsys):
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model, other)
    protocol = small_protocol(tmp_path / "tiny.json")
    out = tmp_path / "cmp"
    # Detectability is left out (--detector-pairs -1): it trains a classifier per model and is
    # tested in test_oneshot_train.py; this test is about the comparison.
    args = [
        "eval",
        str(tiny_model),
        str(other),
        "--out",
        str(out),
        "--protocol",
        str(protocol),
        "--detector-pairs",
        "-1",
    ]
    assert main([*args, "--data", str(shared_data)]) == 0
    printed = capsys.readouterr().out
    assert "pose_error (-)" in printed and "other-model" in printed and f"report: {out / 'report.html'}" in printed
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["model", "other-model"]
    assert rows[0]["pose_error"] == rows[1]["pose_error"]  # the same weights
    page = (out / "report.html").read_text()
    assert page.count("<tr>") == 3 and "model/report.html" in page
    assert all((out / s).is_file() for s in re.findall(r"<img src='([^']+)'", page))
    assert (out / "model" / "metrics.json").is_file() and (out / "other-model" / "report.html").is_file()
    assert main(["eval", "--out", str(out)]) == 2
    assert "give MODEL_OR_RUN" in capsys.readouterr().err


def test_comparison_api_shares_one_face_cache(tiny_model, tmp_path, shared_data):
    protocol = small_protocol(tmp_path / "tiny.json")
    comparison = evaluate_many(
        [tiny_model], out_dir=tmp_path / "one", protocol=protocol, data_root=shared_data, detector_pairs=-1
    )
    assert len(comparison.results) == 1 and comparison.report == tmp_path / "one" / "report.html"
    assert comparison.results[0].metrics["protocol"]["name"] == "per_pair_tiny"
    assert np.isfinite(comparison.results[0].summary["identity_similarity/dlib-resnet"])


def test_video_protocol_scores_stability_of_a_swapped_clip(tiny_model, tmp_path, shared_data):
    result = evaluate(tiny_model, protocol="video_v1", out_dir=tmp_path / "video", data_root=shared_data,
                      options=EvalOptions(limit=1, frames=10))  # fmt: skip
    metrics = result.metrics["metrics"]
    assert {"landmark_jitter", "flicker", "warped_flicker", "identity_drift/dlib-resnet"} <= set(metrics)
    assert result.metrics["samples"]["frames"] == 10
    assert all(math.isfinite(v) and v > 0 for v in result.summary.values())
    assert verify(tmp_path / "video" / "videos" / "WDA_AlexandriaOcasioCortez_000.mp4").synthetic


def test_a_per_pair_model_on_occluded_targets_scores_the_occluder_its_swap_paints_over(
    tiny_model, tmp_path, shared_data
):
    from swaplab.swap.pipeline import SwapConfig

    swap_config = SwapConfig(precision="fp32", mask="hull", colour="none")
    options = EvalOptions(limit=2, reference_limit=2, gallery_limit=2, gallery_images=1, detector_pairs=-1,
                          report=False, swap_config=swap_config)  # fmt: skip
    result = evaluate(tiny_model, protocol="per_pair_occluded_v1", out_dir=tmp_path / "occ", data_root=shared_data,
                      options=options)  # fmt: skip
    error = result.metrics["metrics"]["occluder_error"]
    # A 2-step model's face pasted through the landmark hull covers whatever lies on the face: far
    # from the occluder it was given (0 would be the occluder kept exactly).
    assert error["n"] >= 1 and error["mean"] > 0.3, error
    scored = [item for item in result.items if item.get("occluder_error") is not None]
    assert scored and all(Path(item["original"]).name.startswith("Colin_Powell") for item in scored)


def test_cli_evaluates_swap_stage_options(tiny_model, tmp_path, shared_data, capsys):
    protocol = small_protocol(tmp_path / "tiny.json")
    out = tmp_path / "opts"
    args = ["eval", str(tiny_model), "-o", str(out), "--protocol", str(protocol), "--detector-pairs", "-1"]
    assert main([*args, "--data", str(shared_data), "colour=none", "mask=hull"]) == 0
    document = json.loads((out / "metrics.json").read_text())
    assert document["swap_options"]["colour"] == "none" and document["swap_options"]["mask"] == "hull"
    assert document["target"]["swap_networks"] == {}  # these options swap with no built network
    assert main([*args, "--data", str(shared_data), "colour=rgb"]) == 2
    assert "rct" in capsys.readouterr().err  # a wrong value lists the valid names
