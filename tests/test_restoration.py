"""The face restorer: it leaves a clean face nearly as it is, improves a degraded one, and the swap's
restore=on pastes the face at the frame's resolution."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from swaplab.config import ConfigError, apply_overrides
from swaplab.io.atomic import sha256_file

pytestmark = pytest.mark.usefixtures("one_thread")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_degradation_is_seeded_and_degrades() -> None:
    from swaplab.train.degradation import degrade_face

    rng = np.random.default_rng(0)
    face = np.zeros((64, 64, 3), np.uint8)
    face[:, ::2] = 255  # the finest detail there is: a downscale must destroy it
    first = degrade_face(face, np.random.default_rng(1))
    np.testing.assert_array_equal(first, degrade_face(face, np.random.default_rng(1)))
    assert first.shape == face.shape and _psnr(first, face) < 10
    assert not np.array_equal(first, degrade_face(face, rng))


@pytest.fixture(scope="module")
def restorer(tmp_path_factory: pytest.TempPathFactory, pair_facesets: tuple[Path, Path]):
    """A test-sized restorer trained for a fixed number of steps on the first person's faces only."""
    from swaplab.models.installed import read_built
    from swaplab.train.export import export_model
    from swaplab.train.loop import train
    from swaplab.train.recipes.restorer import RestorerTrainConfig

    root = tmp_path_factory.mktemp("restorer")
    cfg = apply_overrides(
        RestorerTrainConfig(),
        [
            "model=face-restorer",
            "trainer=restorer-test",
            "trainer.steps=150",
            "trainer.batch_size=8",
            "trainer.checkpoint_every=0",
            f"data.facesets=[{pair_facesets[0]}]",
            "data.size=96",
            "data.patch=48",
            "data.val_faces=4",
            f"run_dir={root / 'run'}",
        ],
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg)
    finally:
        torch.set_num_threads(threads)
    export_model(root / "run", root / "model")
    return root / "model" / "model.safetensors", read_built(root / "model" / "model.safetensors")[1].eval()


def _held_out_faces(pair_facesets: tuple[Path, Path]) -> np.ndarray:
    from swaplab.train.recipes.restorer import load_faces

    return load_faces([pair_facesets[1]], 96)[:8]  # the other person: never trained on


@pytest.mark.slow
def test_restorer_keeps_clean_faces_and_improves_degraded_ones(restorer, pair_facesets) -> None:
    from swaplab.models.restoration import restore_faces
    from swaplab.train.degradation import degraded_set

    _, net = restorer
    clean = _held_out_faces(pair_facesets)
    kept = restore_faces(clean, 1.0, net)
    assert _psnr(kept, clean) > 33.0
    degraded = degraded_set(clean, seed=5)
    restored = restore_faces(degraded, 1.0, net)
    before, after = _psnr(degraded, clean), _psnr(restored, clean)
    assert after > before + 0.15, (before, after)  # 0.21 dB here after 150 steps; the CPU build gains 0.9
    # Strength 0 is the input itself; strength blends linearly.
    np.testing.assert_array_equal(restore_faces(degraded, 0.0, net), degraded)


@pytest.mark.slow
def test_swap_restore_reaches_the_frame_resolution(
    restorer, pair_model: Path, lfw: Path, tmp_path: Path, monkeypatch
) -> None:
    from swaplab.io.images import read_image
    from swaplab.metrics.reconstruction import laplacian_variance
    from swaplab.models.installed import NetworkMissing
    from swaplab.swap.pipeline import SwapConfig, swap

    weights, _ = restorer
    model = pair_model
    photo = lfw / "George_W_Bush" / "George_W_Bush_0040.jpg"
    with pytest.raises(NetworkMissing, match="swaplab nets build face-restorer"):
        swap(model, photo, tmp_path / "missing.png", SwapConfig(restore="on"), progress=False)
    monkeypatch.setenv("SWAPLAB_FACE_RESTORER", str(weights))
    faces = {}
    for mode in ("off", "on"):
        out = tmp_path / f"{mode}.png"
        report = swap(model, photo, out, SwapConfig(restore=mode, smoothing="none"), progress=False)
        assert report.faces_swapped == 1
        faces[mode] = read_image(out)[0]
    target = read_image(photo)[0]
    assert faces["on"].shape == target.shape
    # Outside the face's footprint the photo is untouched either way; inside, the restored face
    # (upscaled to the footprint, then restored) replaces the model's 64 px one.
    np.testing.assert_array_equal(faces["on"][:20], faces["off"][:20])
    box = (slice(90, 170), slice(85, 165))
    assert np.abs(faces["on"][box].astype(int) - faces["off"][box].astype(int)).mean() > 0.5

    def detail(image: np.ndarray) -> float:
        tensor = torch.from_numpy(np.ascontiguousarray(image[box])).permute(2, 0, 1)[None].float().div(255)
        return float(laplacian_variance(tensor))

    # A test-sized restorer adds little detail to an untrained swap's face (docs/masks.md has the
    # CPU build's sharpness ratios on real swaps), but it must not blur the face.
    assert detail(faces["on"]) > 0.95 * detail(faces["off"]), (detail(faces["on"]), detail(faces["off"]))


