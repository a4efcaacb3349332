"""A damaged faceset never loses faces silently: it is reported, refused, and rebuilt by extracting again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from swaplab.cli import main
from swaplab.facesets.extract import ExtractConfig, extract
from swaplab.facesets.format import Faceset, FacesetDamaged, FacesetError


@pytest.fixture()
def three_photos(tmp_path: Path, lfw: Path) -> tuple[list[Path], Path]:
    """A faceset of three Bush photos (one shard each), and the photos."""
    photos = []
    for src in sorted((lfw / "George_W_Bush").glob("*.jpg"))[:3]:
        shutil.copy(src, tmp_path / src.name)
        photos.append(tmp_path / src.name)
    cfg = ExtractConfig(size=64)
    cfg.faces.max_faces = 1
    assert extract(photos, tmp_path / "faces", cfg, progress=False).faces == 3
    return photos, tmp_path / "faces"


def _truncate(shard: Path) -> None:
    shard.write_bytes(shard.read_bytes()[: len(shard.read_bytes()) // 2])


def test_a_truncated_shard_is_reported_refused_and_rebuilt(three_photos, tmp_path, capsys, pair_facesets) -> None:
    photos, faces = three_photos
    shard = sorted((faces / "shards").glob("*.json"))[1]
    _truncate(shard)
    with pytest.raises(
        FacesetDamaged, match=rf"1 damaged shard\(s\) \(shards/{shard.name}: not readable JSON.*2 faces are intact"
    ):
        Faceset(faces)
    intact = Faceset(faces, allow_damaged=True)
    assert len(intact) == 2 and intact.damaged[0][0] == shard.name
    # faceset info lists it and fails
    assert main(["faceset", "info", str(faces)]) == 1
    printed = capsys.readouterr()
    assert "2 faces" in printed.out and f"shards/{shard.name}: not readable JSON" in printed.err
    # training refuses it unless told to go on with the intact faces
    common = ["model=df-cpu", f"data.dst={pair_facesets[1]}", "data.holdout=0", "trainer=test", "trainer.steps=1"]
    assert main(["train", *common, f"data.src={faces}", f"run_dir={tmp_path / 'refused'}"]) == 1
    assert "damaged shard" in capsys.readouterr().err and not (tmp_path / "refused").exists()
    run = tmp_path / "intact"
    assert main(["train", *common, f"data.src={faces}", "data.allow_damaged=true", f"run_dir={run}"]) == 0
    # extracting again rebuilds exactly the damaged shard
    cfg = ExtractConfig(size=64)
    cfg.faces.max_faces = 1
    summary = extract(photos, faces, cfg, progress=False)
    assert summary.faces == 1 and len(Faceset(faces)) == 3


def test_wrong_fields_name_the_file_and_the_field(three_photos) -> None:
    _, faces = three_photos
    shard = sorted((faces / "shards").glob("*.json"))[0]
    payload = json.loads(shard.read_text())
    del payload["records"][0]["matrix"]
    shard.write_text(json.dumps(payload))
    with pytest.raises(FacesetDamaged, match=rf"shards/{shard.name}: record '.*' lacks the field 'matrix'"):
        Faceset(faces)
    payload["records"][0]["matrix"] = "not a matrix"
    shard.write_text(json.dumps(payload))
    with pytest.raises(FacesetDamaged, match="field 'matrix' is a str"):
        Faceset(faces)
    shard.write_text(json.dumps({"faces": []}))
    with pytest.raises(FacesetDamaged, match="no list of records"):
        Faceset(faces)
    header = faces / "faceset.json"
    document = json.loads(header.read_text())
    del document["size"]
    header.write_text(json.dumps(document))
    with pytest.raises(FacesetError, match="faceset.json is damaged: its template and size are missing"):
        Faceset(faces)


def test_two_extractions_never_write_one_faceset(three_photos) -> None:
    from swaplab.io.locks import BusyError, exclusive

    photos, faces = three_photos
    cfg = ExtractConfig(size=64)
    with exclusive(faces / ".lock", "a test"), pytest.raises(BusyError, match=f"faceset {faces} is in use"):
        extract(photos, faces, cfg, progress=False)
    assert extract(photos, faces, cfg, progress=False).faces == 0  # everything already extracted
