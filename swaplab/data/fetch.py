"""Fetch the catalog's public data sets: download, verify, unpack atomically, remember.

A file is downloaded with urllib (http, https or file URLs) into a temporary file next to its
destination, checked against its size and published digest, and only then moved or unpacked into
place; a marker JSON per data set records what was verified so that a second fetch downloads
nothing. It never resumes a partial download, never keeps a file whose digest disagrees, and
never extracts an archive member outside the destination. Where swaplab looks for data
(``data_root``) is decided here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from swaplab.data.catalog import DATASETS, DatasetFile, DatasetSpec
from swaplab.io.atomic import atomic_write_json

MARKER_NAME = ".swaplab-fetch.json"
_PARTIAL_TAG = ".partial-"
_UNPACK_PREFIX = ".swaplab-unpack-"
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


class DataFetchError(RuntimeError):
    """Base class of every error ``fetch`` raises on purpose; its message is for the user."""


class DownloadError(DataFetchError):
    """No URL of a file could be read (network down, host gone, file missing on a mirror)."""


class IncompleteDownloadError(DataFetchError):
    """The download ended with a different number of bytes than the catalog states."""


class ChecksumMismatchError(DataFetchError):
    """The downloaded bytes do not have the published digest."""

    def __init__(self, url: str, algorithm: str, expected: str, actual: str) -> None:
        self.url, self.algorithm, self.expected, self.actual = url, algorithm, expected, actual
        super().__init__(
            f"{algorithm} mismatch for {url}: expected {expected}, got {actual}. The download was "
            "deleted. The file on the server (or mirror) differs from the published one; try another "
            "mirror with --base-url, or download it by hand and compare its digest."
        )


class UnverifiedDownloadError(DataFetchError):
    """The catalog has no published digest for the file and the caller did not trust it."""

    def __init__(self, url: str, sha256: str) -> None:
        self.url, self.sha256 = url, sha256
        super().__init__(
            f"no published checksum exists for {url}; the download has sha256 {sha256}. It was deleted. "
            "Compare that digest with one you trust, then fetch again with --trust-unverified "
            "(trust_unverified=True) to keep it."
        )


class DestinationExistsError(DataFetchError, FileExistsError):
    """An archive's output already exists and swaplab did not put it there."""


class ArchiveError(DataFetchError):
    """The archive cannot be read to the end (truncated or damaged) or lacks expected entries."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would land outside the destination (absolute path, '..', outside link)."""


@dataclass(frozen=True)
class Digests:
    size: int
    sha256: str
    md5: str


# --------------------------------------------------------------------------------------------
# Where the data lives


def _checkout_dir() -> Path:
    """The folder that holds the ``swaplab`` package (the repository root for a checkout)."""
    return Path(__file__).resolve().parents[2]


def locate_data_root() -> tuple[Path, str]:
    """The data root swaplab uses, and which rule chose it.

    In order: ``$SWAPLAB_DATA`` (used as given, even if it does not exist yet); ``../shared/data``
    relative to the current directory; ``../shared/data`` beside the swaplab checkout; and
    otherwise ``$XDG_CACHE_HOME/swaplab/data`` (``~/.cache/swaplab/data``), where ``swaplab data
    fetch`` puts downloads by default.
    """
    env = os.environ.get("SWAPLAB_DATA")
    if env:
        return Path(env).expanduser(), "$SWAPLAB_DATA"
    for base, why in (
        (Path.cwd(), "../shared/data from the current directory"),
        (_checkout_dir(), "../shared/data beside the swaplab checkout"),
    ):
        candidate = (base.parent / "shared" / "data").resolve()
        if candidate.is_dir():
            return candidate, why
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "swaplab" / "data", "the user cache (nothing else found)"


def data_root() -> Path:
    """The folder holding swaplab's data sets (see ``locate_data_root`` for the rules)."""
    return locate_data_root()[0]


# --------------------------------------------------------------------------------------------
# The catalog, as users see it


def list_datasets() -> list[DatasetSpec]:
    """Every data set in the catalog, sorted by name."""
    return [DATASETS.get(name) for name in DATASETS.names()]


def get_dataset(name: str | DatasetSpec) -> DatasetSpec:
    return name if isinstance(name, DatasetSpec) else DATASETS.get(name)


def dataset_status(spec: DatasetSpec, dest: str | Path) -> str:
    """``complete`` when every file is recorded as fetched and verified and is present;
    ``present`` when every output exists but swaplab did not fetch it (a copied folder such as the
    workplace's shared/data); ``missing`` when nothing is there; else ``partial``. Cheap: it
    reads the marker and checks existence, it hashes nothing."""
    folder = Path(dest) / spec.root
    recorded = _read_marker(folder).get("files", {})
    exists = [all(p.exists() for p in _outputs(folder, f)) for f in spec.files]
    done = sum(ok and _entry_matches(recorded.get(f.filename), f) for f, ok in zip(spec.files, exists))
    if done == len(spec.files):
        return "complete"
    if all(exists):
        return "present"
    return "missing" if not any(exists) else "partial"


