"""Prefetch predictors (registry ``PREFETCH``): which experts to load ahead of demand.

At the end of MoE layer ``l``'s dense work in step ``s``, the engine asks the predictor for the
experts of the target position ``l + d`` (``d`` = lookahead in MoE layers; positions past the last
layer continue in the next step). Predictions are expert ids of the target layer, most likely first;
the engine drops those resident or in flight and caps them at ``max_experts``.

* ``none``: never prefetch.
* ``oracle``: the true demand of the target layer (an upper bound no real system reaches).
* ``previous-token``: the target layer's demand in the previous step (temporal locality).
* ``popularity``: the target layer's most demanded experts so far in this run.
* ``trace``: the trace's recorded predictions (``predicted_experts``, e.g. speculative gating from
  the previous layer's hidden state captured with ``--speculative``); lookahead must be 1.
"""

from __future__ import annotations

import numpy as np

from moesim.errors import ConfigError
from moesim.policies.registry import Registry
from moesim.sim.inputs import SimInputs

PREFETCH: Registry[type[Predictor]] = Registry("prefetch predictor")
register_prefetch = PREFETCH.register


class Predictor:
    """Base: proposes nothing. Subclasses override :meth:`predict`."""

    default_max_experts: int | None = None  # None: everything predicted

    def __init__(self, inputs: SimInputs):
        self.inputs = inputs
        self.lookahead = inputs.prefetch.lookahead_layers

    def target(self, step: int, layer: int) -> tuple[int, int] | None:
        position = layer + self.lookahead
        target_step = step + position // self.inputs.num_layers
        if target_step >= self.inputs.num_steps:
            return None
        return target_step, position % self.inputs.num_layers

    def observe(self, step: int, layer: int, ids: np.ndarray) -> None:
        """The demand of (step, layer) is now known."""

    def predict(self, step: int, layer: int, target_step: int, target_layer: int) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)

    def propose(self, step: int, layer: int) -> tuple[int, np.ndarray] | None:
        """``(target_layer, expert ids)`` to prefetch after (step, layer)'s dense work, or None."""
        target = self.target(step, layer)
        if target is None:
            return None
        ids = self.predict(step, layer, *target)
        limit = self.inputs.prefetch.max_experts
        if limit is None:
            limit = self.default_max_experts
        if limit is not None:
            ids = ids[:limit]
        return target[1], ids

    def _demand(self, step: int, layer: int) -> np.ndarray:
        return self.inputs.demand_ids[self.inputs.group(step, layer)].astype(np.int64)


@register_prefetch("none")
class NoPrefetch(Predictor):
    def propose(self, step: int, layer: int) -> None:
        return None


@register_prefetch("oracle")
class Oracle(Predictor):
    def predict(self, step, layer, target_step, target_layer):
        return self._demand(target_step, target_layer)


@register_prefetch("previous-token", aliases=("previous",))
class PreviousToken(Predictor):
    def predict(self, step, layer, target_step, target_layer):
        if target_step == 0:
            return np.zeros(0, dtype=np.int64)
        return self._demand(target_step - 1, target_layer)


@register_prefetch("popularity")
class Popularity(Predictor):
    def __init__(self, inputs: SimInputs):
        super().__init__(inputs)
        self.default_max_experts = inputs.top_k
        self.counts = np.zeros((inputs.num_layers, inputs.num_experts), dtype=np.int64)

    def observe(self, step, layer, ids):
        self.counts[layer, ids] += 1

    def predict(self, step, layer, target_step, target_layer):
        counts = self.counts[target_layer]
        order = np.lexsort((np.arange(len(counts)), -counts))  # most demanded first, then lower id
        return order[counts[order] > 0]


@register_prefetch("trace")
class TracePredictions(Predictor):
    def __init__(self, inputs: SimInputs):
        super().__init__(inputs)
        if inputs.predicted_offsets is None:
            raise ConfigError(
                "prefetch.predictor: 'trace' needs a trace with a predicted_experts column "
                "(capture one with `moesim trace capture --speculative`)"
            )
        if self.lookahead != 1:
            raise ConfigError(
                f"prefetch.lookahead: the trace predictor predicts only the next MoE layer; "
                f"set lookahead = 1 (got {self.lookahead})"
            )

    def predict(self, step, layer, target_step, target_layer):
        if target_step != step:
            return np.zeros(0, dtype=np.int64)
        g = target_step * self.inputs.num_layers + target_layer
        offsets = self.inputs.predicted_offsets
        return self.inputs.predicted_ids[offsets[g] : offsets[g + 1]].astype(np.int64)


def make_predictor(inputs: SimInputs) -> Predictor:
    return PREFETCH.get(inputs.prefetch.predictor, field="prefetch.predictor")(inputs)
