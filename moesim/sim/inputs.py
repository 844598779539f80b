"""Everything an engine needs, resolved and precomputed: the engine-agnostic simulation problem.

Both engines (the SimPy reference and the Numba fast path) consume one :class:`SimInputs`, so they
cannot disagree about the workload, the cost of any piece of work or the policies in force; they
differ only in how they compute the timeline. :func:`moesim.sim.build.build_inputs` makes one from
a trace and a scenario.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, kw_only=True)
class LinkParams:
    """A link as the engines see it: effective bandwidth (after efficiency), latency, channels."""

    name: str
    bandwidth_bps: float
    latency_s: float
    channels: int = 1

    def duration_s(self, num_bytes: int, chunk_bytes: int | None = None) -> float:
        if num_bytes <= 0:
            return 0.0
        if chunk_bytes is None or chunk_bytes <= 0:
            return self.latency_s + num_bytes / self.bandwidth_bps
        chunks = -(-int(num_bytes) // int(chunk_bytes))
        return chunks * self.latency_s + num_bytes / self.bandwidth_bps


@dataclass(frozen=True, kw_only=True)
class CacheParams:
    """The GPU expert cache: ``capacity_experts`` slots in one pool, or per MoE layer (quota)."""

    capacity_experts: int
    layout: str  # "pool" | "per_layer"
    eviction: str
    eviction_params: dict[str, Any] = field(default_factory=dict)
    preload_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass(frozen=True, kw_only=True)
class HostParams:
    """CPU memory as an expert tier. ``capacity_experts=None``: it holds every expert (no SSD)."""

    capacity_experts: int | None
    eviction: str = "lru"
    preload_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ssd_direct: bool = False  # GPU misses not in CPU memory read SSD -> GPU directly


@dataclass(frozen=True, kw_only=True)
class PrefetchParams:
    predictor: str = "none"
    lookahead_layers: int = 1
    max_experts: int | None = None
    chunk_bytes: int | None = None


@dataclass(frozen=True, kw_only=True)
class SimInputs:
    """A resolved simulation problem (see module docstring). Arrays are read-only.

    Workload: ``S`` steps, ``L`` MoE layers; demand group ``g = s*L + l`` lists the experts of layer
    ``l`` needed in step ``s`` (first-appearance order) and how many of the step's tokens chose each.
    Costs: ``dense_s[s, l]`` is the GPU work before MoE layer l's experts (its attention, router,
    shared experts, and any dense layers since the previous MoE layer); ``head_s[s]`` the work after
    the last MoE layer (trailing dense layers, final norm, LM head, sampling).
    """

    num_steps: int
    num_layers: int
    num_experts: int
    top_k: int
    step_phase: np.ndarray  # int8[S]
    step_num_tokens: np.ndarray  # int32[S]
    step_row_offsets: np.ndarray  # int64[S+1] into step_rows
    step_rows: np.ndarray  # int64[R] trace rows of each step
    demand_offsets: np.ndarray  # int64[S*L+1]
    demand_ids: np.ndarray  # int16[D]
    demand_tokens: np.ndarray  # int32[D]
    predicted_offsets: np.ndarray | None  # int64[S*L+1] (trace predictor)
    predicted_ids: np.ndarray | None  # int16[P]
    dense_s: np.ndarray  # float64[S, L]
    head_s: np.ndarray  # float64[S]
    combine_s: float
    expert_gpu_s: np.ndarray  # float64[D]
    expert_cpu_s: np.ndarray  # float64[D]
    activation_bytes: np.ndarray  # int64[D], each way, for CPU execution
    expert_bytes: int
    h2d: LinkParams
    d2h: LinkParams | None  # None: half duplex, d2h shares the h2d link
    ssd: LinkParams | None
    cache: CacheParams
    host: HostParams
    prefetch: PrefetchParams
    miss: str  # "fetch" | "cpu" | "best"
    # Activations of sequences that left the batch, dropped at the start of each step (for the
    # activation-aware policy): step s drops release_counts[i] on key release_keys[i] for i in
    # release_offsets[s]:release_offsets[s+1].
    release_offsets: np.ndarray | None = None  # int64[S+1]
    release_keys: np.ndarray | None = None  # int64[...]
    release_counts: np.ndarray | None = None  # int64[...]
    seed: int = 0

    @property
    def num_demands(self) -> int:
        return len(self.demand_ids)

    def group(self, step: int, layer: int) -> slice:
        g = step * self.num_layers + layer
        return slice(int(self.demand_offsets[g]), int(self.demand_offsets[g + 1]))

    def cache_key(self, layer: int, expert: int) -> int:
        """Key of (layer, expert) in the GPU cache: ``layer*E + expert`` (per-layer caches use it too)."""
        return layer * self.num_experts + expert
