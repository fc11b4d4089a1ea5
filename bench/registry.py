"""One generic registry for methods and tasks: a decorator, discovery and "did you mean" errors."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

from bench import BenchError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, discover: Callable[[], None] | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._discover = discover

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise BenchError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj
        return decorator

    def _load(self) -> None:
        if self._discover is not None:
            discover, self._discover = self._discover, None
            discover()

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def get(self, name: str) -> T:
        self._load()
        if name not in self._items:
            raise BenchError(self.unknown_message(name))
        return self._items[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown {self.kind} {name!r}: {hint}known: {', '.join(self.names())} (see `bench ls`)"

    def expand(self, names: str | list[str]) -> list[str]:
        """A comma list (or list) of names, where `all` means every registered name; each is checked."""
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        if not names:
            raise BenchError(f"no {self.kind} given; known: {', '.join(self.names())}")
        out: list[str] = []
        for n in names:
            for item in (self.names() if n == "all" else [n]):
                self.get(item)
                if item not in out:
                    out.append(item)
        return out
