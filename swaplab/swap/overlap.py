"""Pipeline stages of a video swap on worker threads, overlapped with the model.

A video swap has three kinds of work per frame: reading and finding faces (decode, detect, track,
align), the model and the paste-back, and marking and encoding. Run one after another, the model's
share is small (a 64 px model takes 2.8 ms of a 22 ms frame here), so the frame rate is set by the
work around it. Decoding (PyAV), OpenCV, NumPy and PyTorch release the GIL in their heavy parts,
so two threads beside the main one overlap most of it:

* ``Prefetch`` runs a producer (frames with their faces) on a thread, ``depth`` items ahead;
* ``Drain`` runs a consumer (mark and encode) on a thread, fed ``depth`` items behind.

Both keep order (one thread each, FIFO queues), are bounded (memory stays flat on long videos),
and lose nothing on error: an exception in a worker is raised in the main thread at its next
exchange with it, and an exception in the main thread stops the workers (``close``/``abort``)
before it propagates, so no thread outlives the swap.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_S = 0.1  # how often a blocked put/get looks whether the other side has stopped


class _End:
    """Marks the end of a queue's items."""


class _Failed:
    """Carries a worker's exception to the main thread."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetch(Generic[T]):
    """Iterate ``source`` on a worker thread, ``depth`` items ahead of the consumer.

    Use as a context manager (or call ``close``): leaving early stops the worker and closes the
    source (a generator's ``finally`` blocks run on the worker, where it was iterated).
    """

    def __init__(self, source: Iterable[T], depth: int = 2, name: str = "prefetch") -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._source = source
        self._thread = threading.Thread(target=self._run, name=f"swaplab-{name}", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        iterator = iter(self._source)
        try:
            for item in iterator:
                if not self._put(item):
                    break
            else:
                self._put(_End())
        except BaseException as err:  # noqa: BLE001 - handed to the main thread, which raises it
            self._put(_Failed(err))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    return  # stopped by close()
                continue
            if isinstance(item, _End):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]

    def close(self) -> None:
        """Stop the worker (it may be blocked on a full queue) and wait for it."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Drain(Generic[T]):
    """Hand items to ``consume`` on a worker thread, in order, at most ``depth`` waiting.

    ``put`` raises the worker's exception as soon as the worker has failed; ``finish`` waits for
    every item to be consumed (and raises a failure); ``abort`` drops what is waiting and stops.
    """

    def __init__(self, consume: Callable[[T], None], depth: int = 8, name: str = "drain") -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
        self._consume = consume
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"swaplab-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, _End):
                return
            try:
                self._consume(item)  # type: ignore[arg-type]
            except BaseException as err:  # noqa: BLE001 - raised in the main thread by put/finish
                self._error = err
                return

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: T) -> None:
        while True:
            self._raise_failure()
            if not self._thread.is_alive():
                raise RuntimeError("the writer thread stopped unexpectedly")
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait until every item put so far is consumed; raise the worker's failure, if any."""
        while self._thread.is_alive():
            try:
                self._queue.put(_End(), timeout=_POLL_S)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._raise_failure()

    def abort(self) -> None:
        """Stop at once, dropping waiting items (the caller is unwinding an error)."""
        self._stop.set()
        self._thread.join()
