"""A small generic registry of named plug-ins, one instance per policy family.

Each family (eviction, prefetch, placement, miss handling, weight formats, ...) owns one
:class:`Registry` and fills it with a decorator at import time, so adding a policy touches one
module (DESIGN section 5; contrast libCacheSim's chain of string compares)::

    EVICTION = Registry("eviction policy")
    register_eviction = EVICTION.register

    @register_eviction("lru")
    class LRU(EvictionPolicy): ...

Looking up an unknown name raises :class:`~moesim.errors.ConfigError` naming the field, the value
found, every valid name and the closest match.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from moesim.errors import ConfigError

T = TypeVar("T")


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


class Registry(Generic[T]):
    """Names -> objects (usually classes or factories) of one family.

    Parameters
    ----------
    kind : str
        What an entry is, for messages, e.g. ``"eviction policy"``.

    Names are matched case-insensitively, with ``_`` and ``-`` treated alike; aliases resolve to
    the same entry but are not listed by :meth:`names`.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator registering its target under ``name`` (and ``aliases``); returns the target."""
        key = _normalise(name)
        if not key:
            raise ValueError(f"{self.kind} registry: empty name")

        def decorate(obj: T) -> T:
            for alias in (key, *map(_normalise, aliases)):
                if alias in self._entries or alias in self._aliases:
                    raise ValueError(f"{self.kind} registry: name {alias!r} is already registered")
            self._entries[key] = obj
            for alias in aliases:
                self._aliases[_normalise(alias)] = key
            return obj

        return decorate

    def get(self, name: object, *, field: str | None = None) -> T:
        """The entry called ``name``.

        Raises
        ------
        ConfigError
            If ``name`` is not a string or not registered; the message starts with ``field``
            (e.g. ``"cache.eviction"``) and lists the valid names.
        """
        where = field or self.kind
        if not isinstance(name, str):
            raise ConfigError(
                f"{where}: expected a name, one of {self._listing()}; got {name!r}"
            )
        key = _normalise(name)
        key = self._aliases.get(key, key)
        if key in self._entries:
            return self._entries[key]
        close = difflib.get_close_matches(key, [*self._entries, *self._aliases], n=1)
        hint = f" (did you mean {self._aliases.get(close[0], close[0])!r}?)" if close else ""
        raise ConfigError(f"{where}: unknown {self.kind} {name!r}; use one of {self._listing()}{hint}")

    def canonical(self, name: str, *, field: str | None = None) -> str:
        """The registered (canonical) name that ``name`` or an alias of it resolves to."""
        self.get(name, field=field)
        key = _normalise(name)
        return self._aliases.get(key, key)

    def names(self) -> tuple[str, ...]:
        """Registered names in registration order (aliases excluded)."""
        return tuple(self._entries)

    def items(self) -> tuple[tuple[str, T], ...]:
        return tuple(self._entries.items())

    def _listing(self) -> str:
        return ", ".join(self._entries) if self._entries else "(none registered)"

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _normalise(name)
        return key in self._entries or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<Registry of {self.kind}: {self._listing()}>"
