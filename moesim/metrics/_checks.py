"""Argument checks shared by the metric wrappers (one-line ConfigErrors naming the argument)."""

from __future__ import annotations

import numpy as np

from moesim.errors import ConfigError
from moesim.trace.trace import Trace


def _check_trace(trace: object) -> Trace:
    if not isinstance(trace, Trace):
        raise ConfigError(
            f"trace: expected a moesim.Trace, got {type(trace).__name__}; "
            f"load one with moesim.read_trace(path) or build one with Trace.from_arrays(...)"
        )
    return trace


def _check_layer(trace: Trace, layer: object) -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < trace.num_layers:
        raise ConfigError(
            f"layer: expected a trace layer index in 0..{trace.num_layers - 1} "
            f"(model layers {list(trace.moe_layers)}), got {layer!r}"
        )
    return int(layer)
