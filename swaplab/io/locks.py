"""One writer at a time: an advisory lock file beside a run folder, a faceset or an output.

``exclusive(path, what)`` holds ``path`` (a ``.lock`` file, created if missing) for the duration of
a ``with`` block and refuses at once, with ``BusyError``, when another process holds it: two
trainings of one run, two extractions into one faceset, or two swaps onto one output would
otherwise interleave their writes. The lock dies with its process, so a killed run never leaves
it behind. A lock beside a single output file (``remove=True``) is deleted when the block ends, so
swaps leave no lock files next to the photos they write; a process that opened the file before the
delete sees that its lock no longer names the path and refuses as busy (the holder was writing).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class BusyError(RuntimeError):
    """Another process is writing the same run, faceset or output."""


@contextlib.contextmanager
def exclusive(path: str | Path, what: str, remove: bool = False) -> Iterator[None]:
    """Hold the lock file ``path`` while the block runs; ``BusyError`` names ``what`` if it is taken.

    ``remove`` deletes the lock file when the block ends, however it ends (while still holding it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the block's duration
    held = False
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise BusyError(f"{what} is in use by {holder}: wait for it to finish, or stop it first") from None
        if remove and not _still_named(handle, path):
            # The previous holder deleted this file after we opened it: our lock is on a dead inode.
            raise BusyError(f"{what} was in use by another process a moment ago: run again")
        held = True
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        yield
    finally:
        if remove and held:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        handle.close()


def _still_named(handle, path: Path) -> bool:
    """Whether ``path`` still names the file ``handle`` has open."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)
