"""The generative half of the zoo's shared parts: image data (digits, faces from facesets) and
``swaplab sample``, which draws marked picture grids from any generative model's card."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from swaplab.cli import main
from swaplab.config import ConfigError
from swaplab.io.images import read_image
from swaplab.provenance import verify
from swaplab.train.entry import build_config
from swaplab.train.export import export_model
from swaplab.train.image_data import ImageData
from swaplab.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_faces_preset_takes_its_facesets_from_a_later_override(pair_facesets: tuple[Path, Path]) -> None:
    bush, powell = pair_facesets
    cfg = build_config(["model=ae-faces", "data=faces32", f"data.train=[{bush},{powell}]", "data.holdout=8"])
    data = ImageData.for_run(cfg)
    assert data.shape == (3, 32, 32)
    assert data.class_names == ["Colin_Powell", "George_W_Bush"]  # people, sorted
    assert len(data) + 8 >= 40  # both facesets' faces, less the held-out ones
    held, labels = data.heldout()
    assert held.shape == (8, 3, 32, 32) and set(labels.tolist()) <= {0, 1}
    # without a data preset the faces follow the model: data.train alone switches the source to them
    plain = build_config(["model=ae-faces", f"data.train=[{bush}]", "data.holdout=8"])
    assert plain.data.source == "auto" and plain.data.resolution == 0
    assert ImageData.for_run(plain).shape == (3, 32, 32)
    assert ImageData.for_run(build_config(["model=ae-digits"])).shape == (1, 8, 8)  # and no train: digits
    # the folders are needed when the images are read, with the option that gives them
    with pytest.raises(ConfigError, match=r"data\.train="):
        ImageData.for_run(build_config(["model=ae-faces", "data=faces32"]))


@pytest.fixture(scope="module")
def digits_autoencoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("ae") / "run"
    cfg = build_config(["model=ae-digits", "trainer=zoo-test", f"run_dir={run_dir}"])
    train(cfg)
    return run_dir


def test_sample_draws_marked_grids_from_a_run_or_an_export(digits_autoencoder: Path, tmp_path: Path) -> None:
    grid = tmp_path / "interpolations.png"
    # from a run folder: interpolations between pairs of the run's held-out digits, 8 steps a row
    assert main(["sample", str(digits_autoencoder), "-o", str(grid), "--kind", "interpolations", "-n", "16"]) == 0
    image = read_image(grid)[0]
    assert image.shape == (2 * 64, 8 * 64, 3)  # 16 // 8 = 2 pairs, each tile drawn at 64 px
    report = verify(grid)
    assert report.watermark.present and report.metadata["synthetic"] is True
    assert report.consistent is not False

    exported = export_model(digits_autoencoder, tmp_path / "model")
    pairs = tmp_path / "reconstructions.png"
    digits = _digit_folder(tmp_path / "digits")
    assert main(["sample", str(exported), "-o", str(pairs), "--kind", "reconstructions", "--images", str(digits)]) == 0
    # originals and reconstructions side by side: the folder's 4 digits, in one row
    tiles = read_image(pairs)[0]
    assert tiles.shape == (64, 8 * 64, 3)
    original = cv2.imread(str(digits / "0.png"), cv2.IMREAD_GRAYSCALE)
    first = cv2.resize(tiles[:, :64, 0], (8, 8), interpolation=cv2.INTER_AREA)
    assert np.abs(first.astype(int) - original.astype(int)).max() <= 12  # the first tile is that digit


def _digit_folder(folder: Path) -> Path:
    folder.mkdir()
    data = ImageData.for_run(build_config(["model=ae-digits"]))
    for index, image in enumerate(data.heldout(4)[0]):
        cv2.imwrite(str(folder / f"{index}.png"), (image[0].numpy() * 255).astype(np.uint8))
    return folder


def test_sample_refuses_what_the_model_cannot_make_and_existing_files(
    digits_autoencoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sample", str(digits_autoencoder), "-o", str(tmp_path / "s.png")]) == 1  # kind: samples
    err = capsys.readouterr().err.strip()
    assert "cannot make samples: it can reconstruct, interpolate" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s.png").exists()

    existing = tmp_path / "taken.png"
    existing.write_bytes(b"mine")
    assert main(["sample", str(digits_autoencoder), "-o", str(existing)]) == 2  # a usage error
    assert existing.read_bytes() == b"mine"
    assert "--overwrite" in capsys.readouterr().err
