"""Sweep specifications: which scenario values vary, and how they combine into points.

A sweep is a sequence of axes and its points are their cartesian product (the first axis varies
slowest, like nested loops written in order). An axis is one dotted scenario path with a list of
values, or a *zip group*: several paths whose lists have one length and vary together (point i
takes the i-th value of each). In a scenario file::

    [sweep]
    "cache.capacity" = [96, 192, 288]        # a quoted dotted key ...
    cache.eviction = ["lru", "lfu"]          # ... or TOML's nested form: the same thing
    [sweep.zip]                              # one zip group; [[sweep.zip]] for several
    hardware = ["rtx4090-pcie4", "h100-pcie5"]
    "workload.batch_size" = [1, 8]

On the command line ``--grid cache.capacity=96,192`` adds (or replaces) an axis and ``--zip``
options form one more zip group; values are parsed like ``--set`` values (TOML, else a bare
string), split at top-level commas, so ``--grid 'model={preset="a"},{preset="b"}'`` works.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moesim.errors import ConfigError
from moesim.scenario import parse_value


@dataclass(frozen=True)
class Axis:
    """One dimension of a sweep: ``paths`` (one, or several for a zip group) and ``values``, a
    tuple with one tuple per setting holding one value per path."""

    paths: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]

    def __len__(self) -> int:
        return len(self.values)

    @property
    def is_zip(self) -> bool:
        return len(self.paths) > 1


@dataclass(frozen=True)
class SweepSpec:
    """The axes of a sweep, in expansion order (first axis slowest)."""

    axes: tuple[Axis, ...] = ()

    @property
    def paths(self) -> tuple[str, ...]:
        """Every swept dotted path, in axis order."""
        return tuple(path for axis in self.axes for path in axis.paths)

    @property
    def num_points(self) -> int:
        count = 1
        for axis in self.axes:
            count *= len(axis)
        return count

    @classmethod
    def grid(
        cls, grid: Mapping[str, Sequence[Any]] | None = None, zips: Iterable[Mapping[str, Sequence[Any]]] = ()
    ) -> SweepSpec:
        """A spec from ``{path: values}`` (one axis each) and zip groups ``[{path: values}, ...]``."""
        axes = [_axis({path: values}, f"sweep.{path}") for path, values in (grid or {}).items()]
        axes.extend(_axis(group, "sweep.zip") for group in zips)
        return cls(axes=tuple(axes))._checked("sweep")

    def with_axes(
        self, grid: Sequence[tuple[str, list[Any]]] = (), zip_group: Sequence[tuple[str, list[Any]]] = ()
    ) -> SweepSpec:
        """This spec with command-line axes: each ``grid`` entry replaces the axis of the same
        path or is appended; ``zip_group`` (if any) is appended as one more zip group."""
        axes = list(self.axes)
        for path, values in grid:
            axis = _axis({path: values}, f"--grid {path}")
            owner = next((i for i, a in enumerate(axes) if path in a.paths), None)
            if owner is None:
                axes.append(axis)
            elif axes[owner].is_zip:
                raise ConfigError(
                    f"--grid {path}: the scenario sweeps {path} in a zip group with "
                    f"{', '.join(p for p in axes[owner].paths if p != path)}; edit that group in the scenario instead"
                )
            else:
                axes[owner] = axis
        if zip_group:
            axes.append(_axis(dict(zip_group), "--zip"))
        return SweepSpec(axes=tuple(axes))._checked("command line")

    def _checked(self, where: str) -> SweepSpec:
        seen: set[str] = set()
        for axis in self.axes:
            for path in axis.paths:
                if path in seen:
                    raise ConfigError(f"{where}: {path} is swept twice; give each path in one axis only")
                seen.add(path)
        return self

    def combinations(self) -> Iterator[dict[str, Any]]:
        """``{path: value}`` for every point, in expansion order."""

        def walk(depth: int, chosen: dict[str, Any]) -> Iterator[dict[str, Any]]:
            if depth == len(self.axes):
                yield dict(chosen)
                return
            axis = self.axes[depth]
            for setting in axis.values:
                yield from walk(depth + 1, {**chosen, **dict(zip(axis.paths, setting))})

        yield from walk(0, {})

    def to_dict(self) -> list[dict[str, Any]]:
        """Plain data for the results manifest: ``[{"paths": [...], "values": [[...], ...]}, ...]``."""
        return [{"paths": list(a.paths), "values": [list(v) for v in a.values]} for a in self.axes]


# ---------------------------------------------------------------------- parsing
def spec_from_table(table: object) -> SweepSpec:
    """The spec of a scenario's ``[sweep]`` table (nested tables flatten to dotted paths)."""
    if table is None:
        return SweepSpec()
    if not isinstance(table, Mapping):
        raise ConfigError(f"sweep: expected a table of dotted path = [values], got {table!r}")
    table = dict(table)
    zips = table.pop("zip", None)
    axes = [_axis({path: values}, f"sweep.{path}") for path, values in _flatten(table, "")]
    if zips is not None:
        groups = [zips] if isinstance(zips, Mapping) else zips
        if not isinstance(groups, list) or not all(isinstance(g, Mapping) for g in groups):
            raise ConfigError("sweep.zip: expected a table ([sweep.zip]) or an array of tables ([[sweep.zip]])")
        for i, group in enumerate(groups):
            where = "sweep.zip" if isinstance(zips, Mapping) else f"sweep.zip[{i}]"
            axes.append(_axis(dict(_flatten(group, "", where=where)), where))
    return SweepSpec(axes=tuple(axes))._checked("sweep")


