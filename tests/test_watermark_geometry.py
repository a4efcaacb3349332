"""The synchronisation template: marks survive a 10 % crop, a mirror and small rotations; real
unmarked photos do not read as marked under the same search."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from swaplab.provenance import PayloadFields, mark_image, verify
from swaplab.provenance.sync import SCORE_MIN, detect, read_payload

pytestmark = pytest.mark.usefixtures("one_thread")

FIELDS = PayloadFields.from_ids("geometry test model", "geometry test content")


def _face(lfw: Path, person: str) -> np.ndarray:
    path = sorted((lfw / person).glob("*.jpg"))[0]
    return np.asarray(Image.open(path).convert("RGB"))


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


def _crop(image: np.ndarray, share: float) -> np.ndarray:
    height, width = image.shape[:2]
    cut_y, cut_x = round(height * share), round(width * share)
    return np.ascontiguousarray(
        image[cut_y // 2 : height - cut_y + cut_y // 2, cut_x // 2 : width - cut_x + cut_x // 2]
    )


@pytest.mark.parametrize("person", ["Colin_Powell", "George_W_Bush"])
def test_mirror_and_rotations_keep_the_payload(lfw: Path, person: str) -> None:
    marked = mark_image(_face(lfw, person), FIELDS)
    for name, edited in {
        "mirror": np.ascontiguousarray(marked[:, ::-1]),
        "rotate +2": _rotate(marked, 2.0),
        "rotate -3": _rotate(marked, -3.0),
    }.items():
        reading, template, how, _ = read_payload(edited)
        assert reading.present and reading.payload == FIELDS.pack(), name
        assert template is not None and template.present and how.startswith("after undoing"), name
    assert detect(np.ascontiguousarray(marked[:, ::-1])).mirrored


def test_a_cropped_file_keeps_its_payload(lfw: Path, tmp_path: Path) -> None:
    marked = mark_image(_face(lfw, "Colin_Powell"), FIELDS)
    path = tmp_path / "cropped.jpg"
    Image.fromarray(_crop(marked, 0.10)).save(path, quality=90)  # no metadata: the pixels alone
    report = verify(path)
    assert report.metadata is None and report.template is not None and report.template.present
    assert 0.85 <= report.template.scale <= 0.95
    # The template gives the crop's size; the search over its place finds the payload again.
    assert report.payload is not None and report.payload.model_hash == FIELDS.model_hash and report.synthetic
    assert "after placing the crop" in report.summary()
    rotated = tmp_path / "rotated.png"
    Image.fromarray(_rotate(marked, 2.0)).save(rotated)
    report = verify(rotated)
    assert report.payload is not None and report.payload.model_hash == FIELDS.model_hash
    assert "after undoing" in report.summary()


def test_a_crop_of_one_side_keeps_its_payload(lfw: Path, tmp_path: Path) -> None:
    face = _face(lfw, "Tony_Blair")
    wide = np.ascontiguousarray(np.concatenate([face, face[:, ::-1]], axis=1))  # the cut side is the longer
    for name, image in {"square": face, "wide": wide}.items():
        marked = mark_image(image, FIELDS)
        height, width = marked.shape[:2]
        for side, cut in {"right": marked[:, : width - width // 10], "bottom": marked[: height - height // 10]}.items():
            path = tmp_path / f"{name}-{side}.jpg"
            Image.fromarray(np.ascontiguousarray(cut)).save(path, quality=90)
            report = verify(path)
            assert report.payload is not None and report.payload.model_hash == FIELDS.model_hash, (name, side)
            assert "of the width and" in report.summary(), (name, side, report.summary())


def test_unmarked_real_images_stay_unmarked_under_the_search(lfw: Path, shared_data: Path) -> None:
    people = sorted(p for p in lfw.iterdir() if p.is_dir())[::600][:8]
    images = [_face(lfw, p.name) for p in people]
    photos = sorted((shared_data / "photos" / "deepface_tests").glob("*.jpg"))[:4]
    for path in photos:
        with Image.open(path) as photo:
            photo.draft("RGB", (1024, 1024))
            images.append(np.asarray(photo.convert("RGB")))
    for image in images:
        for variant in (image, _crop(image, 0.10), np.ascontiguousarray(image[:, ::-1])):
            reading, template, _, _ = read_payload(variant)
            assert not reading.present
            assert template is not None and template.score < SCORE_MIN
