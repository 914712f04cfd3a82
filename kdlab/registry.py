"""One small registry type, used for models, methods and views: name → entry, with helpful lookup errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from kdlab.errors import KdlabError, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of entries; `get` fails with the closest valid names."""

    def __init__(self, kind: str, error: type[KdlabError] = KdlabError):
        self.kind = kind
        self.error = error
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise self.error(
                f"unknown {self.kind} {name!r}{suggest(name, self._entries)}; `kdlab {self.kind}s` lists them"
            ) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
