"""The trace a scenario replays: read from a file, or generated for the scenario's model.

Loaded traces are memoised per process (keyed by file, size and modification time, or by the
synthetic recipe), so sweeps and repeated runs read or fit a trace once per worker.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path

from moesim.errors import ConfigError
from moesim.trace import Trace, read_trace


def load_trace(scenario) -> Trace:
    """The trace ``scenario`` replays (before ``max_sequences`` is applied)."""
    config = scenario.trace
    if config.path is not None:
        return _read_cached(str(config.path), *_stamp(config.path))
    model = scenario.model
    recipe = dict(config.synthetic or {})
    return _synthesize(json.dumps(recipe, sort_keys=True), model.num_experts, model.top_k,
                       model.num_moe_layers, model.name, _stamp(recipe["fit"]) if "fit" in recipe else None)


def _stamp(path) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except OSError:
        raise ConfigError(f"trace.path: no such trace file '{path}'") from None
    return info.st_size, info.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, size: int, mtime_ns: int) -> Trace:
    return read_trace(path)


@functools.lru_cache(maxsize=8)
def _fitted_params(path: str, size: int, mtime_ns: int):
    from moesim.trace.synthetic import fit

    return fit(_read_cached(path, size, mtime_ns), source_trace=Path(path).name).params


@functools.lru_cache(maxsize=16)
def _synthesize(recipe_json: str, num_experts: int, top_k: int, num_layers: int, model: str, stamp) -> Trace:
    from moesim.trace.synthetic import SynthParams, generate

    recipe = json.loads(recipe_json)
    shape = dict(tokens_per_sequence=recipe["tokens"], num_sequences=recipe["sequences"], seed=recipe["seed"])
    if "fit" in recipe:
        base = _fitted_params(recipe["fit"], *stamp)
        params = base.rescaled(num_experts=num_experts, top_k=top_k, num_layers=num_layers)
        params = dataclasses.replace(params, **shape)
    else:
        params = SynthParams(
            num_experts=num_experts, top_k=top_k, num_layers=num_layers, model=f"synthetic {model}",
            popularity_skew=recipe.get("skew", 0.0), popularity_tail=recipe.get("tail", 0.0),
            persistence=recipe.get("persistence", 0.0), cross_layer=recipe.get("cross_layer", 0.0),
            sequence_affinity=recipe.get("sequence_affinity", 0.0), **shape,
        )
    return generate(params)
