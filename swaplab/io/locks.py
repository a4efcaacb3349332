"""One writer at a time: an advisory lock file beside a run folder, a faceset or an output.

``exclusive(path, what)`` holds ``path`` (a ``.lock`` file, created if missing) for the duration of
a ``with`` block and refuses at once, with ``BusyError``, when another process holds it: two
trainings of one run, two extractions into one faceset, or two swaps onto one output would
otherwise interleave their writes. The lock dies with its process, so a killed run never leaves
it behind.
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
def exclusive(path: str | Path, what: str) -> Iterator[None]:
    """Hold the lock file ``path`` while the block runs; ``BusyError`` names ``what`` if it is taken."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the block's duration
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise BusyError(f"{what} is in use by {holder}: wait for it to finish, or stop it first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()
