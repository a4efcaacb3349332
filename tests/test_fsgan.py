"""FSGAN: landmark heatmaps, the classical landmark warp, the inpainter's composite, learning on real
frames of one person (reenactment below copying the source on held-out frames, inpainting below
a blur fill), and the swapper end to end: two unseen peopleDevTest faces, each stage replaced by
its classical counterpart, a short clip, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from swaplab.config import ConfigError, config_group
from swaplab.models.fsgan import (
    FSGAN,
    FSGANConfig,
    Inpainter,
    blur_fill,
    interpolated_landmarks,
    landmark_heatmaps,
    tps_warp,
)
from swaplab.train.entry import build_config

pytestmark = pytest.mark.usefixtures("one_thread")

CLIP = "videos/hdtf_sadtalker/WDA_KatieHill_000.mp4"
EVAL_PEOPLE = ("Donald_Rumsfeld", "Al_Pacino")  # peopleDevTest.txt


# ---------------------------------------------------------------- parts


def test_heatmaps_peak_at_the_landmarks() -> None:
    torch.manual_seed(0)
    points = torch.randint(2, 62, (3, 68, 2)).float()
    maps = landmark_heatmaps(points, 64, sigma=1.5)
    assert maps.shape == (3, 68, 64, 64)
    flat = maps.flatten(2).argmax(-1)
    torch.testing.assert_close(torch.stack([flat % 64, flat // 64], -1).float(), points)
    assert torch.allclose(maps.flatten(2).max(-1).values, torch.ones(3, 68))
    # Off-grid points: the peak is the nearest pixel, and a wider sigma spreads the same peak.
    off = landmark_heatmaps(torch.tensor([[[10.4, 20.6]]]), 32, 1.0)[0, 0]
    assert divmod(int(off.argmax()), 32) == (21, 10) and off.max() < 1
    wide = landmark_heatmaps(torch.tensor([[[10.0, 20.0]]]), 32, 3.0)[0, 0]
    assert int(wide.argmax()) == 20 * 32 + 10 and (wide > 0.5).sum() > (off > 0.5).sum()


def test_iterative_reenactment_walks_interpolated_landmarks_to_the_target() -> None:
    source, target = torch.zeros(1, 68, 2), torch.full((1, 68, 2), 9.0)
    walk = interpolated_landmarks(source, target, 3)
    assert [float(w[0, 0, 0]) for w in walk] == [3.0, 6.0, 9.0]
    cfg = config_group("model").create("fsgan-tiny")
    model = FSGAN(cfg).eval()
    face, points = torch.rand(2, 3, 64, 64), torch.rand(2, 68, 2) * 64
    assert len(model.reenact_steps(face, points, points)) == cfg.iterations > 1
    cfg.iterative = False
    assert len(FSGAN(cfg).reenact_steps(face, points, points)) == 1
    # A fresh reenactor copies its source: training starts from "no change".
    out, mask = model.reenact(face, points, points + 3)
    torch.testing.assert_close(out, face.clamp(0.01, 0.99), atol=1e-5, rtol=0)
    assert torch.allclose(mask, torch.full_like(mask, torch.sigmoid(torch.tensor(2.0)).item()))


def test_the_cards_stage_switches_are_the_swappers_defaults() -> None:
    from swaplab.models.fsgan import FSGANSwapper

    cfg = config_group("model").create("fsgan-tiny")
    cfg.stages.reenact, cfg.stages.blend, cfg.iterative = "warp", "poisson", False
    swapper = FSGANSwapper(FSGAN(cfg), {"resolution": 64, "arch": "fsgan"})
    assert swapper.stages == {"reenact": "warp", "segment": "net", "inpaint": "net", "blend": "poisson"}
    assert not swapper.iterative
    swapper.configure(reenact="net", iterative="on")
    assert swapper.stages["reenact"] == "net" and swapper.iterative
    # Without the networks: warp + hull + none + poisson swaps a face with nothing built.
    swapper.configure(reenact="warp", segment="hull", inpaint="none")
    crops = torch.rand(1, 3, 64, 64)
    points = torch.tensor(np.stack([np.linspace(12, 52, 68), np.linspace(16, 54, 68)], 1), dtype=torch.float32)
    code = swapper.source_code((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8), points.numpy())
    out = swapper.swap(crops, code, landmarks=points[None] + 1)
    assert out.rgb.shape == (1, 3, 64, 64) and 0 < out.mask.mean() < 1


def test_presets_and_bad_sizes() -> None:
    paper, tiny = (config_group("model").create(n) for n in ("fsgan-256", "fsgan-tiny"))
    assert (paper.resolution, tiny.resolution, paper.discriminator.scales) == (256, 64, 3)
    with pytest.raises(ConfigError, match="divisible"):
        FSGANConfig(resolution=60, reenactor_widths=(8, 16, 32))
    with pytest.raises(ConfigError, match="iterations"):
        FSGANConfig(iterations=0)


def test_the_inpainter_changes_only_the_hole() -> None:
    torch.manual_seed(1)
    net = Inpainter((8, 16, 16), blur_sigma=4.0)
    for p in net.parameters():  # a trained-looking network, not the zero-initialised one
        p.data.normal_(0, 0.3)
    image = torch.rand(2, 3, 32, 32)
    hole = (torch.rand(2, 1, 32, 32) > 0.7).float()
    out = net(image, hole)
    outside = (1 - hole).bool().expand_as(image)
    assert torch.equal(out[outside], image[outside])
    assert (out[~outside] - image[~outside]).abs().mean() > 0.01
    # The blur baseline keeps the known pixels too and fills with nearby colours.
    flat = torch.full((1, 3, 32, 32), 0.25)
    assert torch.allclose(blur_fill(flat, hole[:1], 4.0), flat, atol=1e-6)


def test_the_landmark_warp_carries_the_source_points_onto_the_target_points() -> None:
    image = np.zeros((64, 64, 3), np.float32)
    source = np.array([[10, 10], [50, 12], [30, 50], [12, 45], [48, 48], [30, 28]], np.float32)
    target = source + np.array([4, -3], np.float32)
    target[5] += (3, 5)  # one point moves further: not a plain shift
    cv2.circle(image, (30, 28), 2, (1.0, 1.0, 1.0), -1)
    warped = tps_warp(image, source, target)
    ys, xs = np.nonzero(warped[..., 0] > 0.5)
    assert abs(xs.mean() - target[5, 0]) < 1.0 and abs(ys.mean() - target[5, 1]) < 1.0
    np.testing.assert_allclose(tps_warp(image, source, source), image, atol=1e-3)


# ---------------------------------------------------------------- learning on real frames


def _write_frames(video: Path, folder: Path, frames: range) -> list[Path]:
    """Frames of a clip as PNG photos (one person's held-out frames, grouped by their folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    capture, out, index = cv2.VideoCapture(str(video)), [], 0
    while index <= frames.stop:
        ok, frame = capture.read()
        if not ok:
            break
        if index in frames:
            out.append(folder / f"frame_{index:04d}.png")
            cv2.imwrite(str(out[-1]), frame)
        index += 1
    capture.release()
    return out


@pytest.fixture(scope="module")
def clip_facesets(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    """One person's clip: 60 training frames (0-118) and 11 held-out later frames (150-180), 64 px."""
    from swaplab.facesets.extract import ExtractConfig, extract

    root = tmp_path_factory.mktemp("fsgan")
    summary = extract(
        shared_data / CLIP, root / "train", ExtractConfig(size=64, every=2, max_frames=120), progress=False
    )
    assert summary.faces == 60, summary.lines()
    held_out = _write_frames(shared_data / CLIP, root / "frames" / "Katie_Hill_clip", range(150, 181, 3))
    summary = extract(held_out, root / "eval", ExtractConfig(size=64), progress=False)
    assert summary.faces == len(held_out) == 11, summary.lines()
    return {"train": root / "train", "eval": root / "eval", "lists": shared_data / "lfw", "root": root}


def _overrides(facesets: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    return [
        "model=fsgan-tiny",
        f"data.train=[{facesets['train']}]",
        f"data.eval={facesets['eval']}",
        f"data.lists_dir={facesets['lists']}",
        f"run_dir={run_dir}",
        *extra,
    ]


@pytest.fixture(scope="module")
def learned_run(clip_facesets: dict[str, Path]) -> Path:
    """160 steps of fsgan-tiny (one-step reenactment, lr 1e-3) on the clip's training frames."""
    from swaplab.train.loop import train

    run = clip_facesets["root"] / "learn"
    overrides = [
        "trainer=fsgan-tiny",
        "trainer.steps=160",
        "trainer.batch_size=4",
        "trainer.lr=1e-3",
        "trainer.preview_every=160",
        "trainer.checkpoint_every=0",
        "trainer.progress=false",
        "model.iterative=false",
    ]
    assert train(build_config(_overrides(clip_facesets, run, *overrides))).step == 160
    return run


@pytest.mark.slow
def test_reenactment_and_inpainting_learn_on_one_persons_frames(learned_run: Path) -> None:
    """On held-out frames the reenactment beats copying the source (where it starts) and the
    inpainter beats the blur fill (where it starts)."""
    rows = [json.loads(line) for line in (learned_run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "val/reenact_l1" in r][-1]
    assert last["step"] == 160
    # The untrained reenactor is the source copy (test above): its held-out error is val/source_l1.
    assert last["val/reenact_l1"] < 0.98 * last["val/source_l1"]
    assert last["val/inpaint_l1"] < 0.9 * last["val/blur_l1"]
    losses = [r["loss/pixel"] for r in rows if "loss/pixel" in r]
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------- the swapper


@pytest.fixture(scope="module")
def fsgan_model(clip_facesets: dict[str, Path], learned_run: Path):
    """The learned run, exported, with the test-sized segmenter and blender built (in a cache of this
    module's own, named to the swap stage by their variables for this module only: other tests expect
    them unbuilt); and a 4-step run with iterative reenactment and every term on, which must log each term."""
    from swaplab.train.built_networks import build_network
    from swaplab.train.export import export_model
    from swaplab.train.loop import train

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SWAPLAB_CACHE", str(clip_facesets["root"] / "nets-cache"))
        try:
            names = ("face-segmenter", "learned-blender")
            built = {name: build_network(name, "test", progress=False) for name in names}
        finally:
            torch.set_num_threads(threads)
    run = clip_facesets["root"] / "run"
    result = train(build_config(_overrides(clip_facesets, run, "trainer=fsgan-test")))
    assert result.step == 4
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = set().union(*rows)
    assert {"loss/pixel", "loss/perceptual", "loss/adversarial", "loss/stepwise", "loss/inpaint_pixel"} <= logged
    model = clip_facesets["root"] / "model"
    export_model(learned_run, model)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SWAPLAB_FACE_SEGMENTER", str(built["face-segmenter"]))
        patch.setenv("SWAPLAB_LEARNED_BLENDER", str(built["learned-blender"]))
        yield model


def _photos(lfw: Path) -> tuple[Path, Path]:
    return tuple(sorted((lfw / person).glob("*.jpg"))[0] for person in EVAL_PEOPLE)  # type: ignore[return-value]


@pytest.mark.slow
def test_fsgan_swaps_unseen_people_with_every_stage_and_its_classical_replacement(
    fsgan_model: Path, lfw: Path, tmp_path: Path
) -> None:
    from swaplab.io.images import read_image
    from swaplab.provenance import verify
    from swaplab.swap.pipeline import SwapConfig, swap

    card = json.loads((fsgan_model / "model.json").read_text())
    assert (card["arch"], card["swapper"], card["source"]) == ("fsgan", "fsgan", "face")
    target, source = _photos(lfw)
    before = read_image(target)[0].astype(int)
    variants = {
        "all-networks": {},
        "reenact=warp": {"reenact": "warp"},
        "segment=hull": {"segment": "hull"},
        "inpaint=none": {"inpaint": "none"},
        "iterative=on": {"iterative": "on"},  # the learned run trained with it off
        "blend=poisson": {"blend": "poisson"},
        "blend=alpha": {"blend": "alpha"},
    }
    outputs = {}
    for name, options in variants.items():
        out = tmp_path / f"{name}.png"
        cfg = SwapConfig(precision="fp32", source=[source], options=options, mask="learned")
        report = swap(fsgan_model, target, out, cfg, progress=False)
        assert report.faces_swapped == 1, report.lines()
        assert verify(out).synthetic
        image = read_image(out)[0].astype(int)
        changed = np.abs(before - image).max(axis=2) > 16
        ys, xs = np.nonzero(changed)
        assert changed.mean() > 0.03, name
        assert 60 < ys.mean() < 190 and 60 < xs.mean() < 190, name  # the face, not the frame's edges
        outputs[name] = image
    # Each replaced stage changes the result; inpainting only where the target's face region extends
    # past the reenacted face (none here: that hole is empty for this pair, so no change is asked for).
    for name in variants:
        if name not in ("all-networks", "inpaint=none"):
            assert np.abs(outputs[name] - outputs["all-networks"]).max() > 0, name


@pytest.mark.slow
def test_fsgan_swaps_a_short_clip(fsgan_model: Path, lfw: Path, shared_data: Path, tmp_path: Path) -> None:
    from swaplab.swap.pipeline import SwapConfig, swap

    out = tmp_path / "clip.mp4"
    cfg = SwapConfig(precision="fp32", source=[_photos(lfw)[1]], max_frames=4, mask="learned")
    report = swap(fsgan_model, shared_data / CLIP, out, cfg, progress=False)
    assert report.frames == 4 and report.faces_swapped == 4, report.lines()
    assert out.stat().st_size > 0 and report.faces_without_landmarks == 0


@pytest.mark.slow
def test_a_one_shot_model_is_scored_on_video_with_the_pinned_source(fsgan_model: Path, tmp_path: Path) -> None:
    from swaplab.evaluate import evaluate
    from swaplab.evaluate.protocol import load_protocol
    from swaplab.evaluate.video_eval import clip_sources

    result = evaluate(
        fsgan_model, out_dir=tmp_path / "video", protocol="video_v1", limit=1, frames=6, encoders=("dlib-resnet",)
    )
    metrics = result.metrics["metrics"]
    assert np.isfinite(metrics["landmark_jitter"]["mean"]) and np.isfinite(metrics["flicker"]["mean"])
    assert result.metrics["target"]["sources"].startswith("oneshot_v1 pair i")
    # The clip's source is the first pinned one-shot pair's: a peopleDevTest person, the same for every family.
    assert [p.name for p in clip_sources(Path("/data"), 0)] == [
        Path(p).name for p in load_protocol("oneshot_v1").pairs[0].source_images
    ]


@pytest.mark.slow
def test_fsgan_bad_input(fsgan_model: Path, lfw: Path, tmp_path: Path) -> None:
    from swaplab.io.images import MediaError, write_image
    from swaplab.models.card import CardError
    from swaplab.models.swapper import load_swapper
    from swaplab.swap.pipeline import FaceSwapper, SwapConfig, swap

    target, source = _photos(lfw)
    blank = tmp_path / "blank.png"
    write_image(blank, np.full((120, 120, 3), 128, np.uint8))
    with pytest.raises(MediaError, match="no face found in the source photo"):
        swap(fsgan_model, target, tmp_path / "out.png", SwapConfig(source=[blank]), progress=False)
    with pytest.raises(ValueError, match="source=PHOTO"):
        swap(fsgan_model, target, tmp_path / "out.png", SwapConfig(), progress=False)
    with pytest.raises(ValueError, match="reenact"):
        load_swapper(fsgan_model).configure(renact="warp")
    with pytest.raises(ValueError, match="net, warp"):
        load_swapper(fsgan_model).configure(reenact="morph")

    # A target face without usable landmarks is passed through unchanged and counted.
    swapper = FaceSwapper(fsgan_model, SwapConfig(precision="fp32", source=[source]))
    crops = np.stack([np.full((64, 64, 3), 90, np.uint8)] * 2)
    points = np.stack([np.full((68, 2), 32.0, np.float32), np.full((68, 2), np.nan, np.float32)])
    rgb, mask = swapper._run_model(crops, points)
    assert np.array_equal(rgb[1], crops[1]) and mask[1].max() == 0 and mask[0].max() > 0
    assert swapper.model.faces_without_landmarks == 1

    # A card naming the fsgan swapper over another family's model: one line, no traceback of shapes.
    other = tmp_path / "other"
    other.mkdir()
    for item in fsgan_model.iterdir():
        if item.is_file():
            (other / item.name).write_bytes(item.read_bytes())
    card = json.loads((other / "model.json").read_text())
    card["arch"] = "faceshifter"
    (other / "model.json").write_text(json.dumps(card))
    with pytest.raises(CardError) as err:
        load_swapper(other, verify=False)
    assert "\n" not in str(err.value) and "faceshifter" in str(err.value)


def test_the_shipped_study_replaces_one_stage_per_run() -> None:
    from swaplab.config import to_dict
    from swaplab.study import load_study

    study = load_study(Path(__file__).resolve().parents[1] / "studies" / "fsgan.yaml")
    configs = {run.name: to_dict(build_config(list(run.overrides)).model) for run in study.expand()}
    base = configs.pop("baseline")
    assert base["name"] == "fsgan-tiny" and base["iterative"]
    assert base["stages"] == {"reenact": "net", "segment": "net", "inpaint": "net", "blend": "learned"}
    changed = {
        "reenact-warp": {"reenact": "warp"},
        "segment-hull": {"segment": "hull"},
        "no-inpainting": {"inpaint": "none"},
        "blend-poisson": {"blend": "poisson"},
        "blend-alpha": {"blend": "alpha"},
        "all-classical": {"reenact": "warp", "segment": "hull", "inpaint": "none", "blend": "poisson"},
    }
    assert set(configs) == set(changed) | {"iterative-off"}
    for name, stages in changed.items():
        assert configs[name] == {**base, "stages": {**base["stages"], **stages}}, name
    assert configs["iterative-off"] == {**base, "iterative": False}
