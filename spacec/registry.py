"""Name -> builder registries with metadata.

Pure Python on purpose: the compiler's torch-free catalogue of primitives is tested against
the metadata stored here, so importing this module must not pull in torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


class UnknownName(KeyError):
    """A name that is not registered; the message lists every registered name."""

    def __init__(self, kind: str, name: str, known: tuple[str, ...]) -> None:
        super().__init__(name)
        self.kind = kind
        self.name = name
        self.known = known

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return f"unknown {self.kind} {self.name!r}; known: {', '.join(self.known)}"


@dataclass(frozen=True)
class Entry:
    """One registered builder and its metadata (read-only)."""

    name: str
    builder: Callable[..., Any]
    meta: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


class Registry:
    """Registered builders of one kind ("operation", "block", ...), looked up by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator storing `builder` under `name`; the builder is returned unchanged."""
        if not name.isidentifier():
            raise ValueError(f"{self.kind} name {name!r} is not an identifier")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")

        def store(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = Entry(name, builder, MappingProxyType(dict(meta)))
            return builder

        return store

    def unregister(self, name: str) -> Entry:
        """Remove `name` (a plug-in's, or a test's, registration) and return its entry."""
        return self._entries.pop(name) if name in self._entries else self.get(name)

    def get(self, name: str) -> Entry:
        """The entry for `name`; raises UnknownName listing the registered names."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(self.kind, name, self.names()) from None

    def __getitem__(self, name: str) -> Entry:
        return self.get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={list(self.names())})"


def keyword_args(builder: Callable[..., Any], exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Names of `builder`'s keyword-only parameters, in order, minus `exclude`.

    Builders take their space-file arguments keyword-only, so this is the `args` metadata.
    """
    return tuple(
        name
        for name, param in inspect.signature(builder).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY and name not in exclude
    )
