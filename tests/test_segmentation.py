"""The face segmenter: exact occluder labels, user polygons, learning past the hull, and mask=segment
keeping a hand in front of the face."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from swaplab.config import ConfigError, apply_overrides
from swaplab.faces.occlusion import HELD_OUT_KINDS, OCCLUDER_LABEL, OCCLUDERS, TRAIN_KINDS, occlude, occluder

pytestmark = pytest.mark.usefixtures("one_thread")


def _face_like(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("kind", TRAIN_KINDS + HELD_OUT_KINDS)
def test_occlusion_labels_match_the_pasted_pixels_exactly(kind: str) -> None:
    size, seed = 64, 7
    image, donor = _face_like(size, 1), _face_like(80, 2)
    labels = np.zeros((size, size), np.uint8)
    labels[16:48, 16:48] = 1
    out, out_labels, union = occlude(image, labels, [donor], np.random.default_rng(seed), [kind], count=1)
    # The same draws, replayed: which kind, which donor, then the occluder itself.
    replay = np.random.default_rng(seed)
    replay.integers(1), replay.integers(1)
    layer, mask = occluder(kind, size, replay, donor)
    assert 0 < mask.sum() < size * size
    np.testing.assert_array_equal(union, mask)
    np.testing.assert_array_equal(out, np.where(mask[..., None], layer, image))
    np.testing.assert_array_equal(out_labels, np.where(mask, OCCLUDER_LABEL, labels))


def test_occluder_kinds_are_split_and_unknown_ones_are_refused() -> None:
    assert not set(TRAIN_KINDS) & set(HELD_OUT_KINDS)
    assert set(TRAIN_KINDS) | set(HELD_OUT_KINDS) == set(OCCLUDERS.names())
    from swaplab.train.recipes.segmenter import SegmenterDataConfig

    with pytest.raises(ConfigError, match="choose from .*hand"):
        SegmenterDataConfig(occluders=("hand", "umbrella"))
    with pytest.raises(ConfigError, match=r"outlined_share must be in \[0, 1\]"):
        SegmenterDataConfig(outlined_share=1.5)
    with pytest.raises(ConfigError, match=r"realistic_paste must be in \[0, 1\]"):
        SegmenterDataConfig(realistic_paste=-0.1)
    with pytest.raises(ConfigError, match=r"lfw_outlines must be >= 0"):
        SegmenterDataConfig(lfw_outlines=-1)


@pytest.mark.slow
def test_the_default_build_learns_from_the_packaged_outlines(lfw: Path) -> None:
    from swaplab.facesets.format import Faceset
    from swaplab.train.recipes.segmenter import (
        PACKAGED_OUTLINES,
        SegmenterDataConfig,
        default_facesets,
        load_labelled_faces,
    )

    facesets = default_facesets(SegmenterDataConfig(lfw_people=4, lfw_outlines=2))
    outlined, plain = facesets[:-1], facesets[-1]
    assert len(PACKAGED_OUTLINES) == 2 and outlined == 2 * outlined[:2] and plain.name == "lfw-train-4"
    assert sum(len(Faceset(path).records) for path in outlined[:2]) == 19  # twelve and seven photos
    faces = load_labelled_faces(outlined[:2], 64)
    assert faces.corrected == 19 and len(faces.outlined_occluders()) == 19  # every one outlines an occluder
    from swaplab.data.lfw import SPLIT_FILES, read_people_list

    train_people = set(read_people_list(lfw.parent / SPLIT_FILES["train"]))
    assert {face_id.split("-")[0].rsplit("_", 1)[0] for face_id in faces.ids} <= train_people  # the split holds


def test_a_softened_paste_blends_only_near_the_occluder(lfw: Path) -> None:
    import cv2
    from PIL import Image

    from swaplab.train.recipes.segmenter import SegmenterDataConfig, augment_batch, soften_paste

    photo = Image.open(sorted((lfw / "Colin_Powell").glob("*.jpg"))[0]).convert("RGB")
    face = np.asarray(photo.crop((60, 60, 190, 190)).resize((96, 96)))
    labels = np.ones((96, 96), np.uint8)
    pasted, _, covered = occlude(face, labels, [face[::-1]], np.random.default_rng(0), ["hand"], count=1)
    soft = soften_paste(face, pasted, covered, np.random.default_rng(1))
    kernel = np.ones((13, 13), np.uint8)  # 6 px: three times the widest feather
    far_outside = ~cv2.dilate(covered.astype(np.uint8), kernel).astype(bool)
    np.testing.assert_array_equal(soft[far_outside], face[far_outside])
    edge = covered & ~cv2.erode(covered.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    difference = np.abs(soft.astype(int) - face.astype(int)).sum(-1)
    assert difference[edge].mean() < np.abs(pasted.astype(int) - face.astype(int)).sum(-1)[edge].mean()

    # Through the training batch: softened, degraded crops with occluder labels.
    from swaplab.train.recipes.segmenter import LabelledFaces

    faces = LabelledFaces(np.stack([face, face[:, ::-1]]), np.stack([labels, labels]), ["a", "b"])
    data = SegmenterDataConfig(realistic_paste=1.0, occlusion_prob=1.0, rotation_deg=0, scale=0, translation=0)
    images, out_labels = augment_batch(faces, np.array([0, 1]), 96, data, np.random.default_rng(2))
    assert images.shape == (2, 96, 96, 3) and set(np.unique(out_labels)) <= {1, OCCLUDER_LABEL}
    assert (out_labels == OCCLUDER_LABEL).any()


def test_user_polygons_override_the_hull(tmp_path: Path, pair_facesets: tuple[Path, Path]) -> None:
    from swaplab.facesets.format import Faceset
    from swaplab.facesets.mask_polygons import read_mask_polygons, write_polygon_template
    from swaplab.train.recipes.segmenter import load_labelled_faces, paste_outlined

    faceset = Faceset(pair_facesets[0])
    first = faceset.records[0].id
    from swaplab.cli import main

    assert main(["faceset", "polygons", str(pair_facesets[0]), first, "-o", str(tmp_path / "polygons.json")]) == 0
    path = tmp_path / "polygons.json"
    with pytest.raises(KeyError, match="no face"):
        write_polygon_template(pair_facesets[0], ["nobody"], tmp_path / "other.json")
    document = json.loads(path.read_text())
    # The user marks a hand over the lower-left of the face.
    document["faces"][first]["occluder"] = [[[10, 80], [60, 80], [60, 127], [10, 127]]]
    path.write_text(json.dumps(document))
    assert len(read_mask_polygons(path)[first].occluder) == 1
    plain = load_labelled_faces([pair_facesets[0]], 64)
    corrected = load_labelled_faces([pair_facesets[0]], 64, [path])
    assert corrected.corrected == 1 and plain.corrected == 0
    assert (corrected.labels[0] == OCCLUDER_LABEL).sum() > 100 and not (plain.labels[0] == OCCLUDER_LABEL).any()
    np.testing.assert_array_equal(corrected.labels[1:], plain.labels[1:])
    # The outlined hand becomes augmentation material: the one cut-out, pasted with its label exact.
    assert not plain.outlined_occluders()
    ((crop, hand),) = corrected.outlined_occluders()
    np.testing.assert_array_equal(hand, corrected.labels[0] == OCCLUDER_LABEL)
    target, target_labels = corrected.images[1], corrected.labels[1]
    out, out_labels = paste_outlined(target, target_labels, [(crop, hand)], np.random.default_rng(3))
    pasted = out_labels == OCCLUDER_LABEL
    assert 0.5 * hand.sum() < pasted.sum() < 1.5 * hand.sum()  # scaled by 0.8-1.2
    np.testing.assert_array_equal(out[~pasted], target[~pasted])
    np.testing.assert_array_equal(out_labels[~pasted], target_labels[~pasted])
    assert np.abs(out[pasted].astype(int) - target[pasted].astype(int)).mean() > 5  # the hand's pixels, not the face's
    document["faces"][first]["face"] = [[[1, 2]]]
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="at least 3"):
        read_mask_polygons(path)


@pytest.mark.slow
def test_segmenter_learns_past_the_hull(trained_segmenter) -> None:
    _, result = trained_segmenter
    scores = {k.removeprefix("val/"): v for k, v in result.metrics.items() if k.startswith("val/")}
    # The hull cannot see occluders: its occluder IoU is 0 and its face IoU loses what they cover.
    assert scores["hull_iou_occluder"] == 0.0
    assert scores["miou"] > scores["hull_miou"] + 0.1, scores
    assert scores["iou_occluder"] > 0.3, scores


@pytest.mark.slow
def test_mask_segment_keeps_a_hand_in_front_of_the_face(
    trained_segmenter, pair_model: Path, lfw: Path, tmp_path: Path, monkeypatch
) -> None:
    from swaplab.faces.occlusion import hand_occluder
    from swaplab.io.images import read_image, write_image
    from swaplab.models.installed import NetworkMissing
    from swaplab.swap.pipeline import SwapConfig, swap
    from swaplab.train.export import export_model

    run_dir, _ = trained_segmenter
    export_model(run_dir, tmp_path / "segmenter")
    model = pair_model
    photo = read_image(lfw / "George_W_Bush" / "George_W_Bush_0040.jpg")[0]
    # A hand (skin from another photo) over the mouth and a cheek, from below; 86% of it lies
    # inside the face's landmark hull, and the face is still found.
    donor = read_image(lfw / "Colin_Powell" / "Colin_Powell_0040.jpg")[0]
    layer, hand = hand_occluder(110, np.random.default_rng(5), donor)
    occluded = photo.copy()
    region = (slice(100, 210), slice(90, 200))
    occluded[region][hand] = layer[hand]
    hand_full = np.zeros(photo.shape[:2], bool)
    hand_full[region] = hand
    path = tmp_path / "hand.png"
    write_image(path, occluded)

    with pytest.raises(NetworkMissing, match="swaplab nets build face-segmenter"):
        swap(model, path, tmp_path / "missing.png", SwapConfig(mask="segment"), progress=False)
    monkeypatch.setenv("SWAPLAB_FACE_SEGMENTER", str(tmp_path / "segmenter" / "model.safetensors"))

    def hand_change(mask: str) -> tuple[float, float]:
        """Over the hand's pixels: the mean change, and the share changed by more than 40 levels."""
        out = tmp_path / f"{mask}.png"
        report = swap(model, path, out, SwapConfig(mask=mask, smoothing="none"), progress=False)
        assert report.faces_swapped == 1
        change = np.abs(read_image(out)[0].astype(int) - occluded.astype(int)).max(axis=2)[hand_full]
        return float(change.mean()), float((change > 40).mean())

    hull = hand_change("hull")
    assert hull[1] > 0.2, hull  # the hull pastes the swapped face over the hand ...
    for mask in ("segment", "segment+hull"):
        kept = hand_change(mask)  # ... the segmenter keeps it (a soft mask still lets a little through)
        assert kept[0] < 0.6 * hull[0] and kept[1] < 0.25 * hull[1], (mask, kept, hull)


