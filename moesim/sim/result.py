"""Simulation results: per-step and per-layer Arrow tables plus a summary, built the same way for
both engines (engines fill :class:`StepColumns`; everything derived is computed here once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

# Per-step columns every engine records, with dtypes. Times in seconds, sizes in bytes.
STEP_COLUMNS: dict[str, type] = {
    "step": np.int64,
    "phase": np.int8,  # 0 prefill, 1 decode
    "num_tokens": np.int32,
    "start_s": np.float64,
    "end_s": np.float64,
    "latency_s": np.float64,
    "gpu_busy_s": np.float64,
    "dense_s": np.float64,
    "expert_gpu_s": np.float64,
    "overhead_s": np.float64,  # combine + head
    "stall_s": np.float64,
    "stall_fetch_s": np.float64,
    "stall_cpu_s": np.float64,
    "h2d_bytes": np.int64,
    "d2h_bytes": np.int64,
    "ssd_bytes": np.int64,
    "hits": np.int32,
    "misses": np.int32,
    "late_prefetches": np.int32,
    "prefetches_issued": np.int32,
    "useful_prefetches": np.int32,
    "wasted_prefetches": np.int32,
    "cpu_experts": np.int32,
    "staged_experts": np.int32,
}

LAYER_COLUMNS: dict[str, type] = {
    "layer": np.int32,
    "model_layer": np.int32,
    "hits": np.int64,
    "misses": np.int64,
    "late_prefetches": np.int64,
    "cpu_experts": np.int64,
    "stall_s": np.float64,
    "h2d_bytes": np.int64,
}


class StepColumns:
    """Preallocated per-step and per-layer arrays an engine writes into."""

    def __init__(self, num_steps: int, num_layers: int):
        self.steps = {name: np.zeros(num_steps, dtype=dtype) for name, dtype in STEP_COLUMNS.items()}
        self.steps["step"][:] = np.arange(num_steps)
        self.layers = {name: np.zeros(num_layers, dtype=dtype) for name, dtype in LAYER_COLUMNS.items()}
        self.layers["layer"][:] = np.arange(num_layers)


@dataclass(frozen=True)
class Totals:
    """Run-wide quantities an engine reports besides the per-step columns."""

    total_time_s: float
    gpu_busy_s: float
    cpu_busy_s: float
    h2d_busy_s: float
    d2h_busy_s: float
    ssd_busy_s: float
    prefetched_never_used: int  # prefetched experts still unused at the end (wasted too)
    demand_fetches: int
    demand_fetch_wait_s: float  # sum over demand fetches of (arrival - issue)


@dataclass(frozen=True)
class Result:
    """One simulation run: ``steps`` and ``layers`` Arrow tables, a ``summary`` dict, the engine."""

    steps: pa.Table
    layers: pa.Table
    summary: dict[str, Any]
    engine: str
    scenario: dict[str, Any] = field(default_factory=dict)

    def step_array(self, name: str) -> np.ndarray:
        return self.steps.column(name).to_numpy()


def build_result(columns: StepColumns, totals: Totals, *, engine: str, moe_layers: tuple[int, ...],
                 scenario: dict[str, Any] | None = None) -> Result:
    columns.layers["model_layer"][:] = np.asarray(moe_layers, dtype=np.int32)
    steps = pa.table({name: pa.array(values) for name, values in columns.steps.items()})
    layers = pa.table({name: pa.array(values) for name, values in columns.layers.items()})
    return Result(steps=steps, layers=layers, summary=summarize(columns.steps, totals, engine),
                  engine=engine, scenario=dict(scenario or {}))


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"mean": float("nan"), "p50": float("nan"), "p90": float("nan"), "p99": float("nan")}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"mean": float(values.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def summarize(steps: dict[str, np.ndarray], totals: Totals, engine: str) -> dict[str, Any]:
    """The headline numbers of a run, from the per-step columns and the engine's totals."""
    decode = steps["phase"] == 1
    prefill = ~decode
    decode_tokens = int(steps["num_tokens"][decode].sum())
    prefill_tokens = int(steps["num_tokens"][prefill].sum())
    decode_time_s = float(steps["latency_s"][decode].sum())
    prefill_time_s = float(steps["latency_s"][prefill].sum())
    total = totals.total_time_s
    tokens = decode_tokens + prefill_tokens
    hits = int(steps["hits"].sum())
    misses = int(steps["misses"].sum())
    late = int(steps["late_prefetches"].sum())
    demands = hits + misses + late
    stall_fetch = float(steps["stall_fetch_s"].sum())
    stall_cpu = float(steps["stall_cpu_s"].sum())
    issued = int(steps["prefetches_issued"].sum())
    useful = int(steps["useful_prefetches"].sum())
    wasted = int(steps["wasted_prefetches"].sum()) + totals.prefetched_never_used

    def ratio(a: float, b: float) -> float:
        return float(a) / float(b) if b else float("nan")

    return {
        "engine": engine,
        "num_steps": int(len(steps["step"])),
        "decode_tokens": decode_tokens,
        "prefill_tokens": prefill_tokens,
        "total_time_s": total,
        "decode_time_s": decode_time_s,
        "prefill_time_s": prefill_time_s,
        "decode_tokens_per_s": ratio(decode_tokens, decode_time_s),
        "tokens_per_s": ratio(tokens, total),
        "decode_step_latency_s": _percentiles(steps["latency_s"][decode]),
        "demands": demands,
        "hits": hits,
        "misses": misses,
        "late_prefetches": late,
        "hit_rate": ratio(hits, demands),
        "misses_per_token": ratio(misses, tokens),
        "h2d_bytes": int(steps["h2d_bytes"].sum()),
        "d2h_bytes": int(steps["d2h_bytes"].sum()),
        "ssd_bytes": int(steps["ssd_bytes"].sum()),
        "h2d_bytes_per_token": ratio(steps["h2d_bytes"].sum(), tokens),
        "utilisation": {
            "gpu": ratio(totals.gpu_busy_s, total),
            "cpu": ratio(totals.cpu_busy_s, total),
            "h2d": ratio(totals.h2d_busy_s, total),
            "d2h": ratio(totals.d2h_busy_s, total),
            "ssd": ratio(totals.ssd_busy_s, total),
        },
        "time_breakdown_s": {
            "dense": float(steps["dense_s"].sum()),
            "expert_gpu": float(steps["expert_gpu_s"].sum()),
            "overhead": float(steps["overhead_s"].sum()),
            "stall_fetch": stall_fetch,
            "stall_cpu": stall_cpu,
        },
        "miss_penalty": {
            "stall_per_miss_s": ratio(stall_fetch + stall_cpu, misses + late),
            "mean_demand_fetch_s": ratio(totals.demand_fetch_wait_s, totals.demand_fetches),
        },
        "prefetch": {
            "issued": issued,
            "useful": useful,
            "wasted": wasted,
            "late": late,
            "accuracy": ratio(useful, issued),
        },
        "cpu_experts": int(steps["cpu_experts"].sum()),
        "staged_experts": int(steps["staged_experts"].sum()),
    }
