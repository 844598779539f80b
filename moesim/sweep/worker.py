"""What a worker does for one sweep point: build the scenario, get the trace, simulate, make a row.

Runs in a pool process, a Ray worker or the driver itself; everything it receives is plain data
(:class:`PointTask`) so it pickles under ``spawn`` and Ray. A worker keeps the traces it has
opened (memory-mapped Arrow IPC files, or buffers in Ray's shared-memory object store), so a trace
is opened once per worker, not once per point. A point that raises becomes a row with
``status = "failed"`` and the error, never an exception in the driver.
"""

from __future__ import annotations

import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from moesim.jsonable import dumps

#: How a worker reaches a trace file: ``("file", key, path)`` (an Arrow IPC file it can
#: memory-map) or ``("object", key, [ObjectRef])`` (the file's bytes in Ray's object store; the
#: reference is wrapped in a list so Ray does not fetch it for tasks whose worker has it open).
TraceHandle = tuple[str, str, Any]

_OPEN_TRACES: OrderedDict[str, tuple[Any, Any]] = OrderedDict()  # key -> (Trace, backing buffer)
_MAX_OPEN_TRACES = 8


@dataclass(frozen=True)
class PointTask:
    """Everything a worker needs to run one point (plain data: picklable, small)."""

    point_id: str
    index: int
    raw: dict[str, Any]
    base_dir: str
    source: str | None
    engine: str | None
    trace: TraceHandle | None  # None: the scenario's own trace (synthetic, or read by path)


def run_point(task: PointTask) -> dict[str, Any]:
    """Simulate one point and return its results row (``status`` "ok" or "failed")."""
    started = time.perf_counter()
    row: dict[str, Any] = {"point_id": task.point_id, "point_index": task.index}
    scenario = None
    try:
        from pathlib import Path

        from moesim.scenario import scenario_from_dict
        from moesim.sim import run

        scenario = scenario_from_dict(
            task.raw, base_dir=Path(task.base_dir), source=Path(task.source) if task.source else None
        )
        trace = _trace(task.trace, scenario)
        result = run(trace, scenario, engine=task.engine)
        row.update(status="ok", engine_used=result.engine)
        row.update(config_columns(scenario, result.scenario.get("memory")))
        row.update(flatten_summary(result.summary))
        row["decode_latency_quantiles_s"] = latency_quantiles(result.steps)
        row["scenario_json"] = dumps(result.scenario, indent=None, sort_keys=True)
    except Exception as exc:  # a failed point is data; KeyboardInterrupt still stops the sweep
        row.update(failure_columns(exc))
        if scenario is not None:
            row.update(config_columns(scenario, None))
            row["scenario_json"] = dumps(scenario.to_dict(), indent=None, sort_keys=True)
    row["wall_s"] = time.perf_counter() - started
    return row


def failure_columns(exc: BaseException) -> dict[str, Any]:
    """status/error columns for an exception; a traceback only for bugs (not user errors)."""
    from moesim.errors import MoesimError, one_line

    return {
        "status": "failed",
        "error_type": type(exc).__name__,
        "error": one_line(str(exc)) or type(exc).__name__,
        "error_traceback": None if isinstance(exc, MoesimError) else "".join(traceback.format_exception(exc)),
    }


def flatten_summary(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"utilisation": {"gpu": 0.3}}`` -> ``{"utilisation.gpu": 0.3}`` (the engine name is left
    out: rows carry it as ``engine_used``)."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if not prefix and key == "engine":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_summary(value, f"{name}."))
        elif isinstance(value, np.generic):
            out[name] = value.item()
        else:
            out[name] = value
    return out


def latency_quantiles(steps) -> list[float] | None:
    """Decode step latency at :data:`moesim.sweep.dataset.LATENCY_QUANTILES`, or None without
    decode steps."""
    from moesim.sweep.dataset import LATENCY_QUANTILES

    phase = steps.column("phase").to_numpy()
    latency = steps.column("latency_s").to_numpy()[phase == 1]
    if len(latency) == 0:
        return None
    return [float(v) for v in np.quantile(latency, LATENCY_QUANTILES)]


def config_columns(scenario, memory: dict[str, Any] | None) -> dict[str, Any]:
    """The resolved configuration as ``cfg.*`` columns (capacity from the memory plan when the
    run got that far, else the scenario's number if it gives one)."""
    model, hardware = scenario.model, scenario.hardware
    per_layer = scenario.cache.layout == "per-layer"
    if memory is not None:
        capacity = int(memory["capacity_experts"])
        cache_bytes = int(memory["cache_slots"]) * int(memory["expert_bytes"])
    elif isinstance(scenario.cache.capacity, int):
        capacity = scenario.cache.capacity
        cache_bytes = capacity * (model.num_moe_layers if per_layer else 1) * model.expert_bytes()
    else:
        capacity = cache_bytes = None
    # experts one token activates in the scope of one cache: rho = capacity / active (Liang et al. 2025)
    active = model.top_k * (1 if per_layer else model.num_moe_layers)
    trace_path = scenario.trace.path
    return {
        "cfg.model": model.name,
        "cfg.expert_format": model.default_expert_format,
        "cfg.expert_bytes": int(model.expert_bytes()),
        "cfg.hardware": hardware.name,
        "cfg.gpu": hardware.gpu.name,
        "cfg.h2d_link": hardware.h2d.name,
        "cfg.h2d_bps": float(hardware.h2d.effective_bps),
        "cfg.trace": str(trace_path) if trace_path is not None else "synthetic",
        "cfg.max_sequences": scenario.trace.max_sequences,
        "cfg.seed": scenario.seed,
        "cfg.batch_size": scenario.workload.batch_size,
        "cfg.eviction": scenario.cache.eviction,
        "cfg.cache_layout": scenario.cache.layout,
        "cfg.capacity_experts": capacity,
        "cfg.active_experts": active,
        "cfg.rho": None if capacity is None else capacity / active,
        "cfg.cache_bytes": cache_bytes,
        "cfg.prefetch": scenario.prefetch.predictor,
        "cfg.miss": scenario.offload.miss,
    }


# ---------------------------------------------------------------------- traces in workers
def _trace(handle: TraceHandle | None, scenario):
    if handle is None:
        from moesim.scenario import load_trace

        return load_trace(scenario)
    kind, key, where = handle
    cached = _OPEN_TRACES.get(key)
    if cached is not None:
        _OPEN_TRACES.move_to_end(key)
        return cached[0]
    if kind == "file":
        from moesim.trace import read_trace

        # validated once by the driver when it staged the file
        entry = (read_trace(where, validate=False), None)
    elif kind == "object":
        import pyarrow as pa
        import ray
        from pyarrow import ipc

        from moesim.trace.io import from_table

        data = ray.get(where[0])  # uint8 array backed by the node's shared memory: no copy
        table = ipc.open_file(pa.py_buffer(data)).read_all()
        entry = (from_table(table, f"trace {key}", validate=False), data)
    else:  # pragma: no cover - handles are made by the executors
        raise ValueError(f"unknown trace handle kind {kind!r}")
    _OPEN_TRACES[key] = entry
    while len(_OPEN_TRACES) > _MAX_OPEN_TRACES:
        _OPEN_TRACES.popitem(last=False)
    return entry[0]
