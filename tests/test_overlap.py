"""The swap's worker-thread stages: order kept, bounded, failures raised where the caller is."""

from __future__ import annotations

import threading

import pytest

from swaplab.swap.overlap import Drain, Prefetch


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("swaplab-")]


def test_prefetch_keeps_order_and_ends() -> None:
    with Prefetch(iter(range(100)), depth=3) as items:
        assert list(items) == list(range(100))
    assert not _workers()


def test_prefetch_raises_the_producers_error_after_its_items() -> None:
    def produce():
        yield from range(5)
        raise ValueError("bad frame")

    seen = []
    with Prefetch(produce(), depth=2) as items, pytest.raises(ValueError, match="bad frame"):
        for item in items:
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]
    assert not _workers()


def test_prefetch_closed_early_stops_and_closes_its_source() -> None:
    closed = threading.Event()

    def produce():
        try:
            yield from range(10_000)
        finally:
            closed.set()

    prefetch = Prefetch(produce(), depth=2)
    first = next(iter(prefetch))
    prefetch.close()
    assert first == 0 and closed.is_set() and not _workers()


def test_drain_consumes_in_order_and_raises_its_failure_at_put() -> None:
    got: list[int] = []
    drain = Drain(got.append, depth=2)
    for i in range(50):
        drain.put(i)
    drain.finish()
    assert got == list(range(50)) and not _workers()

    def fails(item: int) -> None:
        if item == 3:
            raise OSError(28, "No space left on device")

    drain = Drain(fails, depth=1)
    with pytest.raises(OSError, match="No space"):
        for i in range(1000):
            drain.put(i)
    drain.abort()
    assert not _workers()
