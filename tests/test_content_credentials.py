"""C2PA content credentials on marked outputs: written, signed with the local certificate, checked by verify."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swaplab.provenance import Provenance, verify, write_marked_image
from swaplab.provenance.content_credentials import read_credentials, signer_files

pytestmark = pytest.mark.usefixtures("one_thread")


def _face(lfw: Path) -> np.ndarray:
    return np.asarray(Image.open(sorted((lfw / "Colin_Powell").glob("*.jpg"))[0]).convert("RGB"))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_marked_files_carry_a_valid_manifest(lfw: Path, tmp_path: Path, suffix: str) -> None:
    provenance = Provenance.create("credentials test model", model_card=b"card", content=b"content")
    path = write_marked_image(tmp_path / f"swap{suffix}", _face(lfw), provenance)
    credentials = read_credentials(path)
    assert credentials is not None and credentials["state"] != "Invalid" and credentials["codes"] == []
    assert credentials["synthetic"] and credentials["generator"] == "swaplab"
    assert not credentials["trusted"]  # the local certificate: valid signature, signer not in a trust list
    assert credentials["swaplab"]["model_id"] == "credentials test model"
    report = verify(path)
    assert report.synthetic and report.credentials == credentials and report.metadata is not None
    assert "C2PA: valid, local, untrusted signer, by swaplab" in report.summary()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left beside it


def test_a_changed_file_fails_its_manifest(lfw: Path, tmp_path: Path) -> None:
    path = write_marked_image(tmp_path / "swap.jpg", _face(lfw), Provenance.create("m"))
    data = bytearray(path.read_bytes())
    data[-400] ^= 0x10  # in the JPEG's scan data (still decodable), which the manifest's hash covers
    path.write_bytes(bytes(data))
    credentials = read_credentials(path)
    assert credentials is not None and credentials["state"] == "Invalid"
    assert any("mismatch" in code for code in credentials["codes"])
    assert "C2PA: INVALID" in verify(path).summary()


def test_the_local_certificate_is_made_once_and_replaceable(tmp_path: Path, lfw: Path) -> None:
    chain, key = signer_files()
    assert chain.is_file() and key.is_file() and (key.stat().st_mode & 0o777) == 0o600
    first = chain.read_bytes()
    assert signer_files()[0].read_bytes() == first  # kept, not regenerated
    chain.unlink()
    key.unlink()  # a user removing (or replacing) the pair: the next write makes a new one
    write_marked_image(tmp_path / "swap.png", _face(lfw), Provenance.create("m"))
    assert chain.read_bytes() != first
    assert read_credentials(tmp_path / "swap.png")["state"] != "Invalid"


def test_real_photos_have_no_manifest(lfw: Path) -> None:
    assert read_credentials(sorted((lfw / "Colin_Powell").glob("*.jpg"))[0]) is None
