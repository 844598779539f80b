"""Scenarios: typed, validated configuration of a simulation (TOML + ``--set`` overrides)."""

from moesim.scenario.config import (
    CacheConfig,
    OffloadConfig,
    PrefetchConfig,
    Scenario,
    TimingConfig,
    TraceConfig,
    WorkloadConfig,
    load_scenario,
    read_scenario_file,
    scenario_from_dict,
)
from moesim.scenario.overrides import apply_overrides, parse_assignment, parse_value, set_path
from moesim.scenario.traces import load_trace

__all__ = [
    "CacheConfig",
    "OffloadConfig",
    "PrefetchConfig",
    "Scenario",
    "TimingConfig",
    "TraceConfig",
    "WorkloadConfig",
    "apply_overrides",
    "load_scenario",
    "load_trace",
    "parse_assignment",
    "parse_value",
    "read_scenario_file",
    "scenario_from_dict",
    "set_path",
]
