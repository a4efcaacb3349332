"""Atomic file writes (a temporary file in the same folder, fsync, then rename) and file digests.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never a
torn write, whether the process is killed or the disk fills up mid-write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class DiskFullError(OSError):
    """Raised instead of a bare ENOSPC so callers can stop cleanly with a clear message."""


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    ``suffix`` keeps the extension for writers that choose a format by it (OpenCV, PyAV).
    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The extension stays last so that writers which pick a format by it still work.
    # The writer's process id is in the name, so a later start can tell a dead writer's leftover
    # from a file another live process is still writing (``remove_stale_temporaries``).
    fd, tmp_name = tempfile.mkstemp(
        prefix=temporary_prefix(path, "partial"), suffix=path.suffix if suffix is None else suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno == 28:  # ENOSPC
            raise DiskFullError(28, f"disk full while writing {path}; the previous file is intact") from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """``open()`` that writes to a temporary file and renames it into place on success."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
        handle.flush()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False) + "\n")


def temporary_prefix(path: str | Path, kind: str) -> str:
    """The name start of a temporary file written for ``path``: hidden, with its kind and our process id."""
    return f".{Path(path).stem}.{kind}-{os.getpid()}-"


# ``.<stem>.<kind>-<pid>-<random><suffix>``: what ``temporary_prefix`` + mkstemp produce.
_TEMPORARY = re.compile(r"^\..*\.(partial|video|export)-(\d+)-[A-Za-z0-9_]+(\.[A-Za-z0-9]+)?$")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files (and staging folders) that killed writers left in ``folder`` (not recursive).

    Only entries named by ``temporary_prefix`` whose process is gone are removed: a live process's
    file in progress is left alone. Returns what was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for child in folder.iterdir():
        match = _TEMPORARY.match(child.name)
        if match is None or _process_alive(int(match.group(2))):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                child.unlink()
        removed.append(child)
    return removed


def ensure_free_space(folder: str | Path, need_bytes: int, what: str) -> None:
    """Raise ``DiskFullError`` before writing ``what`` when ``folder``'s disk has less than ``need_bytes`` free.

    The check runs before the work so that a long job stops at once with the size it needs,
    instead of failing half-way; the write itself still handles a disk that fills meanwhile.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need_bytes:
        raise DiskFullError(
            28,
            f"not enough free space for {what} in {folder}: needs about {_size(need_bytes)}, "
            f"{_size(free)} available; free space (or write elsewhere) and run again",
        )


def _size(n: int) -> str:
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{max(n, 0) / 1024:.0f} KiB"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