@pytest.mark.slow
def test_restored_detail_is_smoothed_over_a_track(restorer, pair_facesets, pair_model: Path, monkeypatch) -> None:
    from swaplab.swap.pipeline import FaceSwapper, SwapConfig

    weights, _ = restorer
    monkeypatch.setenv("SWAPLAB_FACE_RESTORER", str(weights))
    model = pair_model
    face = _held_out_faces(pair_facesets)[0]
    crop = cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA)
    mask = np.ones((64, 64), np.float32)
    matrix = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])  # a 128 px footprint: restored at 128
    rng = np.random.default_rng(0)
    # One still face with fresh sensor-like noise in every frame: what changes is flicker only.
    frames = [np.clip(crop + rng.normal(0, 4, crop.shape), 0, 255).astype(np.uint8) for _ in range(12)]

    def restored(smoothing: str) -> np.ndarray:
        swapper = FaceSwapper(model, SwapConfig(restore="on", restore_smoothing=smoothing))
        out = [swapper._restore(f, mask, matrix, track=0)[0].astype(np.float32) for f in frames]
        return np.stack(out)

    plain, smoothed = restored("none"), restored("one_euro")
    assert plain.shape == smoothed.shape == (12, 128, 128, 3)
    np.testing.assert_array_equal(plain[0], smoothed[0])  # the first frame is the restorer's own
    # The detail the restorer adds is what gets filtered, so the temporal spread of the whole face drops.
    flicker = {k: float(np.abs(np.diff(v[4:], axis=0)).mean()) for k, v in (("none", plain), ("one_euro", smoothed))}
    detail_plain = plain - np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_CUBIC) for f in frames])
    detail_smoothed = smoothed - np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_CUBIC) for f in frames])
    assert np.abs(np.diff(detail_smoothed[4:], axis=0)).mean() < 0.5 * np.abs(np.diff(detail_plain[4:], axis=0)).mean()
    assert flicker["one_euro"] <= flicker["none"], flicker


def test_a_large_footprint_is_restored_in_passes(restorer, pair_facesets, pair_model: Path, monkeypatch) -> None:
    import swaplab.models.restoration as restoration
    from swaplab.swap.pipeline import FaceSwapper, SwapConfig

    weights, _ = restorer
    monkeypatch.setenv("SWAPLAB_FACE_RESTORER", str(weights))
    crop = cv2.resize(_held_out_faces(pair_facesets)[0], (64, 64), interpolation=cv2.INTER_AREA)
    mask = np.ones((64, 64), np.float32)
    matrix = np.array([[64 / 450, 0.0, 0.0], [0.0, 64 / 450, 0.0]])  # a 450 px footprint, as on the demo's frames
    sizes: list[int] = []
    real = restoration.restore_faces

    def recording(faces: np.ndarray, *args, **kwargs) -> np.ndarray:
        sizes.append(faces.shape[0])
        return real(faces, *args, **kwargs)

    monkeypatch.setattr(restoration, "restore_faces", recording)
    out, passes = {}, {}
    for scale in (3.0, 1.5, 0):
        sizes.clear()
        swapper = FaceSwapper(pair_model, SwapConfig(restore="on", restore_pass_scale=scale))
        out[scale], _, paste = swapper._restore(crop, mask, matrix)
        assert out[scale].shape == (450, 450, 3)
        np.testing.assert_allclose(paste[:, :2], np.eye(2), atol=1e-9)  # the frame's own scale
        passes[scale] = list(sizes)
    # Equal steps no larger than the limit, the last at the footprint; 0 = one pass.
    assert SwapConfig().restore_pass_scale == 3.0 and passes[3.0] == [170, 450] and passes[0] == [450]
    steps = np.diff(np.log([64, *passes[1.5]]))
    assert len(steps) == 5 and passes[1.5][-1] == 450 and np.all(np.exp(steps) <= 1.5 + 0.01), passes[1.5]
    # Each pass adds the detail of its scale: the passes leave more than one pass straight to 450 px.
    detail = {k: float(np.abs(cv2.Laplacian(v.astype(np.float32), cv2.CV_32F)).mean()) for k, v in out.items()}
    assert detail[1.5] > detail[3.0] > detail[0], detail
    # A footprint within the limit (2.6x, as on LFW photos) is restored in one pass.
    sizes.clear()
    FaceSwapper(pair_model, SwapConfig(restore="on"))._restore(crop, mask, matrix * (450 / 168))
    assert sizes == [168]
    with pytest.raises(ConfigError, match="restore_pass_scale"):
        apply_overrides(SwapConfig(), ["restore_pass_scale=1"])


