"""swaplab.data: the catalog and the fetcher, offline, against a fake "official site" in tmp_path."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swaplab.data import (
    DATASETS,
    ArchiveError,
    ChecksumMismatchError,
    DatasetFile,
    DatasetSpec,
    DestinationExistsError,
    DownloadError,
    IncompleteDownloadError,
    UnsafeArchiveError,
    UnverifiedDownloadError,
    data_root,
    dataset_status,
    fetch,
    list_datasets,
    locate_data_root,
    rewrite_url,
    safe_extract,
    verify_file,
)

# The package re-exports the function ``fetch``, which shadows the submodule's attribute.
fetch_module = importlib.import_module("swaplab.data.fetch")

PEOPLE = {"Alice_Example": 2, "Bob_Sample": 1}
LISTS = {
    "peopleDevTrain.txt": b"1\nAlice_Example\t2\n",
    "peopleDevTest.txt": b"1\nBob_Sample\t1\n",
    "pairsDevTrain.txt": b"1\nAlice_Example\t1\t2\nAlice_Example\t1\tBob_Sample\t1\n",
}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_spec(path: Path, url: str | None = None, **overrides) -> DatasetFile:
    """A catalog entry for ``path`` with its true size and sha256 (overridable)."""
    fields = dict(url=url or path.as_uri(), filename=path.name, size=path.stat().st_size, sha256=sha256_of(path))
    fields.update(overrides)
    return DatasetFile(**fields)


def make_tgz(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A gzipped tar holding ``members`` (name -> bytes) and symlinks (name -> target), names as given."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def tiny_jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A fake LFW site: ``lfw-deepfunneled.tgz`` of tiny JPEGs plus three text lists."""
    root = tmp_path / "site"
    root.mkdir()
    members = {
        f"lfw-deepfunneled/{name}/{name}_{i:04d}.jpg": tiny_jpeg((40 * i, 100, 200))
        for name, count in PEOPLE.items()
        for i in range(1, count + 1)
    }
    make_tgz(root / "lfw-deepfunneled.tgz", members)
    for name, data in LISTS.items():
        (root / name).write_bytes(data)
    return root