def test_a_build_saved_before_a_new_default_is_refused_until_fresh(
    pair_facesets: tuple[Path, Path], tmp_path: Path, monkeypatch
) -> None:
    import yaml

    from swaplab.train.built_networks import build_network, build_run_dir
    from swaplab.train.entry import build_config
    from swaplab.train.run import RunConfigMismatch, read_run_config

    monkeypatch.setenv("SWAPLAB_CACHE", str(tmp_path / "cache"))
    words = [f"data.facesets=[{pair_facesets[0]}]", "data.val_faces=2", "trainer.steps=2"]
    installed = build_network("face-segmenter", "test", words, progress=False)
    before = installed.read_bytes()
    run_dir = build_run_dir("face-segmenter", "test")
    # The run as a swaplab from before softened pastes wrote it: without the setting.
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    del config["data"]["realistic_paste"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert read_run_config(run_dir)[1].data.realistic_paste == 0.0  # what that run trained with
    # Extending it keeps its settings; building under today's default is refused, naming both.
    assert build_config([f"run_dir={run_dir}"]).data.realistic_paste == 0.0
    with pytest.raises(RunConfigMismatch, match=r"(?s)data\.realistic_paste: saved 0\.0 \(the value before.*--fresh"):
        build_network("face-segmenter", "test", words, progress=False)
    assert installed.read_bytes() == before  # the refusal loses nothing
    build_network("face-segmenter", "test", words, progress=False, fresh=True)
    _, rebuilt = read_run_config(run_dir)
    assert rebuilt.data.realistic_paste == 0.5
    assert [p.name for p in run_dir.parent.iterdir() if "discarded" in p.name] == []
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["sessions"]) == 1  # trained anew, not resumed


