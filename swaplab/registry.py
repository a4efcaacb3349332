"""One registry pattern for everything that has variants.

Models, parts, losses, detectors, mask builders, colour transfers, blenders, metrics, samplers,
identity networks and training recipes each own one ``Registry``; adding a variant is one new
class or function plus one ``@REGISTRY.register("name")``. Lookups fail with the list of valid
names, never silently.

A registry whose variants live in several modules names those modules where it is defined
(``providers``): the first lookup imports them all, so a name is found whatever the caller
happened to import before, and the list of modules that can add names is written in one place.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of constructors (classes or factory functions) of one kind."""

    def __init__(self, kind: str, providers: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._providers = list(providers)
        self._loading = False

    def add_providers(self, *modules: str) -> None:
        """More modules whose import registers entries (loaded on the next lookup)."""
        self._providers.extend(m for m in modules if m not in self._providers)

    def _load(self) -> None:
        # A provider imports its own registry module (to register), which may look names up at
        # import time: the guard keeps that nested lookup from importing the providers again.
        if not self._providers or self._loading:
            return
        self._loading = True
        try:
            while self._providers:
                importlib.import_module(self._providers.pop(0))
        finally:
            self._loading = False

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
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(self.unknown(name)) from None

    def unknown(self, name: str) -> str:
        """The one-line message for a name that is not registered: close matches and every name."""
        self._load()
        close = difflib.get_close_matches(str(name), self._entries, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._entries))}"

    def create(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Look ``name`` up and call it: ``DETECTORS.create("dlib-hog", upsample=1)``."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