def site_spec(site: Path, url_root: str | None = None, **archive_overrides) -> DatasetSpec:
    """A DatasetSpec for the fake site, with the real LFW layout; URLs under ``url_root``."""

    def url(name: str) -> str:
        return f"{url_root}/{name}" if url_root else (site / name).as_uri()

    archive = file_spec(
        site / "lfw-deepfunneled.tgz",
        url("lfw-deepfunneled.tgz"),
        unpack="tgz",
        creates=("lfw-deepfunneled",),
        **archive_overrides,
    )
    lists = tuple(file_spec(site / name, url(name)) for name in LISTS)
    return DatasetSpec(
        name="test-lfw",
        description="fake LFW",
        terms="test data",
        homepage="https://example.invalid/",
        root="lfw",
        files=(archive, *lists),
    )


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every URL the fetcher actually reads."""
    seen: list[str] = []
    original = fetch_module._copy_url

    def counting(url, out, file, progress):
        seen.append(url)
        return original(url, out, file, progress)

    monkeypatch.setattr(fetch_module, "_copy_url", counting)
    return seen


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if p.name != fetch_module.MARKER_NAME)


# --------------------------------------------------------------------------------------------
# Good fetches


def test_fetch_unpacks_into_the_lfw_layout_and_writes_the_marker(site: Path, tmp_path: Path, downloads):
    spec = site_spec(site)
    dest = tmp_path / "data"

    folder = fetch(spec, dest, progress=False)

    assert folder == dest / "lfw"
    images = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))
    assert images == [
        "lfw-deepfunneled/Alice_Example/Alice_Example_0001.jpg",
        "lfw-deepfunneled/Alice_Example/Alice_Example_0002.jpg",
        "lfw-deepfunneled/Bob_Sample/Bob_Sample_0001.jpg",
    ]
    assert np.asarray(Image.open(images and folder / images[0])).shape == (8, 8, 3)
    for name, data in LISTS.items():
        assert (folder / name).read_bytes() == data
    assert not (folder / "lfw-deepfunneled.tgz").exists()  # the archive is not kept
    assert hidden_leftovers(folder) == []  # no partial downloads, no staging folders

    marker = json.loads((folder / fetch_module.MARKER_NAME).read_text())
    assert marker["dataset"] == "test-lfw"
    assert set(marker["files"]) == {"lfw-deepfunneled.tgz", *LISTS}
    for file in spec.files:
        entry = marker["files"][file.filename]
        assert (entry["sha256"], entry["size"], entry["verified"]) == (file.sha256, file.size, True)
    assert marker["files"]["lfw-deepfunneled.tgz"]["unpacked"] == ["lfw-deepfunneled"]
    assert len(downloads) == 4
    assert dataset_status(spec, dest) == "complete"


def test_second_fetch_downloads_nothing_and_force_downloads_again(site: Path, tmp_path: Path, downloads):
    spec = site_spec(site)
    dest = tmp_path / "data"
    fetch(spec, dest, progress=False)
    watched = [dest / "lfw" / "pairsDevTrain.txt", dest / "lfw" / "lfw-deepfunneled"]
    mtimes = [p.stat().st_mtime_ns for p in watched]
    assert len(downloads) == 4

    fetch(spec, dest, progress=False)
    assert len(downloads) == 4
    assert [p.stat().st_mtime_ns for p in watched] == mtimes

    fetch(spec, dest, progress=False, force=True)
    assert len(downloads) == 8
    assert len(list((dest / "lfw" / "lfw-deepfunneled").rglob("*.jpg"))) == 3
    assert hidden_leftovers(dest / "lfw") == []


def test_an_edited_text_file_is_fetched_again(site: Path, tmp_path: Path, downloads):
    spec = site_spec(site)
    dest = tmp_path / "data"
    fetch(spec, dest, progress=False)
    (dest / "lfw" / "peopleDevTest.txt").write_bytes(b"tampered\n")

    fetch(spec, dest, progress=False)

    assert downloads[4:] == [(site / "peopleDevTest.txt").as_uri()]
    assert (dest / "lfw" / "peopleDevTest.txt").read_bytes() == LISTS["peopleDevTest.txt"]


def test_verified_files_already_on_disk_are_adopted_without_download(site: Path, tmp_path: Path, downloads):
    spec = site_spec(site)
    dest = tmp_path / "data"
    (dest / "lfw").mkdir(parents=True)
    for name, data in LISTS.items():
        (dest / "lfw" / name).write_bytes(data)

    fetch(spec, dest, progress=False)

    assert downloads == [(site / "lfw-deepfunneled.tgz").as_uri()]


def test_stale_partial_downloads_are_discarded(site: Path, tmp_path: Path):
    dest = tmp_path / "data"
    stale = dest / "lfw" / ".pairsDevTrain.txt.partial-killed"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a file")

    fetch(site_spec(site), dest, progress=False)

    assert not stale.exists()


# --------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_checksum_mismatch_names_url_and_both_digests_and_leaves_nothing(site: Path, tmp_path: Path, algorithm: str):
    wrong = {"sha256": "0" * 64, "md5": "0" * 32}[algorithm]
    # The md5 case mirrors the real LFW archive entry: no sha256 and no size, only the md5.
    overrides = {"sha256": wrong} if algorithm == "sha256" else {"sha256": None, "md5": wrong, "size": None}
    spec = site_spec(site, **overrides)
    dest = tmp_path / "data"
    archive = site / "lfw-deepfunneled.tgz"
    actual = hashlib.new(algorithm, archive.read_bytes()).hexdigest()

    with pytest.raises(ChecksumMismatchError) as caught:
        fetch(spec, dest, progress=False)

    message = str(caught.value)
    assert archive.as_uri() in message and wrong in message and actual in message and algorithm in message
    assert (caught.value.expected, caught.value.actual) == (wrong, actual)
    assert sorted(p.name for p in (dest / "lfw").iterdir()) == []  # no partial file, no output


def test_truncated_download_is_refused_by_its_size(site: Path, tmp_path: Path):
    spec = site_spec(site)  # size and sha256 of the complete archive
    archive = site / "lfw-deepfunneled.tgz"
    archive.write_bytes(archive.read_bytes()[:-100])

    with pytest.raises(IncompleteDownloadError, match="expected"):
        fetch(spec, tmp_path / "data", progress=False)

    assert list((tmp_path / "data" / "lfw").iterdir()) == []


def test_truncated_archive_without_a_published_digest_is_refused_when_unpacking(site: Path, tmp_path: Path):
    archive = site / "lfw-deepfunneled.tgz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    spec = site_spec(site, sha256=None, size=None)
    dest = tmp_path / "data"

    with pytest.raises(ArchiveError, match="truncated or damaged"):
        fetch(spec, dest, progress=False, trust_unverified=True)

    assert not (dest / "lfw" / "lfw-deepfunneled").exists()
    assert hidden_leftovers(dest / "lfw") == []


def test_unverified_file_needs_trust_and_its_sha256_is_printed(site: Path, tmp_path: Path, capsys):
    spec = site_spec(site, sha256=None, size=None)
    dest = tmp_path / "data"
    digest = sha256_of(site / "lfw-deepfunneled.tgz")

    with pytest.raises(UnverifiedDownloadError, match="--trust-unverified") as caught:
        fetch(spec, dest, progress=False)
    assert caught.value.sha256 == digest
    assert digest in capsys.readouterr().err
    assert list((dest / "lfw").iterdir()) == []

    fetch(spec, dest, progress=False, trust_unverified=True)
    marker = json.loads((dest / "lfw" / fetch_module.MARKER_NAME).read_text())
    assert marker["files"]["lfw-deepfunneled.tgz"]["verified"] is False
    assert marker["files"]["lfw-deepfunneled.tgz"]["sha256"] == digest
    assert (dest / "lfw" / "lfw-deepfunneled" / "Bob_Sample" / "Bob_Sample_0001.jpg").is_file()


@pytest.mark.parametrize(
    ("members", "links"),
    [
        ({"pkg/ok.txt": b"ok", "../evil.txt": b"evil"}, None),
        ({"pkg/ok.txt": b"ok", "pkg/../../evil.txt": b"evil"}, None),
        ({"/tmp/evil.txt": b"evil"}, None),
        ({"pkg/ok.txt": b"ok"}, {"pkg/link": "../../evil.txt"}),
        ({"pkg/ok.txt": b"ok"}, {"pkg/link": "/etc/passwd"}),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "link-outside", "link-absolute"],
)
def test_archive_members_leaving_the_destination_are_refused(tmp_path: Path, members, links):
    site = tmp_path / "site"
    site.mkdir()
    archive = make_tgz(site / "evil.tgz", members, links)
    spec = DatasetSpec(
        name="evil",
        description="",
        terms="",
        homepage="",
        root="evil",
        files=(file_spec(archive, unpack="tgz", creates=("pkg",)),),
    )
    dest = tmp_path / "data"

    with pytest.raises(UnsafeArchiveError, match="refusing"):
        fetch(spec, dest, progress=False)

    assert not (tmp_path / "evil.txt").exists() and not (dest / "evil.txt").exists()
    assert sorted(p.name for p in (dest / "evil").iterdir()) == []  # nothing unpacked, archive gone


def test_safe_extract_keeps_links_that_stay_inside(tmp_path: Path):
    archive = make_tgz(tmp_path / "ok.tgz", {"pkg/a.txt": b"a"}, {"pkg/b.txt": "a.txt"})
    safe_extract(archive, "tgz", tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "b.txt").read_bytes() == b"a"


def test_existing_unrecorded_output_is_not_overwritten_without_force(site: Path, tmp_path: Path, downloads):
    dest = tmp_path / "data"
    mine = dest / "lfw" / "lfw-deepfunneled" / "my_notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("keep me")

    with pytest.raises(DestinationExistsError, match="--force"):
        fetch(site_spec(site), dest, progress=False)
    assert downloads == [] and mine.read_text() == "keep me"

    fetch(site_spec(site), dest, progress=False, force=True)
    assert not mine.exists()
    assert (dest / "lfw" / "lfw-deepfunneled" / "Alice_Example" / "Alice_Example_0002.jpg").is_file()


def test_network_error_names_the_url_and_suggests_base_url(tmp_path: Path):
    missing = (tmp_path / "nowhere" / "pairs.txt").as_uri()
    spec = DatasetSpec(
        name="gone",
        description="",
        terms="",
        homepage="",
        root="gone",
        files=(DatasetFile(url=missing, filename="pairs.txt", size=3, sha256="0" * 64),),
        download_note="The host is known to be down.",
    )
    with pytest.raises(DownloadError) as caught:
        fetch(spec, tmp_path / "data", progress=False)
    message = str(caught.value)
    assert missing in message and "--base-url" in message and "by hand" in message
    assert "known to be down" in message
    assert list((tmp_path / "data" / "gone").iterdir()) == []


# --------------------------------------------------------------------------------------------
# base_url


def test_rewrite_url_replaces_the_prefix():
    url = "http://vis-www.cs.umass.edu/lfw/pairs.txt"
    assert rewrite_url(url, "https://mirror.example/lfw/") == "https://mirror.example/lfw/pairs.txt"
    assert rewrite_url(url, "file:///srv/lfw") == "file:///srv/lfw/pairs.txt"
    assert rewrite_url(url, "/srv/lfw") == "file:///srv/lfw/pairs.txt"


@pytest.mark.parametrize("as_path", [False, True], ids=["file-url", "plain-path"])
def test_base_url_points_every_file_at_a_local_mirror(site: Path, tmp_path: Path, downloads, as_path: bool):
    spec = site_spec(site, url_root="https://unreachable.invalid/lfw")
    base_url = str(site) if as_path else site.as_uri()

    folder = fetch(spec, tmp_path / "data", base_url=base_url, progress=False)

    assert sorted(downloads) == sorted((site / f.filename).as_uri() for f in spec.files)
    assert (folder / "lfw-deepfunneled" / "Alice_Example" / "Alice_Example_0001.jpg").is_file()
    marker = json.loads((folder / fetch_module.MARKER_NAME).read_text())
    assert marker["files"]["pairsDevTrain.txt"]["url"] == (site / "pairsDevTrain.txt").as_uri()


# --------------------------------------------------------------------------------------------
# data_root


def test_data_root_respects_swaplab_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("SWAPLAB_DATA", str(tmp_path / "mine"))
    assert data_root() == tmp_path / "mine"
    assert locate_data_root()[1] == "$SWAPLAB_DATA"


def test_data_root_falls_back_to_shared_data_then_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("SWAPLAB_DATA", raising=False)
    workspace = tmp_path / "ws"
    (workspace / "repo").mkdir(parents=True)
    (workspace / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(workspace / "repo")
    assert data_root() == (workspace / "shared" / "data").resolve()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fetch_module, "_checkout_dir", lambda: workspace / "elsewhere" / "repo")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache" / "swaplab" / "data"


# --------------------------------------------------------------------------------------------
# The real catalog


def test_catalog_entries_are_well_formed():
    specs = list_datasets()
    assert {"lfw", "hdtf-sadtalker", "skimage-astronaut"} <= {s.name for s in specs}
    lfw = DATASETS.get("lfw")
    names = {f.filename for f in lfw.files}
    assert {"lfw-deepfunneled.tgz", "peopleDevTrain.txt", "peopleDevTest.txt", "pairs.txt"} <= names
    assert {"pairsDevTrain.txt", "pairsDevTest.txt"} <= names
    for spec in specs:
        assert len({f.filename for f in spec.files}) == len(spec.files)
        assert spec.terms and spec.description
        for file in spec.files:
            assert file.verified, f"{spec.name}/{file.filename} has no digest"
            assert file.url.rsplit("/", 1)[-1] == file.filename
    archive = next(f for f in lfw.files if f.unpack == "tgz")
    assert archive.md5 == "68331da3eb755a505a502b5aacb3c201" and archive.creates == ("lfw-deepfunneled",)
    with pytest.raises(ValueError, match="lowercase hex"):
        DatasetFile(url="x", filename="x", size=1, sha256="abc")


def test_catalog_digests_match_the_shared_copies(shared_data: Path):
    """Every plain file of the catalog that the workplace holds verifies against its entry."""
    checked = 0
    for spec in list_datasets():
        for file in spec.files:
            local = shared_data / spec.root / file.into / file.filename
            if file.unpack == "none" and local.is_file():
                verify_file(local, file)
                checked += 1
    assert checked >= 9  # seven LFW lists, two clips (and the astronaut)


def test_real_lfw_lists_fetch_from_a_local_mirror(shared_data: Path, tmp_path: Path, downloads):
    lists_only = dataclasses.replace(
        DATASETS.get("lfw"), files=tuple(f for f in DATASETS.get("lfw").files if f.unpack == "none")
    )
    folder = fetch(lists_only, tmp_path / "data", base_url=str(shared_data / "lfw"), progress=False)
    assert len(downloads) == len(lists_only.files) == 7
    assert (folder / "peopleDevTrain.txt").read_bytes() == (shared_data / "lfw" / "peopleDevTrain.txt").read_bytes()


def test_safe_extract_zip_extracts_refuses_traversal_and_truncation(tmp_path: Path):
    import zipfile

    good, evil = tmp_path / "good.zip", tmp_path / "evil.zip"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/a.txt", b"a" * 1000)
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../evil.txt", b"evil")

    safe_extract(good, "zip", tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "a.txt").read_bytes() == b"a" * 1000

    with pytest.raises(UnsafeArchiveError, match="refusing"):
        safe_extract(evil, "zip", tmp_path / "out2")
    assert not (tmp_path / "evil.txt").exists()

    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(ArchiveError, match="truncated or damaged"):
        safe_extract(truncated, "zip", tmp_path / "out3")


def _idx(array: np.ndarray) -> bytes:
    """An idx file of unsigned bytes (MNIST's format): 0, 0, 8, ndim, big-endian dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_mnist_is_fetched_only_with_its_published_digests(tmp_path: Path):
    import gzip

    from swaplab.train.image_data import read_idx

    mnist = DATASETS.get("mnist")
    assert [f.filename for f in mnist.files][:2] == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert mnist.files[0].md5 == "f68b3c2dcbeaaa9fbdd348bbdeb94873" and mnist.files[0].mirrors
    # A mirror holding other bytes under MNIST's names is refused, file by file, and nothing is kept.
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    images = np.random.default_rng(0).integers(0, 255, (5, 28, 28))
    for file in mnist.files:
        payload = _idx(images) if "images" in file.filename else _idx(np.arange(5))
        (mirror / file.filename).write_bytes(gzip.compress(payload))
    with pytest.raises((ChecksumMismatchError, IncompleteDownloadError), match="train-images-idx3-ubyte.gz"):
        fetch("mnist", tmp_path / "data", base_url=mirror.as_uri(), progress=False)
    assert not list((tmp_path / "data" / "mnist").glob("*.gz"))
    # The idx reader the zoo uses reads the format, gzipped, and names a damaged file.
    np.testing.assert_array_equal(read_idx(mirror / "train-images-idx3-ubyte.gz"), images)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big")))
    with pytest.raises(ValueError, match="bad.gz"):
        read_idx(tmp_path / "bad.gz")