def describe_datasets(dest: str | Path | None = None) -> str:
    """A table of the catalog (name, download size, status under ``dest``, description), then
    each set's terms of use: the text ``swaplab data list`` prints."""
    root = Path(dest) if dest is not None else data_root()
    rows, terms = [], []
    for spec in list_datasets():
        exact = all(f.size is not None for f in spec.files)
        size = f"{'' if exact else '~'}{spec.size_mb:,.1f} MB"
        rows.append(f"{spec.name:<20} {size:>11}  {dataset_status(spec, root):<8}  {spec.description}")
        terms.append(f"{spec.name}: {spec.terms}")
    header = f"data root: {root}\n{'name':<20} {'download':>11}  {'status':<8}  description"
    return "\n".join([header, *rows, "", "terms of use:", *terms])


# --------------------------------------------------------------------------------------------
# Fetching


def rewrite_url(url: str, base_url: str) -> str:
    """Replace everything up to the last ``/`` of ``url`` by ``base_url``.

    ``base_url`` is a URL (a mirror, ``file:///folder``) or a plain local folder path, which is
    turned into a ``file://`` URL; the mirror must hold the files under their remote names.
    """
    if "://" not in base_url:
        base_url = Path(base_url).expanduser().resolve().as_uri()
    return base_url.rstrip("/") + "/" + url.rsplit("/", 1)[-1]


def fetch(
    name: str | DatasetSpec,
    dest: str | Path,
    *,
    base_url: str | None = None,
    force: bool = False,
    progress: bool = True,
    trust_unverified: bool = False,
) -> Path:
    """Download, verify and unpack data set ``name`` into ``dest/<spec.root>``; return that folder.

    Files already recorded as verified in the marker (and still present) are skipped unless
    ``force``; a plain file already on disk with the published digest is adopted without a
    download. ``base_url`` redirects every file to a mirror or local folder (see
    ``rewrite_url``). Raises a ``DataFetchError`` subclass with a message meant for the user.
    """
    spec = get_dataset(name)
    folder = Path(dest) / spec.root
    folder.mkdir(parents=True, exist_ok=True)
    marker = _read_marker(folder)
    recorded: dict[str, Any] = marker.setdefault("files", {})
    marker["dataset"] = spec.name
    for file in spec.files:
        target_dir = folder / file.into
        target_dir.mkdir(parents=True, exist_ok=True)
        _discard_leftovers(target_dir, file.filename)
        if not force and _already_done(folder, file, recorded):
            _say(progress, f"{spec.name}: {file.filename} already present and verified")
            continue
        if not force and file.unpack == "none" and file.verified:
            adopted = _adopt_existing(target_dir / file.filename, file)
            if adopted is not None:
                recorded[file.filename] = _marker_entry(file, file.url, adopted, verified=True)
                atomic_write_json(folder / MARKER_NAME, marker)
                _say(progress, f"{spec.name}: {file.filename} found on disk with the published digest")
                continue
        if file.unpack != "none" and not force:
            _refuse_unrecorded_outputs(target_dir, file)
        urls = [rewrite_url(file.url, base_url)] if base_url else [file.url, *file.mirrors]
        tmp, used_url, digests = _download(urls, target_dir, file, spec, progress)
        try:
            verified = _verify(file, used_url, digests, trust_unverified)
            if file.unpack == "none":
                os.replace(tmp, target_dir / file.filename)
            else:
                _unpack_atomically(tmp, file, target_dir)
        finally:
            tmp.unlink(missing_ok=True)
        recorded[file.filename] = _marker_entry(file, used_url, digests, verified=verified)
        # Written after every file, so an interrupted fetch skips what it already finished.
        atomic_write_json(folder / MARKER_NAME, marker)
        _say(progress, f"{spec.name}: {file.filename} ok ({digests.size:,} bytes)")
    return folder


def verify_file(path: str | Path, file: DatasetFile, url: str | None = None) -> Digests:
    """Hash ``path`` and check it against ``file``'s size and digests; raise on any mismatch."""
    digests = _hash_file(Path(path))
    _check_digests(file, url or str(path), digests)
    return digests


# --------------------------------------------------------------------------------------------
# Internals: marker


def _read_marker(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("files", {}), dict) else {}


def _marker_entry(file: DatasetFile, url: str, digests: Digests, *, verified: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "url": url,
        "size": digests.size,
        "sha256": digests.sha256,
        "md5": digests.md5,
        "verified": verified,
    }
    if file.unpack != "none":
        entry["unpacked"] = list(file.creates)
    return entry