def _flatten(table: Mapping[str, Any], prefix: str, *, where: str = "sweep") -> Iterator[tuple[str, Any]]:
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{path}.", where=where)
        elif isinstance(value, list):
            yield path, value
        else:
            raise ConfigError(
                f"{where}.{path}: expected a list of values to sweep, got {value!r}; write [{toml_value(value)}] "
                f"or set it outside [sweep]"
            )


def _axis(group: Mapping[str, Any], where: str) -> Axis:
    if not group:
        raise ConfigError(f"{where}: empty; give at least one path = [values]")
    lengths = {}
    for path, values in group.items():
        _check_path(path, where)
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"{where}: {path} needs a non-empty list of values, got {values!r}")
        lengths[path] = len(values)
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{p} has {n}" for p, n in lengths.items())
        raise ConfigError(f"{where}: a zip group's lists vary together and need one length ({listing})")
    paths = tuple(group)
    settings = tuple(zip(*(tuple(group[p]) for p in paths)))
    seen: dict[str, int] = {}
    for i, setting in enumerate(settings):
        key = canonical_json(setting)
        if key in seen:
            shown = setting[0] if len(paths) == 1 else dict(zip(paths, setting))
            raise ConfigError(
                f"{where}: {toml_value(shown)} appears twice (positions {seen[key] + 1} and {i + 1}); list each setting once"
            )
        seen[key] = i
    return Axis(paths=paths, values=settings)


def _check_path(path: object, where: str) -> None:
    if not isinstance(path, str) or not path or any(not part.strip() for part in path.split(".")):
        raise ConfigError(f"{where}: {path!r} is not a dotted scenario path like cache.capacity")
    if path.split(".")[0] == "sweep":
        raise ConfigError(f"{where}: {path} cannot sweep the sweep table itself")


def parse_grid(text: str, option: str = "--grid") -> tuple[str, list[Any]]:
    """``"cache.capacity=8,16,32"`` -> ``("cache.capacity", [8, 16, 32])``.

    The values are a TOML array (``[8, 16]``) or comma-separated ``--set`` style values; commas
    inside brackets, braces or quotes do not split.
    """
    path, sep, rest = text.partition("=")
    path = path.strip()
    if not sep or not path or any(not part.strip() for part in path.split(".")):
        raise ConfigError(f"{option} {text!r}: expected PATH=V1,V2,... with a dotted path, like cache.capacity=8,16,32")
    rest = rest.strip()
    if rest.startswith("["):
        value = parse_value(rest)
        if isinstance(value, list):
            return path, value
    items = _split_top_level(rest)
    if not items or any(not item for item in items):
        raise ConfigError(f"{option} {text!r}: empty value; give comma-separated values like {path}=8,16,32")
    return path, [parse_value(item) for item in items]


def _split_top_level(text: str) -> list[str]:
    items, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    items.append(text[start:].strip())
    return items


# ---------------------------------------------------------------------- formatting
def canonical_json(value: Any) -> str:
    """One spelling of ``value`` as JSON (sorted keys, no spaces): the input of stable ids."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def toml_value(value: Any) -> str:
    """``value`` written as a TOML value (inline tables and arrays included), as ``--set`` reads it."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def format_values(values: Mapping[str, Any]) -> str:
    """``cache.capacity=96, cache.eviction="lru"``: a point's values as the user would write them."""
    return ", ".join(f"{path}={toml_value(value)}" for path, value in values.items())
