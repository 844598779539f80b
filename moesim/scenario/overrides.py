"""Dotted-path edits of raw (TOML) configuration, shared by ``--set`` and sweeps.

Overrides are applied to the raw mapping *before* validation, so every overridden value (and every
sweep point) is validated exactly like a value written in the file (DESIGN section 7).
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from moesim.errors import ConfigError


def parse_value(text: str) -> Any:
    """A ``--set`` value as TOML (``16``, ``0.8``, ``true``, ``"lru"``, ``[1, 2]``, ``{a = 1}``);
    anything that is not valid TOML is taken as a bare string (``lru``, ``24GiB``)."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"cache.capacity=64"`` -> ``("cache.capacity", 64)``."""
    path, sep, value = text.partition("=")
    path = path.strip()
    if not sep or not path or any(not part for part in path.split(".")):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, like cache.capacity=64")
    return path, parse_value(value.strip())


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``path = "a.b.c"``, creating tables as needed."""
    parts = path.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, str) and i == 0:
            # `model = "name"` written as a string: turn it into a preset table to override fields
            child = node[part] = {"preset": child}
        elif not isinstance(child, dict):
            raise ConfigError(
                f"{'.'.join(parts[: i + 1])}: is {child!r}, not a table, so {path} cannot be set"
            )
        node = child
    node[parts[-1]] = value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A deep copy of ``data`` with each ``(dotted_path, value)`` applied in order."""
    result = copy.deepcopy(dict(data))
    for path, value in overrides:
        set_path(result, path, copy.deepcopy(value))
    return result
