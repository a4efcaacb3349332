"""Extraction into facesets: real faces, bad inputs, resume, videos, identity filtering."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swaplab.cli import main
from swaplab.faces.align import transform_points
from swaplab.facesets.extract import ExtractConfig, extract
from swaplab.facesets.format import Faceset, FacesetError
from swaplab.facesets.sheet import contact_sheet
from swaplab.facesets.sort import sort_faceset

BUSH = "George_W_Bush"
POWELL = "Colin_Powell"


def _copy_people(lfw: Path, dest: Path, person: str, count: int) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sorted((lfw / person).glob("*.jpg"))[:count]:
        shutil.copy(src, dest / src.name)
        out.append(dest / src.name)
    return out


@pytest.fixture()
def messy_folder(tmp_path: Path, lfw: Path) -> Path:
    """Real faces mixed with every kind of bad input, in a path with spaces and non-ASCII."""
    folder = tmp_path / "photos with spaces ü"
    _copy_people(lfw, folder, BUSH, 4)
    (folder / "notes.txt").write_text("not a picture")
    (folder / "empty.jpg").write_bytes(b"")
    good = (folder / sorted(p.name for p in folder.glob("*.jpg") if p.stat().st_size)[0]).read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)).save(folder / "noise.png")
    Image.open(folder / sorted(folder.glob("George*.jpg"))[0].name).convert("L").save(folder / "grey.png")
    return folder


def test_extract_folder_with_bad_inputs(messy_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "faceset"
    summary = extract(messy_folder, out, ExtractConfig(size=128), progress=False)
    assert summary.faces >= 5  # 4 colour photos and the grey copy
    reasons = {Path(p["path"]).name: p["reason"] for p in summary.problems}
    assert set(reasons) == {"notes.txt", "empty.jpg", "truncated.jpg"}
    assert "unknown file type" in reasons["notes.txt"]
    assert "empty" in reasons["empty.jpg"]
    assert "truncated" in reasons["truncated.jpg"]
    assert summary.frames_without_face >= 1  # the noise image
    report = json.loads((out / "extract_report.json").read_text())
    assert report["faces"] == summary.faces and len(report["problems"]) == 3

    faceset = Faceset(out)
    assert len(faceset) == summary.faces
    for i, record in enumerate(faceset):
        crop = faceset.image(i)
        assert crop.shape == (128, 128, 3)
        assert len(record.landmarks) == 68 and len(record.landmarks5_source) == 5
        assert len(record.identity) == 128 and len(record.pose) == 3 and record.blur > 0
        # The stored matrix maps the source landmarks onto the crop landmarks.
        mapped = transform_points(np.asarray(record.landmarks_source), record.matrix_array)
        np.testing.assert_allclose(mapped, record.landmarks_array, atol=0.01)
        # Aligned faces sit in the middle of the crop.
        centre = record.landmarks_array.mean(axis=0)
        assert np.all(np.abs(centre - 64) < 20)


def test_rerun_skips_and_resumes(tmp_path: Path, lfw: Path) -> None:
    photos = _copy_people(lfw, tmp_path / "in", POWELL, 5)
    out = tmp_path / "fs"
    first = extract(photos, out, ExtractConfig(size=96), progress=False)
    hash_before = Faceset(out).content_hash()
    again = extract(photos, out, ExtractConfig(size=96), progress=False)
    assert again.resumed_shards == 5 and again.faces == 0
    # An interrupted run left some shards missing: only those are redone.
    shards = sorted((out / "shards").glob("*.json"))
    for shard in shards[:2]:
        shard.unlink()
    resumed = extract(photos, out, ExtractConfig(size=96), progress=False)
    assert resumed.resumed_shards == 3 and resumed.faces == first.faces - (first.faces - resumed.faces)
    assert Faceset(out).content_hash() == hash_before


def test_interrupted_extraction_resumes(tmp_path: Path, lfw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = _copy_people(lfw, tmp_path / "in", BUSH, 6)
    out = tmp_path / "fs"
    import swaplab.facesets.extract as extract_module

    real = extract_module._extract_image
    calls = {"n": 0}

    def dies_on_fourth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # a kill between two images
        return real(*args, **kwargs)

    monkeypatch.setattr(extract_module, "_extract_image", dies_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        extract(photos, out, ExtractConfig(size=96), progress=False)
    assert len(list((out / "shards").glob("*.json"))) == 3
    monkeypatch.setattr(extract_module, "_extract_image", real)
    resumed = extract(photos, out, ExtractConfig(size=96), progress=False)
    assert resumed.resumed_shards == 3
    fresh = extract(photos, tmp_path / "fresh", ExtractConfig(size=96), progress=False)
    assert len(Faceset(out)) == len(Faceset(tmp_path / "fresh")) == fresh.faces


def test_faceset_version_check(tmp_path: Path, lfw: Path) -> None:
    out = tmp_path / "fs"
    extract(_copy_people(lfw, tmp_path / "in", BUSH, 1), out, ExtractConfig(size=64), progress=False)
    header = json.loads((out / "faceset.json").read_text())
    header["version"] = 99
    (out / "faceset.json").write_text(json.dumps(header))
    with pytest.raises(FacesetError, match="version 99"):
        Faceset(out)
    with pytest.raises(FacesetError, match="not a faceset"):
        Faceset(tmp_path / "in")


def test_mismatched_geometry_is_refused(tmp_path: Path, lfw: Path) -> None:
    photos = _copy_people(lfw, tmp_path / "in", BUSH, 1)
    extract(photos, tmp_path / "fs", ExtractConfig(size=64), progress=False)
    with pytest.raises(FacesetError, match="size=64"):
        extract(photos, tmp_path / "fs", ExtractConfig(size=128), progress=False)


def test_identity_filter_keeps_only_the_reference(tmp_path: Path, lfw: Path) -> None:
    bush = _copy_people(lfw, tmp_path / "in", BUSH, 5)
    powell = _copy_people(lfw, tmp_path / "in", POWELL, 4)
    cfg = ExtractConfig(size=96, reference=[bush[0]])
    cfg.faces.max_faces = 1
    summary = extract(bush[1:] + powell, tmp_path / "fs", cfg, progress=False)
    assert summary.faces == 4
    assert summary.rejected["not the reference identity"] == 4
    assert all(BUSH in r.source for r in Faceset(tmp_path / "fs"))


def test_many_and_tiny_faces(tmp_path: Path, shared_data: Path, lfw: Path) -> None:
    group = shared_data / "photos" / "face_recognition_examples" / "two_people.jpg"
    if not group.exists():
        pytest.skip("two-person photo missing")
    both = extract(group, tmp_path / "two", ExtractConfig(size=64), progress=False)
    assert both.faces == 2
    cfg = ExtractConfig(size=64)
    cfg.faces.max_faces = 1
    one = extract(group, tmp_path / "one", cfg, progress=False)
    assert one.faces == 1 and one.rejected["beyond max_faces=1"] == 1
    # A face of about 20 px is found with upsampling but refused as too small to align well.
    tiny = tmp_path / "tiny.png"
    Image.open(sorted((lfw / BUSH).glob("*.jpg"))[0]).resize((48, 48)).save(tiny)
    cfg = ExtractConfig(size=64)
    cfg.faces.upsample = 2
    small = extract(tiny, tmp_path / "tiny", cfg, progress=False)
    assert small.faces == 0 and small.frames_without_face == 1
    assert any("min_size" in reason for reason in small.rejected)


def test_video_extraction_tracks_and_resumes(tmp_path: Path, shared_data: Path) -> None:
    clip = shared_data / "videos" / "hdtf_sadtalker" / "WDA_KatieHill_000.mp4"
    cfg = ExtractConfig(size=96, max_frames=30, chunk_frames=10)
    cfg.faces.detect_every = 5
    out = tmp_path / "video"
    summary = extract(clip, out, cfg, progress=False)
    assert summary.videos == 1 and summary.frames == 30 and summary.faces == 30
    faceset = Faceset(out)
    assert [r.frame for r in faceset] == list(range(30))
    assert len({r.track_id for r in faceset}) == 1
    assert sum(r.tracked for r in faceset) >= 20  # most frames tracked, not re-detected
    assert faceset.records[25].time == pytest.approx(1.0)  # 25 fps
    shards = sorted((out / "shards").glob("*.json"))
    assert len(shards) == 3
    shards[1].unlink()
    again = extract(clip, out, cfg, progress=False)
    assert again.resumed_shards == 2 and again.faces == 10
    assert [r.frame for r in Faceset(out)] == list(range(30))


def test_sort_sheet_and_cli(tmp_path: Path, lfw: Path, capsys: pytest.CaptureFixture) -> None:
    bush = _copy_people(lfw, tmp_path / "in", BUSH, 6)
    powell = _copy_people(lfw, tmp_path / "in", POWELL, 2)
    out = tmp_path / "fs"
    assert main(["extract", *map(str, bush + powell), "-o", str(out), "size=64", "faces.max_faces=1", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "8 faces from 8 images" in printed and "contact sheet" in printed
    assert (out / "contact_sheet.jpg").stat().st_size > 1000

    report = sort_faceset(out, tmp_path / "sorted", by="identity", reference=[bush[0]])
    assert report == {"total": 8, "kept": 8}
    ordered = Faceset(tmp_path / "sorted")
    assert all(POWELL in r.source for r in ordered.records[-2:])  # strangers last
    filtered = sort_faceset(out, tmp_path / "bush", by="identity", reference=[bush[0]], max_distance=0.6)
    assert filtered["kept"] == 6
    sharp = sort_faceset(out, tmp_path / "sharp", by="blur", keep=3)
    blur = [r.blur for r in Faceset(tmp_path / "sharp")]
    assert sharp["kept"] == 3 and blur == sorted(blur, reverse=True)
    # an existing output is never merged into: refused, or replaced whole when asked
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        sort_faceset(out, tmp_path / "sharp", by="blur", keep=1)
    assert main(["faceset", "sort", str(out), "-o", str(tmp_path / "sharp"), "--by", "blur", "--keep", "1"]) == 2
    assert main(["faceset", "sort", str(out), "-o", str(tmp_path / "sharp"), "--keep", "1", "--overwrite"]) == 0
    assert len(Faceset(tmp_path / "sharp")) == 1
    # the copy's crops are files of their own: editing one leaves the original alone
    copied = tmp_path / "sharp" / Faceset(tmp_path / "sharp").records[0].file
    assert copied.stat().st_nlink == 1
    sheet = contact_sheet(out, tmp_path / "sheet.png", max_faces=4, thumb=32)
    with Image.open(sheet) as img:
        assert img.size[0] >= 64

    assert main(["extract", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "x"), "-q"]) == 1
    assert "no such file" in capsys.readouterr().out
    assert main(["extract", str(bush[0]), "-o", str(tmp_path / "y"), "size=big"]) == 2
    assert "expected an integer" in capsys.readouterr().err