def test_bad_restore_values_are_refused() -> None:
    from swaplab.swap.pipeline import SwapConfig

    with pytest.raises(ConfigError, match="off.*on"):
        apply_overrides(SwapConfig(), ["restore=yes"])
    with pytest.raises(ConfigError, match="restore_strength"):
        apply_overrides(SwapConfig(), ["restore_strength=2"])
    with pytest.raises(ConfigError, match="one_euro"):
        apply_overrides(SwapConfig(), ["restore_smoothing=ema"])


def test_the_gan_restorer_trains_beside_a_discriminator_and_exports_the_restorer_alone(
    pair_facesets, tmp_path: Path
) -> None:
    from swaplab.models.installed import read_built
    from swaplab.models.restoration import FaceRestorer
    from swaplab.train.export import export_model
    from swaplab.train.loop import train
    from swaplab.train.recipes.restorer import RestorerTrainConfig
    from swaplab.train.run import RunFolder

    cfg = apply_overrides(
        RestorerTrainConfig(),
        ["model=face-restorer-test", "trainer=restorer-test", "trainer.steps=3", "loss.edge=1",
         "loss.perceptual=0.5", "gan.power=0.05", f"data.facesets=[{pair_facesets[0]}]", "data.size=64",
         "data.patch=32", "data.val_faces=4", f"run_dir={tmp_path / 'run'}"],
    )  # fmt: skip
    train(cfg)
    rows = [row for row in RunFolder(tmp_path / "run").read_metrics() if "loss" in row]
    assert {"loss/l1", "loss/edge", "loss/perceptual", "loss/gan/generator", "d_loss"} <= set(rows[-1])
    export_model(tmp_path / "run", tmp_path / "model")
    _, net = read_built(tmp_path / "model" / "model.safetensors")
    assert isinstance(net, FaceRestorer)  # the discriminator is not shipped


def test_restorer_loss_weights_are_checked() -> None:
    from swaplab.train.recipes.restorer import RestorerTrainConfig

    with pytest.raises(ConfigError, match="not all 0"):
        apply_overrides(RestorerTrainConfig(), ["loss.l1=0"])
    with pytest.raises(ConfigError, match=">= 0"):
        apply_overrides(RestorerTrainConfig(), ["loss.edge=-1"])


def test_the_sharper_build_is_the_restorers_default_and_each_preset_has_its_own_run(tmp_path, monkeypatch) -> None:
    from swaplab.train.built_networks import build_config, build_run_dir, default_preset

    monkeypatch.setenv("SWAPLAB_CACHE", str(tmp_path))
    assert default_preset("face-restorer") == "cpu-gan" and default_preset("face-segmenter") == "cpu"
    sharp, plain = build_config("face-restorer"), build_config("face-restorer", "cpu")
    assert (sharp.gan.power, sharp.loss.edge, sharp.degrade.downscale) == (0.05, 1.0, (2.0, 6.0))
    assert (plain.gan.power, plain.loss.edge, plain.loss.l1) == (0.0, 0.0, 1.0)
    runs = {build_run_dir("face-restorer", p) for p in ("cpu", "cpu-gan", "test")}
    assert {r.name for r in runs} == {"run", "run-cpu-gan", "run-test"} and len({r.parent for r in runs}) == 1
    with pytest.raises(KeyError, match="face-restorer \\(cpu-gan, cpu, personal, test\\)"):
        build_config("face-restorer", "gpu")