def test_bad_mask_names_list_the_valid_ones() -> None:
    from swaplab.swap.pipeline import SwapConfig

    with pytest.raises(ConfigError, match="segment\\+hull"):
        apply_overrides(SwapConfig(), ["mask=segmentation"])
    from swaplab.train.built_networks import build_config

    with pytest.raises(KeyError, match="face-segmenter \\(cpu, test\\)"):
        build_config("face-segmentr")


def test_keep_mouth_cuts_the_inner_lips_out_of_the_mask(pair_facesets: tuple[Path, Path]) -> None:
    from swaplab.faces.landmarks import LANDMARKS_68
    from swaplab.facesets.format import Faceset
    from swaplab.swap.masking import without_mouth_interior

    faceset = Faceset(pair_facesets[0])
    points = faceset.landmarks(0).copy()
    inner = points[LANDMARKS_68["inner_lips"]]
    # Open the mouth: the lower inner lip moves down by 8 px, so the interior is a real region.
    points[65:68, 1] += 8
    centre = np.round(points[LANDMARKS_68["inner_lips"]].mean(axis=0)).astype(int)
    mask = np.ones((faceset.size, faceset.size), np.float32)
    kept = without_mouth_interior(mask, points)
    assert kept[centre[1], centre[0]] < 0.05
    far = np.ones_like(mask, bool)
    x0, y0 = inner.min(axis=0).astype(int) - 4
    x1, y1 = inner.max(axis=0).astype(int) + 14
    far[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(kept[far], mask[far])
    assert 20 < (kept < 0.5).sum() < 0.05 * mask.size


def test_mask_smoothing_filters_each_track_and_resets(pair_model: Path) -> None:
    from swaplab.faces.analyze import AlignedFace
    from swaplab.swap.pipeline import FaceSwapper, SwapConfig

    model = pair_model
    swapper = FaceSwapper(model, SwapConfig(mask="learned", mask_blur=0, mask_smoothing="kalman"))
    size = swapper.resolution
    face = AlignedFace.__new__(AlignedFace)
    face.track_id, face.landmarks, face.crop = 0, np.zeros((68, 2), np.float32), np.zeros((size, size, 3), np.uint8)
    on, off = np.ones((size, size), np.float32), np.zeros((size, size), np.float32)
    assert swapper._mask(face, on).min() == 1.0  # the first frame passes through
    flicker = swapper._mask(face, off)
    assert 0.0 < flicker.mean() < 1.0  # a one-frame drop is damped, not followed
    swapper.reset_tracks()
    np.testing.assert_array_equal(swapper._mask(face, off), off)
    with pytest.raises(ConfigError, match="kalman"):
        apply_overrides(SwapConfig(), ["mask_smoothing=ema"])


def test_the_mouth_cut_is_smoothed_over_a_track_with_the_mask(
    pair_facesets: tuple[Path, Path], pair_model: Path
) -> None:
    from swaplab.faces.analyze import AlignedFace
    from swaplab.facesets.format import Faceset
    from swaplab.swap.pipeline import FaceSwapper, SwapConfig

    model = pair_model
    faceset = Faceset(pair_facesets[0])
    shut_points = faceset.landmarks(0).copy()
    shut_points[[65, 66, 67]] = shut_points[[63, 62, 61]]  # the lower inner lip on the upper: no interior
    opened = shut_points.copy()
    opened[65:68, 1] += 8  # an open mouth: a real interior to cut
    face = AlignedFace.__new__(AlignedFace)
    for smoothing in ("none", "kalman"):
        swapper = FaceSwapper(model, SwapConfig(mask="learned", mask_blur=0, mask_smoothing=smoothing, keep_mouth=True))
        size = swapper.resolution
        scale = size / faceset.size
        on = np.ones((size, size), np.float32)
        face.track_id, face.crop = 0, np.zeros((size, size, 3), np.uint8)
        face.landmarks = (opened * scale).astype(np.float32)
        first = swapper._mask(face, on)
        assert first.min() < 0.1  # the cut is there on the first frame either way
        face.landmarks = (shut_points * scale).astype(np.float32)  # the mouth shuts for one frame
        shut = swapper._mask(face, on)
        if smoothing == "none":
            assert shut.min() == 1.0  # followed at once (and a shut mouth cuts nothing)
        else:
            assert shut.min() < 0.98  # damped: a one-frame change is not followed fully


@pytest.mark.slow
def test_training_masks_from_the_segmenter_and_user_polygons(
    trained_segmenter, pair_facesets: tuple[Path, Path], tmp_path: Path, monkeypatch
) -> None:
    import json
    import shutil

    from swaplab.facesets.format import Faceset
    from swaplab.models.installed import NetworkMissing
    from swaplab.train.data import load_faces
    from swaplab.train.export import export_model
    from swaplab.train.recipes.per_pair import TrainConfig

    faces = tmp_path / "faces"
    shutil.copytree(pair_facesets[0], faces)
    rows = range(6)
    hull = load_faces(faces, 64, rows)
    monkeypatch.delenv("SWAPLAB_FACE_SEGMENTER", raising=False)
    monkeypatch.setenv("SWAPLAB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(NetworkMissing, match="swaplab nets build face-segmenter"):
        load_faces(faces, 64, rows, mask="segment")
    export_model(trained_segmenter[0], tmp_path / "segmenter")
    monkeypatch.setenv("SWAPLAB_FACE_SEGMENTER", str(tmp_path / "segmenter" / "model.safetensors"))

    both = load_faces(faces, 64, rows, mask="segment+hull")
    assert (both.masks.int() <= hull.masks.int() + 1).all()  # inside the hull (rounding aside)
    assert (hull.masks.float() - both.masks.float()).abs().mean() > 1.0  # and not the hull itself
    assert torch.equal(both.images, hull.images) and torch.equal(both.feature_masks, hull.feature_masks)

    # A user's polygons for the first face: all face, its left half covered by an occluder.
    faceset = Faceset(faces)
    side = faceset.size
    whole = [[0, 0], [side - 1, 0], [side - 1, side - 1], [0, side - 1]]
    left = [[0, 0], [side / 2 - 0.5, 0], [side / 2 - 0.5, side - 1], [0, side - 1]]
    polygons = {faceset.records[0].id: {"face": [whole], "occluder": [left]}}
    document = {"format": "swaplab-mask-polygons", "version": 1, "faces": polygons}
    (faces / "mask_polygons.json").write_text(json.dumps(document))
    corrected = load_faces(faces, 64, rows, mask="segment").masks[:, 0]
    assert (corrected[0, :, :31] == 0).all() and (corrected[0, :, 33:] == 255).all()
    assert torch.equal(corrected[1:], load_faces(pair_facesets[0], 64, rows, mask="segment").masks[1:, 0])

    with pytest.raises(ConfigError, match="data.mask='xseg': choose from hull, segment, segment\\+hull"):
        apply_overrides(TrainConfig(), ["data.mask=xseg"])
