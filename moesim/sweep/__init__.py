"""Parameter sweeps: expand a scenario over a grid, run the points locally or on Ray, and keep the
results in a resumable Parquet dataset (one row per point).

>>> from moesim.sweep import plan_sweep, run_sweep, read_results
>>> plan = plan_sweep("scenarios/sweep-gptoss-cache.toml", grid=["workload.batch_size=1,4"])
>>> summary = run_sweep(plan, "results/cache", jobs=2)          # doctest: +SKIP
>>> table = read_results("results/cache")                         # doctest: +SKIP

Importing this package is cheap (no numba, no Ray); workers import the simulator when they run.
"""

from moesim.sweep.dataset import LATENCY_QUANTILES, ResultsWriter, is_dataset, read_manifest, read_results
from moesim.sweep.executors import EXECUTORS, LocalExecutor, RayExecutor, available_cpus, make_executor
from moesim.sweep.plan import SweepPlan, SweepPoint, config_hash, expand, plan_sweep
from moesim.sweep.runner import PointOutcome, SweepRunner, SweepSummary, check_traces, run_sweep
from moesim.sweep.spec import Axis, SweepSpec, format_values, parse_grid, spec_from_table

__all__ = [
    "EXECUTORS",
    "LATENCY_QUANTILES",
    "Axis",
    "LocalExecutor",
    "PointOutcome",
    "RayExecutor",
    "ResultsWriter",
    "SweepPlan",
    "SweepPoint",
    "SweepRunner",
    "SweepSpec",
    "SweepSummary",
    "available_cpus",
    "check_traces",
    "config_hash",
    "expand",
    "format_values",
    "is_dataset",
    "make_executor",
    "parse_grid",
    "plan_sweep",
    "read_manifest",
    "read_results",
    "run_sweep",
    "spec_from_table",
]