def _train_restorer(run_dir: Path, faceset: Path, *overrides: str) -> Path:
    """A test-sized restorer trained for two steps on ``faceset``; its exported weights file."""
    from swaplab.train.export import export_model
    from swaplab.train.loop import train
    from swaplab.train.recipes.restorer import RestorerTrainConfig

    cfg = apply_overrides(
        RestorerTrainConfig(),
        ["model=face-restorer-test", "trainer=restorer-test", "trainer.steps=2", f"data.facesets=[{faceset}]",
         "data.size=64", "data.patch=32", "data.val_faces=4", f"run_dir={run_dir}", *overrides],
    )  # fmt: skip
    train(cfg)
    export_model(run_dir, run_dir.with_name(run_dir.name + "-model"), overwrite=True)
    return run_dir.with_name(run_dir.name + "-model") / "model.safetensors"


def test_a_personal_restorer_starts_from_the_given_restorer_and_trains_on_one_persons_faces(
    pair_facesets, tmp_path: Path, monkeypatch
) -> None:
    from safetensors.torch import load_file

    from swaplab.train.built_networks import build_config, build_run_dir

    base = _train_restorer(tmp_path / "base", pair_facesets[1])
    personal = _train_restorer(tmp_path / "personal", pair_facesets[0], f"init={base}", "trainer.lr=1e-4")
    before, after = load_file(str(base)), load_file(str(personal))
    assert before.keys() == after.keys()
    # Fine-tuned from the base: every weight moved a little (two steps at a small LR), none restarted.
    moved = {key: float((after[key] - before[key]).abs().max()) for key in before if "running_" not in key
             and before[key].is_floating_point()}  # fmt: skip
    assert all(0 < change < 0.01 for change in moved.values()), moved
    with pytest.raises(ConfigError, match="widths \\[8, 16, 32\\].*model.widths"):
        _train_restorer(tmp_path / "wrong", pair_facesets[0], f"init={base}", "model=face-restorer")
    with pytest.raises(ConfigError, match="128 px crops, smaller than data.size=192"):
        _train_restorer(tmp_path / "soft", pair_facesets[0], "data.size=192")
    # Resumed (a third step) without the restorer it started from: its checkpoint replaces it.
    base.unlink()
    resumed = _train_restorer(
        tmp_path / "personal", pair_facesets[0], f"init={base}", "trainer.lr=1e-4", "trainer.steps=3"
    )
    assert any(not torch.equal(load_file(str(resumed))[key], after[key]) for key in after)

    monkeypatch.setenv("SWAPLAB_CACHE", str(tmp_path / "cache"))
    cfg = build_config("face-restorer", "personal", [f"data.facesets=[{pair_facesets[0]}]"])
    assert cfg.init == "installed" and cfg.gan.power == 0.1 and list(cfg.data.facesets) == [str(pair_facesets[0])]
    assert cfg.data.size == 192 and not cfg.data.drawn_by
    assert build_run_dir("face-restorer", "personal", tmp_path / "out") == tmp_path / "out" / "run-personal"
    with pytest.raises(ConfigError, match="data.facesets=\\[FACESET\\]"):
        build_config("face-restorer", "personal")