def _entry_matches(entry: Any, file: DatasetFile) -> bool:
    """Whether a marker entry records the bytes the catalog expects now (a catalog update with
    new digests therefore triggers a new download)."""
    if not isinstance(entry, dict):
        return False
    return all(
        want is None or entry.get(key) == want
        for key, want in (("sha256", file.sha256), ("md5", file.md5), ("size", file.size))
    )


def _outputs(folder: Path, file: DatasetFile) -> list[Path]:
    target_dir = folder / file.into
    names = file.creates if file.unpack != "none" else (file.filename,)
    return [target_dir / n for n in names]


def _already_done(folder: Path, file: DatasetFile, recorded: dict[str, Any]) -> bool:
    entry = recorded.get(file.filename)
    if not _entry_matches(entry, file) or not all(p.exists() for p in _outputs(folder, file)):
        return False
    if file.unpack != "none":
        return True
    # Plain files are small enough to re-hash: an edited or truncated copy is fetched again.
    return _hash_file(folder / file.into / file.filename).sha256 == entry["sha256"]


def _adopt_existing(path: Path, file: DatasetFile) -> Digests | None:
    if not path.is_file():
        return None
    try:
        return verify_file(path, file)
    except DataFetchError:
        return None


def _refuse_unrecorded_outputs(target_dir: Path, file: DatasetFile) -> None:
    present = [n for n in file.creates if (target_dir / n).exists()]
    if present:
        raise DestinationExistsError(
            f"{target_dir / present[0]} already exists but swaplab has no record of fetching it. "
            "Move it away, or pass force=True (--force) to replace it."
        )


def _discard_leftovers(target_dir: Path, filename: str) -> None:
    """Delete partial downloads and unpack folders that a killed run left behind: nothing is
    resumed, because a partial file cannot be verified."""
    for stale in target_dir.glob(f".{filename}{_PARTIAL_TAG}*"):
        stale.unlink(missing_ok=True)
    for stale in target_dir.glob(f"{_UNPACK_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Internals: download and verification


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr)


def _download(
    urls: list[str], target_dir: Path, file: DatasetFile, spec: DatasetSpec, progress: bool
) -> tuple[Path, str, Digests]:
    """Try each URL in turn; return the temporary file, the URL that worked and its digests."""
    failures: list[str] = []
    for url in urls:
        fd, name = tempfile.mkstemp(prefix=f".{file.filename}{_PARTIAL_TAG}", dir=target_dir)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                digests = _copy_url(url, out, file, progress)
                out.flush()
                os.fsync(out.fileno())
            return tmp, url, digests
        # Only network-side failures move on to the next URL; a local write error (disk full,
        # permissions) is a plain OSError and propagates as it is.
        except (urllib.error.URLError, HTTPException, TimeoutError, ConnectionError, ValueError) as err:
            tmp.unlink(missing_ok=True)
            failures.append(f"  {url}: {getattr(err, 'reason', None) or err}")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    by_hand = "\n".join(f"  {f.url}" for f in spec.files)
    note = f"\n{spec.download_note}" if spec.download_note else ""
    raise DownloadError(
        f"could not download {file.filename} of data set {spec.name!r}:\n"
        + "\n".join(failures)
        + f"\nIf you are offline or the host is down, download the data set's files by hand:\n{by_hand}\n"
        "into one folder and pass --base-url /that/folder (or file:///that/folder), or point "
        f"--base-url at a mirror that holds the same file names.{note}"
    )


def _copy_url(url: str, out: BinaryIO, file: DatasetFile, progress: bool) -> Digests:
    from tqdm import tqdm

    # Some hosts refuse urllib's default agent; a plain product name is enough for them.
    request = urllib.request.Request(url, headers={"User-Agent": "swaplab-data-fetch"})
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        total = file.size or int(response.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=file.filename,
            disable=not progress,
            leave=False,
            file=sys.stderr,
        ) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                sha256.update(chunk)
                md5.update(chunk)
                size += len(chunk)
                bar.update(len(chunk))
    return Digests(size=size, sha256=sha256.hexdigest(), md5=md5.hexdigest())


def _hash_file(path: Path) -> Digests:
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return Digests(size=size, sha256=sha256.hexdigest(), md5=md5.hexdigest())


def _check_digests(file: DatasetFile, url: str, digests: Digests) -> None:
    if file.size is not None and digests.size != file.size:
        raise IncompleteDownloadError(
            f"{url} gave {digests.size:,} bytes, expected {file.size:,} (a truncated or different file); "
            "it was deleted. Fetch again, or use another mirror with --base-url."
        )
    for algorithm, expected, actual in (
        ("sha256", file.sha256, digests.sha256),
        ("md5", file.md5, digests.md5),
    ):
        if expected is not None and actual != expected:
            raise ChecksumMismatchError(url, algorithm, expected, actual)


