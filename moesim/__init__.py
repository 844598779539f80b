"""moesim: trace-driven cache and memory-hierarchy simulation for Mixture-of-Experts inference.

Importing moesim is cheap: nothing is compiled and numba is not imported until a metric or the
fast simulation path is first used. Submodules with heavy imports load on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

from moesim.errors import ConfigError, MoesimError, TraceError
from moesim.trace import Trace, TraceWriter, read_trace, write_trace

__version__ = "0.1.0"

# name -> module that provides it; loaded on first access.
_LAZY = {
    "metrics": "moesim.metrics",
    "hit_curve": "moesim.metrics",
    "srp": "moesim.metrics",
    "models": "moesim.models",
    "hardware": "moesim.hardware",
    "get_model": "moesim.models",
    "get_hardware": "moesim.hardware",
    "ModelSpec": "moesim.models",
    "HardwareSpec": "moesim.hardware",
    "scenario": "moesim.scenario",
    "load_scenario": "moesim.scenario",
    "sim": "moesim.sim",
    "import_trace": "moesim.trace.importers",
    "synthetic": "moesim.trace.synthetic",
    "sweep": "moesim.sweep",
    "plan_sweep": "moesim.sweep",
    "run_sweep": "moesim.sweep",
    "read_results": "moesim.sweep",
}

__all__ = [
    "ConfigError",
    "MoesimError",
    "Trace",
    "TraceError",
    "TraceWriter",
    "__version__",
    "read_trace",
    "write_trace",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'moesim' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name.rsplit(".", 1)[-1] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