def test_swap_restores_with_the_restorer_it_is_given(pair_facesets, pair_model: Path, lfw: Path, tmp_path, monkeypatch):
    from swaplab.io.images import read_image
    from swaplab.swap.pipeline import SwapConfig, swap

    photo = lfw / "George_W_Bush" / "George_W_Bush_0040.jpg"
    weights = _train_restorer(tmp_path / "base", pair_facesets[1], "model=face-restorer")
    fast = ("model=face-restorer", "trainer.lr=0.05", "trainer.warmup_steps=0")  # far from the base in two steps
    other = _train_restorer(tmp_path / "other", pair_facesets[0], *fast)
    monkeypatch.setenv("SWAPLAB_FACE_RESTORER", str(weights))
    outputs = {"env": tmp_path / "env.png"}
    swap(pair_model, photo, outputs["env"], SwapConfig(restore="on", smoothing="none"), progress=False)
    monkeypatch.delenv("SWAPLAB_FACE_RESTORER")
    for name, given in (("file", weights), ("folder", weights.parent), ("other", other)):
        outputs[name] = tmp_path / f"{name}.png"
        swap(pair_model, photo, outputs[name], SwapConfig(restore="on", restorer=str(given), smoothing="none"),
             progress=False)  # fmt: skip
    image = {name: read_image(path)[0].astype(int) for name, path in outputs.items()}
    np.testing.assert_array_equal(image["file"], image["env"])
    np.testing.assert_array_equal(image["folder"], image["env"])
    assert np.abs(image["other"] - image["env"]).max() > 8
    # Each output's sidecar names the restorer's weights by file and hash, not only by option.
    used = {
        name: json.loads(path.with_name(path.name + ".swaplab.json").read_text())["networks"]
        for name, path in outputs.items()
    }
    for name, given in (("env", weights), ("file", weights), ("folder", weights), ("other", other)):
        assert used[name] == {"face-restorer": {"path": str(given.resolve()), "sha256": sha256_file(given)}}
    assert used["file"]["face-restorer"]["sha256"] != used["other"]["face-restorer"]["sha256"]


def test_a_restorer_without_restore_or_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    from swaplab.swap.pipeline import SwapConfig

    with pytest.raises(ConfigError, match="restorer=.*only with restore=on"):
        apply_overrides(SwapConfig(), [f"restorer={tmp_path}"])
    with pytest.raises(ConfigError, match="no such weights file or folder"):
        apply_overrides(SwapConfig(), ["restore=on", f"restorer={tmp_path / 'missing'}"])


