"""Expanding a sweep into validated points with stable ids.

Every point is the base scenario (file + ``--set``) with the point's values applied to the raw
mapping by :func:`moesim.scenario.apply_overrides`, then validated by
:func:`moesim.scenario.scenario_from_dict` exactly like a scenario file, so a sweep cannot hold a
point ``moesim run`` would refuse. All points are validated before anything runs; the first bad
one raises a :class:`~moesim.errors.ConfigError` naming the point and the dotted path.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moesim.errors import ConfigError
from moesim.sweep.spec import SweepSpec, canonical_json, format_values, parse_grid, spec_from_table

#: Keys left out of ids and fingerprints: they label a scenario but do not change what it simulates.
LABEL_KEYS = ("name", "description", "sweep")


@dataclass(frozen=True)
class SweepPoint:
    """One configuration of a sweep.

    Attributes
    ----------
    index : int
        Position in expansion order (0-based).
    point_id : str
        Stable id: a hash of the point's resolved raw scenario (base, ``--set`` and the point's
        values; labels excluded), so the same configuration has the same id in any sweep.
    values : dict
        The swept ``{dotted path: value}`` of this point, as written.
    raw : dict
        The raw scenario mapping of the point (without the ``sweep`` table).
    scenario : moesim.scenario.Scenario
        The validated scenario.
    """

    index: int
    point_id: str
    values: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)
    scenario: Any = field(repr=False, compare=False)


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep: the base scenario, the spec and every point.

    ``fingerprint`` hashes the base (file and ``--set``, labels excluded); a results dataset
    records it so ``--resume`` refuses results of a different base scenario. ``overrides`` are the
    ``--set`` values the base includes (for commands that reproduce a point).
    """

    name: str
    source: Path | None
    base_dir: Path
    base: dict[str, Any] = field(repr=False)
    spec: SweepSpec
    points: tuple[SweepPoint, ...] = field(repr=False)
    fingerprint: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def swept_paths(self) -> tuple[str, ...]:
        return self.spec.paths

    def __len__(self) -> int:
        return len(self.points)


def config_hash(raw: dict[str, Any], length: int = 16) -> str:
    """Hex digest of a raw scenario mapping without its labels (name, description, sweep)."""
    content = {k: v for k, v in raw.items() if k not in LABEL_KEYS}
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()[:length]


def expand(
    base: dict[str, Any],
    spec: SweepSpec | None = None,
    *,
    base_dir: Path | str = ".",
    source: Path | str | None = None,
) -> SweepPlan:
    """Expand ``spec`` over the raw scenario ``base`` and validate every point.

    Parameters
    ----------
    base : dict
        Raw scenario mapping (``--set`` overrides already applied). Its ``sweep`` table, if any,
        is ignored here: pass ``spec`` (see :func:`plan_sweep` to read both from a file).
    spec : SweepSpec, optional
        The axes; none means a single point, the base scenario.
    base_dir : path
        Directory relative trace paths resolve against (the scenario file's).
    source : path, optional
        The scenario file, for messages and results.

    Returns
    -------
    SweepPlan

    Raises
    ------
    ConfigError
        For the first point that does not validate: ``sweep point 3 of 24 (cache.capacity=8,
        cache.eviction="sch"): cache.eviction_params.segment: ...``.
    """
    from moesim.scenario import apply_overrides, scenario_from_dict

    spec = spec or SweepSpec()
    source_path = Path(source) if source is not None else None
    base = {k: v for k, v in base.items() if k != "sweep"}
    num_points = spec.num_points
    points: list[SweepPoint] = []
    ids: dict[str, int] = {}
    for index, values in enumerate(spec.combinations()):
        where = f"sweep point {index + 1} of {num_points} ({format_values(values)})"
        try:
            # a table before its fields, so sweeping `hardware` and `hardware.h2d.efficiency` composes
            raw = apply_overrides(base, sorted(values.items(), key=lambda item: item[0].count(".")))
            scenario = scenario_from_dict(raw, base_dir=base_dir, source=source_path)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        point_id = config_hash(raw)
        if point_id in ids:
            raise ConfigError(f"{where}: the same configuration as point {ids[point_id] + 1}; list each setting once")
        ids[point_id] = index
        points.append(SweepPoint(index=index, point_id=point_id, values=values, raw=raw, scenario=scenario))
    name = str(base.get("name") or (source_path.stem if source_path else "sweep"))
    return SweepPlan(
        name=name,
        source=source_path,
        base_dir=Path(base_dir),
        base=base,
        spec=spec,
        points=tuple(points),
        fingerprint=config_hash(base),
    )


def plan_sweep(
    path: str | Path,
    *,
    grid: Sequence[str | tuple[str, list[Any]]] = (),
    zip_group: Sequence[str | tuple[str, list[Any]]] = (),
    overrides: Iterable[tuple[str, Any]] = (),
) -> SweepPlan:
    """Read a scenario file and its ``[sweep]`` table, add command-line axes, apply ``--set``
    overrides to the base and expand (see :func:`expand`). ``grid``/``zip_group`` entries are
    ``"path=v1,v2"`` strings or ``(path, [values])`` pairs. Errors name the file."""
    from moesim.scenario import apply_overrides, read_scenario_file

    path = Path(path)
    raw = read_scenario_file(path)
    try:
        spec = spec_from_table(raw.get("sweep"))
        spec = spec.with_axes(
            [parse_grid(g) if isinstance(g, str) else g for g in grid],
            [parse_grid(z, "--zip") if isinstance(z, str) else z for z in zip_group],
        )
        overrides = list(overrides)
        for key, _ in overrides:
            if key == "sweep" or key.startswith("sweep."):
                raise ConfigError(f"--set {key}: change sweep axes with --grid or --zip, not --set")
            if key in spec.paths:
                raise ConfigError(f"--set {key}: {key} is swept; drop the --set or the axis (--grid replaces it)")
        base = apply_overrides(raw, overrides)
        plan = expand(base, spec, base_dir=path.parent, source=path)
        return dataclasses.replace(plan, overrides=tuple(overrides))
    except ConfigError as exc:
        raise ConfigError(f"scenario '{path}': {exc}") from None
