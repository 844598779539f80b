"""The importer registry: one decorator to add a format, one function to use any of them."""

from __future__ import annotations

import inspect
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moesim.errors import ConfigError, TraceError
from moesim.trace.trace import Trace

ImporterFunction = Callable[..., Trace]


@dataclass(frozen=True)
class Importer:
    """A registered trace format.

    Attributes
    ----------
    name : str
        The format name used by ``import_trace(path, name)`` and ``--from NAME``.
    function : callable
        ``function(path, **options) -> Trace``; options are its keyword-only parameters.
    suffixes : tuple of str
        File name endings that select this format when none is given (lower case, with the dot).
    directories : bool
        Whether a directory is accepted as input.
    """

    name: str
    function: ImporterFunction
    suffixes: tuple[str, ...]
    directories: bool

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options the importer accepts (``metadata`` is accepted by every importer)."""
        parameters = inspect.signature(self.function).parameters.values()
        names = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
        return tuple(names) + ("metadata",)

    @property
    def summary(self) -> str:
        """First line of the importer's docstring."""
        return (inspect.getdoc(self.function) or "").split("\n", 1)[0]


_IMPORTERS: dict[str, Importer] = {}


def register_importer(
    name: str, *, suffixes: tuple[str, ...] = (), directories: bool = False
) -> Callable[[ImporterFunction], ImporterFunction]:
    """Class the decorated function as the importer of format ``name``.

    The function takes the input path and keyword-only options and returns a validated
    :class:`~moesim.trace.Trace` whose metadata names its ``source`` (see :func:`source_metadata`).
    """

    def decorate(function: ImporterFunction) -> ImporterFunction:
        if name in _IMPORTERS:
            raise ValueError(f"trace format {name!r} is already registered")
        _IMPORTERS[name] = Importer(
            name=name,
            function=function,
            suffixes=tuple(s.lower() for s in suffixes),
            directories=directories,
        )
        return function

    return decorate


def importer_names() -> list[str]:
    """Names of all registered trace formats, sorted."""
    return sorted(_IMPORTERS)


def get_importer(name: str) -> Importer:
    """The importer registered as ``name``; :class:`ConfigError` listing the valid names otherwise."""
    importer = _IMPORTERS.get(name)
    if importer is None:
        raise ConfigError(
            f"unknown trace format {name!r}; valid formats: {', '.join(importer_names())}"
        )
    return importer


def infer_format(path: str | os.PathLike) -> str:
    """The format a file's name implies (``x.jsonl`` -> ``jsonl``); :class:`ConfigError` if none or several do."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"'{path}' is a directory: say which format it holds (--from NAME); formats that read "
            f"directories: {', '.join(n for n in importer_names() if _IMPORTERS[n].directories)}"
        )
    name = path.name.lower()
    matches = [i.name for i in _IMPORTERS.values() if any(name.endswith(s) for s in i.suffixes)]
    if len(matches) != 1:
        known = ", ".join(f"{i.name} ({' '.join(i.suffixes)})" for n, i in sorted(_IMPORTERS.items()) if i.suffixes)
        found = "several formats" if matches else "no format"
        raise ConfigError(
            f"'{path}': the file name matches {found}; give the format (--from NAME); known: {known}"
        )
    return matches[0]


def import_trace(path: str | os.PathLike, fmt: str | None = None, **options: Any) -> Trace:
    """Read a trace from a file (or directory) in a registered format.

    Parameters
    ----------
    path : path-like
        The input file, or a directory for formats that accept one.
    fmt : str, optional
        A name from :func:`importer_names`; inferred from the file name when omitted.
    **options
        Format options (e.g. ``num_experts``, ``model``). Every format also accepts
        ``metadata``, a mapping merged into the trace's metadata last (e.g. ``license``).

    Returns
    -------
    Trace
        A validated trace whose metadata names its ``source`` (format and file).

    Raises
    ------
    ConfigError
        Unknown format or option, or a bad option value.
    TraceError
        The input is missing or malformed; the message names the file and the record.
    """
    path = Path(path)
    importer = get_importer(fmt if fmt is not None else infer_format(path))
    unknown = sorted(set(options) - set(importer.options))
    if unknown:
        raise ConfigError(
            f"format '{importer.name}': unknown option(s) {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(importer.options)}"
        )
    if not path.exists():
        raise TraceError(f"file '{path}': no such file or directory")
    if path.is_dir() and not importer.directories:
        raise TraceError(f"file '{path}': is a directory; format '{importer.name}' reads one file")
    metadata = options.pop("metadata", None)
    trace = importer.function(path, **options)
    if metadata:
        if not isinstance(metadata, Mapping):
            raise ConfigError(f"format '{importer.name}': option 'metadata' must be a mapping, got {metadata!r}")
        trace = trace.with_metadata(**metadata)
    return trace


def source_metadata(fmt: str, path: Path) -> dict[str, str]:
    """The ``source`` metadata entry importers record: which format was read from which path."""
    return {"format": fmt, "file": str(path)}


def option_int(fmt: str, name: str, value: object, *, minimum: int) -> int:
    """An integer option value >= ``minimum``; :class:`ConfigError` naming the option otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"format '{fmt}': option '{name}' must be an integer >= {minimum}, got {value!r}")
    value = int(value)  # type: ignore[arg-type]
    if value < minimum:
        raise ConfigError(f"format '{fmt}': option '{name}' must be an integer >= {minimum}, got {value}")
    return value


def require_num_experts(fmt: str, path: Path, num_experts: object, largest_id: int) -> int:
    """``num_experts`` for formats that cannot know it: required, and at least the largest id + 1.

    Inferring it from the largest id seen would silently shrink E whenever the highest-numbered
    experts happen not to be routed (common in short traces), which changes every hit rate and the
    uniform baselines, so formats without the information insist on being told.
    """
    if num_experts is None:
        if largest_id >= 0:
            hint = f"the largest id in the file is {largest_id}, so at least {largest_id + 1}"
        else:
            hint = "the file routes to no expert"
        raise ConfigError(
            f"format '{fmt}': option 'num_experts' is required for '{path}' (routed experts per MoE "
            f"layer of the model; {hint}); pass num_experts=E or --num-experts E"
        )
    return option_int(fmt, "num_experts", num_experts, minimum=1)
