"""dlib's face-recognition ResNet in PyTorch: parser, parity with dlib, gradients, chips, distances."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from swaplab.identity import (
    DLIB_SAME_PERSON_THRESHOLD,
    IDENTITY_ENCODERS,
    DlibResNetIdentity,
    add_zero_padded,
    chip_from_landmarks,
    cosine_distance,
    default_dlib_model_path,
    dlib_chip,
    embed_chips,
    face_chip_matrix,
    identity_distance,
    load_dlib_identity,
    same_person,
)
from swaplab.identity.dlib_format import DlibFormatError, DlibReader, parse_face_recognition_net

dlib = pytest.importorskip("dlib")
face_recognition_models = pytest.importorskip("face_recognition_models")

# Three LFW people, three photos each: every same-person pair is below dlib's 0.6 threshold and
# every cross-person pair above it (measured: same 0.34-0.53, different 0.64-0.95).
PEOPLE = ("George_W_Bush", "Colin_Powell", "Tony_Blair")
PHOTOS = (1, 2, 3)


@dataclass
class Face:
    person: str
    image: np.ndarray  # H x W x 3 uint8 RGB
    landmarks: np.ndarray  # (5, 2) float32
    chip: np.ndarray  # 150 x 150 x 3 uint8 from dlib.get_face_chip
    shape: object  # dlib.full_object_detection


@pytest.fixture(scope="module")
def faces(lfw: Path) -> list[Face]:
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    found = []
    for person in PEOPLE:
        for k in PHOTOS:
            image = np.asarray(Image.open(lfw / person / f"{person}_{k:04d}.jpg").convert("RGB"))
            boxes = detector(image, 0)
            assert len(boxes) >= 1, f"no face found in {person}_{k:04d}"
            shape = predictor(image, max(boxes, key=lambda r: r.area()))
            landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
            found.append(Face(person, image, landmarks, dlib.get_face_chip(image, shape, 150, 0.25), shape))
    return found


@pytest.fixture(scope="module")
def model() -> DlibResNetIdentity:
    return load_dlib_identity()


@pytest.fixture(scope="module")
def dlib_descriptors(faces: list[Face]) -> np.ndarray:
    recognizer = dlib.face_recognition_model_v1(str(default_dlib_model_path()))
    # The chip-only batch overload: the same chips the port sees.
    return np.array([np.array(d) for d in recognizer.compute_face_descriptor([f.chip for f in faces])])


def chips_to_tensor(chips: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float().div(255).contiguous()


# -- the serialisation reader ---------------------------------------------------------------
def test_reader_decodes_dlib_primitives() -> None:
    # int 300 = 0x012C: 2 bytes; -5; 0; float 0.04 = 10737418 * 2^-28; bool; string "abc".
    data = bytes([0x02, 0x2C, 0x01, 0x81, 0x05, 0x01, 0x00])
    data += bytes([0x03, 0x0A, 0xD7, 0xA3, 0x81, 0x1C]) + b"1" + bytes([0x01, 0x03]) + b"abc"
    reader = DlibReader(data, "synthetic")
    assert (reader.int(), reader.int(), reader.int()) == (300, -5, 0)
    assert reader.float() == pytest.approx(0.04, rel=1e-7)
    assert reader.bool() is True
    assert reader.string() == "abc"
    assert reader.at_end()
    with pytest.raises(DlibFormatError, match=r"synthetic: file ends inside"):
        reader.int()


def test_parser_reads_the_whole_file() -> None:
    net = parse_face_recognition_net(default_dlib_model_path())
    assert len(net.layers) == 108
    assert net.input_size == (150, 150)
    assert net.channel_means == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert net.distance_threshold == pytest.approx(0.6)
    assert net.loss_margin == pytest.approx(0.04)
    n_values = sum(a.size for layer in net.layers for a in vars(layer).values() if isinstance(a, np.ndarray))
    assert n_values == 5_614_592


def test_parser_rejects_a_truncated_file(tmp_path: Path) -> None:
    data = default_dlib_model_path().read_bytes()
    truncated = tmp_path / "truncated_resnet.dat"
    truncated.write_bytes(data[: len(data) - 1000])
    with pytest.raises(DlibFormatError, match=r"truncated_resnet\.dat: file ends inside .*truncated"):
        parse_face_recognition_net(truncated)


def test_parser_rejects_trailing_bytes_and_other_networks(tmp_path: Path) -> None:
    padded = tmp_path / "padded.dat"
    shutil.copyfile(default_dlib_model_path(), padded)
    with padded.open("ab") as f:
        f.write(b"\x00\x00")
    with pytest.raises(DlibFormatError, match=r"padded\.dat: 2 unexpected bytes after the last layer"):
        parse_face_recognition_net(padded)
    mmod = Path(face_recognition_models.cnn_face_detector_model_location())
    with pytest.raises(DlibFormatError, match=r"mmod_human_face_detector\.dat: not a metric-learning network"):
        parse_face_recognition_net(mmod)
    with pytest.raises(DlibFormatError, match=r"missing\.dat: cannot read"):
        parse_face_recognition_net(tmp_path / "missing.dat")


# -- the network ----------------------------------------------------------------------------
def test_add_zero_padded_pads_channels_and_space_at_the_end() -> None:
    block = torch.ones(1, 4, 3, 3)
    shortcut = torch.full((1, 2, 4, 4), 10.0)
    out = add_zero_padded(block, shortcut)
    assert out.shape == (1, 4, 4, 4)
    assert torch.all(out[:, :2, :3, :3] == 11)  # both
    assert torch.all(out[:, :2, 3, :] == 10) and torch.all(out[:, :2, :, 3] == 10)  # shortcut only
    assert torch.all(out[:, 2:, :3, :3] == 1)  # block only
    assert torch.all(out[:, 2:, 3, :] == 0)  # neither


def test_architecture_and_registry(model: DlibResNetIdentity) -> None:
    assert sum(p.numel() for p in model.parameters()) == 5_614_592
    assert not any(p.requires_grad for p in model.parameters())
    assert "dlib-resnet" in IDENTITY_ENCODERS
    assert isinstance(IDENTITY_ENCODERS.create("dlib-resnet"), DlibResNetIdentity)
    chips = torch.rand(2, 3, 150, 150)
    with torch.inference_mode():
        features = model.features(chips)
        assert features.shape == (2, 256)
        torch.testing.assert_close(model.fc(features), model(chips))


def test_port_matches_dlib_descriptors(
    model: DlibResNetIdentity, faces: list[Face], dlib_descriptors: np.ndarray
) -> None:
    assert len(faces) >= 5
    with torch.inference_mode():
        ours = model(chips_to_tensor(np.stack([f.chip for f in faces]))).numpy()
    assert ours.shape == (len(faces), 128)
    assert np.abs(ours - dlib_descriptors).max() <= 1e-4
    # The helper path (uint8 in, numpy out) gives the same numbers, and so does NCHW storage.
    np.testing.assert_allclose(embed_chips(model, [f.chip for f in faces], batch_size=4), ours, atol=1e-5)
    plain = load_dlib_identity(channels_last=False)
    np.testing.assert_allclose(embed_chips(plain, np.stack([f.chip for f in faces])), ours, atol=1e-5)


def test_gradients_reach_the_chips(model: DlibResNetIdentity, faces: list[Face]) -> None:
    chips = chips_to_tensor(np.stack([f.chip for f in faces[:3]])).requires_grad_(True)
    embeddings = model(chips)
    loss = cosine_distance(embeddings[0:1], embeddings[1:]).sum() + identity_distance(embeddings[0], embeddings[2])
    loss.backward()
    assert chips.grad is not None and torch.isfinite(chips.grad).all()
    assert chips.grad.abs().amax(dim=(1, 2, 3)).min() > 0  # every chip receives a gradient


def test_same_and_different_people(faces: list[Face], dlib_descriptors: np.ndarray) -> None:
    people = np.array([f.person for f in faces])
    distances = identity_distance(dlib_descriptors[:, None], dlib_descriptors[None])
    same = people[:, None] == people[None]
    off_diagonal = ~np.eye(len(faces), dtype=bool)
    assert distances[same & off_diagonal].max() < DLIB_SAME_PERSON_THRESHOLD
    assert distances[~same].min() > DLIB_SAME_PERSON_THRESHOLD
    assert np.array_equal(same_person(dlib_descriptors[:, None], dlib_descriptors[None]), same)


# -- face chips -----------------------------------------------------------------------------
def test_chip_geometry_matches_dlib_chip_details(faces: list[Face]) -> None:
    landmarks = np.stack([f.landmarks for f in faces])
    image_to_chip = face_chip_matrix(landmarks).numpy()
    for face, matrix in zip(faces, image_to_chip):
        details = dlib.get_face_chip_details(face.shape, 150, 0.25)
        chip_to_image = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
        centre = chip_to_image @ [74.5, 74.5, 1.0]
        rect = details.rect
        np.testing.assert_allclose(
            centre, [(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2], atol=1e-6
        )
        span = np.hypot(*chip_to_image[:, 0]) * 149
        assert span == pytest.approx(rect.right() - rect.left(), abs=1e-6)
        assert np.arctan2(chip_to_image[1, 0], chip_to_image[0, 0]) == pytest.approx(details.angle, abs=1e-6)


def test_torch_chip_agrees_with_dlib_chip(
    model: DlibResNetIdentity, faces: list[Face], dlib_descriptors: np.ndarray
) -> None:
    # Measured on these 9 LFW faces: mean |torch - dlib| 0.485 grey levels (dlib truncates to
    # uint8), 0.001 after flooring the torch chip, max 1; descriptor distance 0.0035-0.0055.
    images = torch.stack([torch.from_numpy(f.image.copy()).permute(2, 0, 1) for f in faces]).float() / 255
    landmarks = torch.from_numpy(np.stack([f.landmarks for f in faces]))
    chips = chip_from_landmarks(images, landmarks)
    assert chips.shape == (len(faces), 3, 150, 150)
    torch_255 = chips.permute(0, 2, 3, 1).numpy() * 255
    dlib_255 = np.stack([f.chip for f in faces]).astype(np.float32)
    assert np.abs(torch_255 - dlib_255).mean() < 0.6
    assert np.abs(np.floor(torch_255 + 1e-3) - dlib_255).mean() < 0.01
    assert np.abs(torch_255 - dlib_255).max() <= 1.01
    with torch.inference_mode():
        embeddings = model(chips).numpy()
    assert identity_distance(embeddings, dlib_descriptors).max() < 0.01
    # dlib_chip is dlib.get_face_chip on the same landmarks.
    assert np.array_equal(dlib_chip(faces[0].image, faces[0].landmarks), faces[0].chip)


def test_torch_chip_is_differentiable_in_images_and_landmarks(faces: list[Face]) -> None:
    face = faces[0]
    image = (torch.from_numpy(face.image.copy()).permute(2, 0, 1)[None].float() / 255).requires_grad_(True)
    landmarks = torch.from_numpy(face.landmarks[None].astype(np.float64)).requires_grad_(True)
    chip_from_landmarks(image, landmarks).mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert landmarks.grad is not None and torch.isfinite(landmarks.grad).all() and landmarks.grad.abs().sum() > 0
