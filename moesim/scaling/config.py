"""Scaling-analysis scenario files: a normal scenario plus a ``[scaling]`` table.

::

    name = "scaling-granularity"
    model = "gpt-oss-20b"                 # the base architecture
    hardware = "rtx4090-pcie4"            # the machine
    [cache]  eviction = "lru"             # everything a scenario has, used for every point
    [scaling]
    analysis = "granularity"              # granularity | serving | architectures
    trace = "../traces/gpt-oss-20b-fingerprinting.parquet"
    ...                                   # the analysis's own grid (see its config class)

The base scenario is validated as any scenario is (with the real trace as its trace); ``--set``
overrides apply to the whole file before validation, so ``--set scaling.granularities=[1,2]``
and ``--set cache.eviction=lfu`` work alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from moesim import fields as F
from moesim.errors import ConfigError
from moesim.units import parse_bytes, parse_rate

ANALYSES = ("granularity", "serving", "architectures")


@dataclass(frozen=True)
class AnalysisFile:
    """A loaded scaling scenario: the analysis name, its ``[scaling]`` table, the base scenario
    mapping (without ``trace`` and ``scaling``), the validated base scenario and the file's folder."""

    analysis: str
    table: dict[str, Any]
    base: dict[str, Any]
    scenario: Any  # moesim.scenario.Scenario
    trace_path: Path
    base_dir: Path
    source: Path | None


def load_analysis(
    path: str | Path, overrides: Iterable[tuple[str, Any]] = (), *, expected: str | None = None
) -> AnalysisFile:
    """Read a scaling scenario file, apply ``--set`` overrides and validate its base scenario."""
    from moesim.scenario import apply_overrides, read_scenario_file

    path = Path(path)
    raw = apply_overrides(read_scenario_file(path), overrides)
    try:
        return analysis_from_dict(raw, base_dir=path.parent, source=path, expected=expected)
    except ConfigError as exc:
        raise ConfigError(f"scenario '{path}': {exc}") from None


def analysis_from_dict(
    data: Mapping[str, Any], *, base_dir: Path | str = ".", source: Path | None = None, expected: str | None = None
) -> AnalysisFile:
    """The same as :func:`load_analysis` for a mapping already read (and overridden)."""
    from moesim.scenario import scenario_from_dict

    raw = dict(data)
    if "scaling" not in raw:
        F.fail(
            "scaling",
            f"missing; a scaling scenario needs a [scaling] table with analysis = one of {', '.join(ANALYSES)}",
        )
    table = raw.pop("scaling")
    if not isinstance(table, Mapping):
        F.fail("scaling", f"expected a table, got {table!r}")
    table = dict(table)
    analysis = F.check_str("scaling.analysis", table.pop("analysis", expected or ""), choices=ANALYSES)
    if expected is not None and analysis != expected:
        F.fail(
            "scaling.analysis",
            f"this command runs '{expected}' analyses, the file is a '{analysis}' one; use moesim scaling {analysis}",
        )
    if "trace" not in table:
        F.fail(
            "scaling.trace",
            "missing; give the real trace the analysis fits, e.g. "
            'trace = "../traces/gpt-oss-20b-fingerprinting.parquet"',
        )
    base_dir = Path(base_dir)
    trace_path = Path(F.check_str("scaling.trace", table.pop("trace"))).expanduser()
    if not trace_path.is_absolute():
        trace_path = (base_dir / trace_path).resolve()
    if "trace" in raw:
        F.fail("trace", "a scaling scenario takes its trace from scaling.trace; remove the [trace] table")
    base = dict(raw)
    scenario = scenario_from_dict({**base, "trace": {"path": str(trace_path)}}, base_dir=base_dir, source=source)
    return AnalysisFile(
        analysis=analysis,
        table=table,
        base=base,
        scenario=scenario,
        trace_path=trace_path,
        base_dir=base_dir,
        source=source,
    )


def take(table: dict[str, Any], path: str, known: Iterable[str]) -> None:
    """Unknown keys in ``table`` are an error naming the first and listing the valid ones."""
    known = tuple(known)
    unknown = sorted(set(table) - set(known))
    if unknown:
        F.fail(f"{path}.{unknown[0]}", f"unknown key; valid keys are {', '.join(sorted(known))}")


def require(table: Mapping[str, Any], keys: Iterable[str], hint: str) -> None:
    """Each of ``keys`` must be in ``table``; the error names the first missing one and ``hint``."""
    for key in keys:
        if key not in table:
            F.fail(f"scaling.{key}", f"missing; {hint}")


def take_ints(table: Mapping[str, Any], minimums: Mapping[str, int]) -> dict[str, int]:
    """The integer keys of ``table`` named in ``minimums``, each checked against its minimum."""
    return {
        key: F.check_int(f"scaling.{key}", table[key], minimum=low) for key, low in minimums.items() if key in table
    }


def as_list(path: str, value: object) -> list[Any]:
    """A non-empty TOML array (a single value is taken as a list of one)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        F.fail(path, "expected at least one value")
    return values


def byte_list(path: str, value: object) -> tuple[int, ...]:
    """Sizes such as ``["1GiB", "2GiB"]`` in bytes, sorted and distinct."""
    return tuple(sorted({parse_bytes(v, f"{path}[{i}]", allow_zero=False) for i, v in enumerate(as_list(path, value))}))


def rate_list(path: str, value: object) -> tuple[float, ...]:
    """Rates such as ``["16GB/s", "32GB/s"]`` in bytes/s, sorted and distinct."""
    return tuple(sorted({parse_rate(v, f"{path}[{i}]") for i, v in enumerate(as_list(path, value))}))


def int_list(path: str, value: object, *, minimum: int = 1) -> tuple[int, ...]:
    return tuple(sorted({F.check_int(f"{path}[{i}]", v, minimum=minimum) for i, v in enumerate(as_list(path, value))}))


def fraction(path: str, value: object) -> Fraction:
    """``2``, ``0.5`` or ``"1/2"`` as a positive :class:`~fractions.Fraction`."""
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, float):
            result = Fraction(value).limit_denominator(1024)
        elif isinstance(value, (int, str)):
            result = Fraction(str(value).strip())
        else:
            raise ValueError
    except (ValueError, ZeroDivisionError):
        F.fail(path, f'expected a positive number or ratio such as 2, 0.5 or "1/2", got {value!r}')
    if result <= 0:
        F.fail(path, f'expected a positive number or ratio such as 2, 0.5 or "1/2", got {value!r}')
    return result


def fraction_label(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
