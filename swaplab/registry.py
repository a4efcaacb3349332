"""One registry pattern for everything that has variants.

Models, parts, losses, detectors, mask builders, colour transfers, blenders, metrics and samplers
each own one ``Registry``; adding a variant is one new class or function plus one
``@REGISTRY.register("name")``. Lookups fail with the list of valid names, never silently.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of constructors (classes or factory functions) of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator that files ``obj`` under ``name`` (and its aliases); names are unique."""

        def add(obj: T) -> T:
            for key in (name, *aliases):
                if key in self._entries and self._entries[key] is not obj:
                    raise ValueError(f"{self.kind} {key!r} is already registered")
                self._entries[key] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._entries))}") from None

    def create(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Look ``name`` up and call it: ``DETECTORS.create("dlib-hog", upsample=1)``."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