def test_a_restorer_learns_from_a_per_pair_models_own_drawing_of_its_source(pair_facesets, pair_model: Path, tmp_path):
    from swaplab.models.swapper import load_swapper
    from swaplab.train.recipes.restorer import load_faces, model_drawn_faces
    from swaplab.train.run import RunFolder

    faces = load_faces([pair_facesets[0]], 96)[:5]
    drawn = model_drawn_faces(pair_model, faces, "whole_face")
    assert drawn.shape == faces.shape and drawn.dtype == np.uint8
    # The model's reconstruction through its source side at its 64 px, upscaled back to the crop's 96.
    small = torch.from_numpy(cv2.resize(faces[2], (64, 64), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)
    with torch.inference_mode():
        own = load_swapper(pair_model).reconstruct(small[None].float() / 255, "src").rgb.clamp(0, 1)[0]
    own = cv2.resize(own.mul(255).round().byte().permute(1, 2, 0).numpy(), (96, 96), interpolation=cv2.INTER_CUBIC)
    assert np.abs(own.astype(int) - drawn[2].astype(int)).max() <= 1
    with pytest.raises(ConfigError, match="template 'whole_face', the facesets with 'face'"):
        model_drawn_faces(pair_model, faces, "face")

    _train_restorer(tmp_path / "run", pair_facesets[0], f"data.drawn_by={pair_model}", "data.drawn_share=1")
    manifest = RunFolder(tmp_path / "run").read_manifest()
    assert manifest["facesets"]["drawn_by"]["path"] == str(pair_model) and manifest["facesets"]["drawn_by"]["weights"]
    from swaplab.train.recipes.restorer import RestorerTrainConfig

    with pytest.raises(ConfigError, match="data.facesets"):
        apply_overrides(RestorerTrainConfig(), [f"data.drawn_by={pair_model}"])
    with pytest.raises(ConfigError, match="drawn_share"):
        apply_overrides(RestorerTrainConfig(), ["data.drawn_share=2"])


def test_a_restorer_learns_from_a_one_shot_models_swaps_of_its_source_with_their_own_identity(
    pair_facesets, split_facesets, tmp_path: Path
) -> None:
    from swaplab.models.swapper import load_swapper
    from swaplab.train.entry import build_config
    from swaplab.train.export import export_model
    from swaplab.train.loop import train
    from swaplab.train.recipes.diffusion import identity_embeddings
    from swaplab.train.recipes.restorer import load_faces, model_drawn_faces

    # The one-shot tests' facesets (extracted once per session): peopleDevTrain and peopleDevTest people.
    people = split_facesets(("George_W_Bush", "Colin_Powell", "Tony_Blair"), 3, ("Donald_Rumsfeld", "Al_Pacino"), 2)
    words = ["model=simswap-tiny", "trainer=oneshot-test", "trainer.steps=1", f"data.train=[{people['train']}]",
             f"data.eval={people['eval']}", f"data.lists_dir={people['lists']}", "data.eval_pairs=1",
             f"run_dir={tmp_path / 'oneshot'}"]  # fmt: skip
    train(build_config(words))
    model = export_model(tmp_path / "oneshot", tmp_path / "oneshot-model").parent
    swapper = load_swapper(model)
    faces = load_faces([pair_facesets[0]], 96)[:3]
    drawn = model_drawn_faces(model, faces, swapper.template, [pair_facesets[0]])
    assert drawn.shape == faces.shape and drawn.dtype == np.uint8
    # Each face swapped with the person's own identity (the mean over the faceset) at the model's
    # resolution, upscaled back to the crop's 96 px.
    identity = identity_embeddings([str(pair_facesets[0])], swapper.conditions_on).mean(0)
    side = swapper.resolution
    small = torch.from_numpy(cv2.resize(faces[1], (side, side), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)
    with torch.inference_mode():
        own = swapper.reconstruct(small[None].float() / 255, "self", identity).rgb.clamp(0, 1)[0]
    own = cv2.resize(own.mul(255).round().byte().permute(1, 2, 0).numpy(), (96, 96), interpolation=cv2.INTER_CUBIC)
    assert np.abs(own.astype(int) - drawn[1].astype(int)).max() <= 1
    # Without the person's faces a one-shot model has no identity to draw them with.
    with pytest.raises(ConfigError, match="one-shot model that conditions on an identity"):
        model_drawn_faces(model, faces, swapper.template)
    _train_restorer(tmp_path / "run", pair_facesets[0], f"data.drawn_by={model}", "data.drawn_share=1")


@pytest.fixture(scope="module")
def clip_faceset(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Every second frame of the first 12 of a talking-head clip, 128 px crops: six neighbours."""
    from swaplab.facesets.extract import ExtractConfig, extract

    cfg = ExtractConfig(size=128, max_frames=12, every=2)
    cfg.faces.max_faces = 1
    out = tmp_path_factory.mktemp("clip") / "faces"
    extract(shared_data / "videos/hdtf_sadtalker/WDA_KatieHill_000.mp4", out, cfg, progress=False)
    return out


def test_neighbouring_frames_are_found_within_a_track_and_never_among_photos(clip_faceset: Path, pair_facesets):
    from swaplab.facesets.format import Faceset
    from swaplab.train.recipes.restorer import frame_neighbours

    frames = [record.frame for record in Faceset(clip_faceset)]
    photos = len(Faceset(pair_facesets[0]))
    assert frames == [0, 2, 4, 6, 8, 10]
    following = frame_neighbours([pair_facesets[0], clip_faceset], 2)
    assert list(following[:photos]) == [-1] * photos
    assert list(following[photos:]) == [photos + 1, photos + 2, photos + 3, photos + 4, photos + 5, -1]
    assert (frame_neighbours([clip_faceset], 1) == -1).all()  # two frames apart is more than one


def test_the_temporal_term_trains_on_neighbouring_drawings_and_needs_them(
    clip_faceset: Path, pair_facesets, pair_model: Path, tmp_path: Path
) -> None:
    from swaplab.train.run import RunFolder

    _train_restorer(tmp_path / "run", clip_faceset, f"data.drawn_by={pair_model}", "loss.temporal=1")
    rows = [row for row in RunFolder(tmp_path / "run").read_metrics() if "loss" in row]
    assert all(np.isfinite(row["loss/temporal"]) and row["loss/temporal"] > 0 for row in rows)
    with pytest.raises(ConfigError, match="set data.drawn_by=MODEL"):
        _train_restorer(tmp_path / "undrawn", clip_faceset, "loss.temporal=1")
    with pytest.raises(ConfigError, match="neighbouring video frames.*none were found"):
        _train_restorer(tmp_path / "photos", pair_facesets[0], f"data.drawn_by={pair_model}", "loss.temporal=1")
    with pytest.raises(ConfigError, match="temporal_gap >= 1"):
        _train_restorer(tmp_path / "gap", clip_faceset, "loss.temporal=1", "loss.temporal_gap=0")
