"""Running the simulations of a scaling analysis: one function, :func:`run_points`.

A point is a scenario (raw mapping, validated like a file) plus the :class:`TraceRecipe` of the
trace it replays and the labels the analysis groups results by. Each point becomes one row: its
labels, the memory plan, the headline numbers of :func:`moesim.sim.run` and a ``status``. A point
whose configuration cannot run (the model does not fit the GPU, the cache is below top-k) is a row
with ``status = "infeasible"`` and the one-line reason, not an abort: for a scaling study, what does
not fit is a result.

Points run in this process or on the sweep's executors (:mod:`moesim.sweep.executors`: a spawn
process pool or Ray), whose workers rebuild each trace from its recipe once. Rows come back in
point order whatever the executor and number of workers, and the simulator is deterministic, so
the same points give the same rows bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from moesim.errors import ConfigError, MoesimError, one_line
from moesim.scaling.traces import TraceRecipe


@dataclass(frozen=True)
class SimPoint:
    """One simulation of an analysis: ``scenario`` (a raw scenario mapping with ``model``,
    ``hardware``, ``cache``, ...; its ``trace`` table is filled in from ``trace``), the trace recipe,
    and ``labels`` copied into the result row."""

    scenario: dict[str, Any]
    trace: TraceRecipe
    labels: dict[str, Any] = field(default_factory=dict)


# The summary numbers each row carries (dotted names flatten the nested summary).
SUMMARY_COLUMNS = (
    "decode_tokens_per_s",
    "tokens_per_s",
    "hit_rate",
    "misses_per_token",
    "h2d_bytes_per_token",
    "decode_tokens",
    "num_steps",
    "demands",
    "hits",
    "misses",
    "h2d_bytes",
    "total_time_s",
    "decode_time_s",
    "miss_penalty.stall_per_miss_s",
    "miss_penalty.mean_demand_fetch_s",
    "time_breakdown_s.dense",
    "time_breakdown_s.expert_gpu",
    "time_breakdown_s.overhead",
    "time_breakdown_s.stall_fetch",
    "time_breakdown_s.stall_cpu",
    "utilisation.gpu",
    "utilisation.h2d",
    "decode_step_latency_s.mean",
    "decode_step_latency_s.p99",
)
MEMORY_COLUMNS = (
    "gpu_bytes",
    "non_expert_bytes",
    "kv_cache_bytes",
    "staging_bytes",
    "reserve_bytes",
    "expert_bytes",
    "cache_slots",
    "capacity_experts",
    "total_experts",
    "host_slots",
)


def _lookup(summary: dict[str, Any], dotted: str) -> Any:
    value: Any = summary
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _column(name: str) -> str:
    return name.replace(".", "_")


def empty_row() -> dict[str, Any]:
    """The simulated columns of a row, all None (what an infeasible point carries)."""
    row: dict[str, Any] = {_column(name): None for name in SUMMARY_COLUMNS}
    row.update({f"mem_{name}": None for name in MEMORY_COLUMNS})
    return row


def run_point(point: SimPoint) -> dict[str, Any]:
    """Simulate one point in this process and return its row."""
    from moesim.scenario import scenario_from_dict
    from moesim.sim import run

    row: dict[str, Any] = dict(point.labels)
    row["trace"] = point.trace.label
    row.update(empty_row())
    raw = dict(point.scenario)
    # The scenario records where its trace came from; the recipe, not this path, is what runs.
    raw["trace"] = {"path": point.trace.path or "synthetic.parquet"}
    try:
        scenario = scenario_from_dict(raw)
        trace = point.trace.build()
        result = run(trace, scenario)
    except MoesimError as exc:
        row.update(status="infeasible", reason=one_line(exc), engine=None)
        return row
    row.update({_column(name): _lookup(result.summary, name) for name in SUMMARY_COLUMNS})
    memory = result.scenario.get("memory", {})
    row.update({f"mem_{name}": memory.get(name) for name in MEMORY_COLUMNS})
    row.update(status="ok", reason="", engine=result.engine)
    return row


def _run_indexed(task: tuple[int, SimPoint]) -> tuple[int, dict[str, Any]]:
    index, point = task
    return index, run_point(point)


def run_points(
    points: Sequence[SimPoint],
    *,
    workers: int = 1,
    executor: str = "local",
    address: str | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> list[dict[str, Any]]:
    """Simulate every point; rows in point order.

    Parameters
    ----------
    points : sequence of SimPoint
    workers : int
        1 runs in this process; more use that many workers of the sweep executor.
    executor : {"local", "ray"}
        :func:`moesim.sweep.make_executor`'s kind: a spawn process pool on this machine, or Ray
        tasks (``address`` of a cluster, or a local one).
    progress : callable, optional
        Wraps the iterable of finished rows (e.g. :func:`moesim.cli._common.progress`).

    Notes
    -----
    The executors are the sweep's (:mod:`moesim.sweep.executors`): workers are spawned clean, a
    worker that dies loses only its own point (that row gets ``status = "failed"`` and the reason),
    and rows are put back in point order, so the result does not depend on the executor or the
    number of workers.
    """
    from moesim.sweep import make_executor

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: expected an integer >= 1, got {workers!r}")
    rows: list[dict[str, Any] | None] = [None] * len(points)
    wrap = progress or (lambda iterable: iterable)

    def finished():
        with make_executor(executor, jobs=min(workers, max(len(points), 1)), address=address) as pool:
            for outcome in pool.map_unordered(_run_indexed, enumerate(points)):
                if outcome is None:
                    continue
                (index, point), result, failure = outcome
                if failure is not None:
                    row = {**point.labels, "trace": point.trace.label, **empty_row()}
                    row.update(status="failed", reason=failure, engine=None)
                    rows[index] = row
                else:
                    rows[index] = result[1]
                yield rows[index]

    for _ in wrap(finished()):
        pass
    return rows  # type: ignore[return-value]