def _verify(file: DatasetFile, url: str, digests: Digests, trust_unverified: bool) -> bool:
    """Check the download; return whether it was verified against a published digest."""
    _check_digests(file, url, digests)
    if file.verified:
        return True
    print(f"warning: no published checksum for {url}; its sha256 is {digests.sha256}", file=sys.stderr)
    if not trust_unverified:
        raise UnverifiedDownloadError(url, digests.sha256)
    return False


# --------------------------------------------------------------------------------------------
# Internals: archives


def _unpack_atomically(archive: Path, file: DatasetFile, target_dir: Path) -> None:
    """Extract into a hidden folder beside the target, then rename each top-level entry into
    place, so readers never see a half-extracted tree (an entry being replaced is swapped out
    first and deleted after)."""
    staging = Path(tempfile.mkdtemp(prefix=_UNPACK_PREFIX, dir=target_dir))
    replaced: list[Path] = []
    try:
        safe_extract(archive, file.unpack, staging)
        entries = sorted(p.name for p in staging.iterdir())
        missing = [n for n in file.creates if n not in entries]
        if missing:
            held = ", ".join(entries) or "nothing"
            raise ArchiveError(f"{file.filename} does not contain {', '.join(missing)} (it holds {held})")
        for entry in entries:
            final = target_dir / entry
            if final.exists() or final.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=_UNPACK_PREFIX, dir=target_dir)) / entry
                os.replace(final, old)
                replaced.append(old.parent)
            os.replace(staging / entry, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for old in replaced:
            shutil.rmtree(old, ignore_errors=True)


def _check_member_name(archive: str, name: str) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise UnsafeArchiveError(f"{archive}: refusing member {name!r}, whose path leaves the destination")


def _check_link_target(archive: str, name: str, target: str, *, hard: bool) -> None:
    # A symlink's target is relative to its own folder, a hard link's to the archive root.
    joined = target if hard else posixpath.join(posixpath.dirname(name), target)
    resolved = posixpath.normpath(joined)
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(f"{archive}: refusing link {name!r} -> {target!r}, which points outside")


def _safe_tar_members(archive: str, members: Iterable[tarfile.TarInfo]) -> list[tarfile.TarInfo]:
    checked = []
    for member in members:
        _check_member_name(archive, member.name)
        if member.issym() or member.islnk():
            _check_link_target(archive, member.name, member.linkname, hard=member.islnk())
        elif not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(f"{archive}: refusing special file {member.name!r} (device or fifo)")
        checked.append(member)
    return checked


def safe_extract(archive: str | Path, kind: str, dest: str | Path) -> None:
    """Extract a ``tgz`` or ``zip`` archive into ``dest`` after checking every member.

    Raises ``UnsafeArchiveError`` for absolute paths, ``..`` components, links leaving ``dest``
    and special files, and ``ArchiveError`` for an archive that cannot be read to its end.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        if kind == "tgz":
            with tarfile.open(archive, "r:gz") as tar:
                # Reading every header first walks the whole stream, so a truncated archive fails
                # here, before anything is written.
                members = _safe_tar_members(archive.name, tar.getmembers())
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(dest, members=members, **extra)
        elif kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member_name(archive.name, info.filename)
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise UnsafeArchiveError(f"{archive.name}: refusing symlink member {info.filename!r}")
                broken = zf.testzip()
                if broken is not None:
                    raise ArchiveError(f"{archive.name}: member {broken!r} is damaged (CRC mismatch)")
                zf.extractall(dest)
        else:
            raise ValueError(f"unknown archive kind {kind!r} (expected 'tgz' or 'zip')")
    except UnsafeArchiveError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as err:
        if isinstance(err, getattr(tarfile, "FilterError", ())):
            raise UnsafeArchiveError(f"{archive.name}: {err}") from err
        raise ArchiveError(
            f"{archive.name} is truncated or damaged and was not unpacked ({type(err).__name__}: {err})"
        ) from err
    except OSError as err:
        # gzip reports a corrupt stream as a plain OSError (BadGzipFile); a full disk is not that.
        if err.errno is not None:
            raise
        raise ArchiveError(f"{archive.name} is truncated or damaged and was not unpacked ({err})") from err


__all__ = [
    "ArchiveError",
    "ChecksumMismatchError",
    "DataFetchError",
    "DestinationExistsError",
    "Digests",
    "DownloadError",
    "IncompleteDownloadError",
    "UnsafeArchiveError",
    "UnverifiedDownloadError",
    "data_root",
    "dataset_status",
    "describe_datasets",
    "fetch",
    "get_dataset",
    "list_datasets",
    "locate_data_root",
    "rewrite_url",
    "safe_extract",
    "verify_file",
]
