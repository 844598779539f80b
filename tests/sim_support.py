"""Hand-built simulation inputs for engine tests: a trace plus constant costs, no model presets.

Costs are simple closed forms (dense time per step, expert kernel time affine in its tokens) so
tests can compute expected timelines by hand.
"""

from __future__ import annotations

import numpy as np

from moesim import Trace
from moesim.sim.build import activation_releases, plan_run
from moesim.sim.inputs import CacheParams, HostParams, LinkParams, PrefetchParams, SimInputs


def random_trace(rng: np.random.Generator, *, num_tokens: int, num_layers: int, num_experts: int, top_k: int,
                 num_seqs: int = 1, locality: float = 0.5) -> Trace:
    """Tokens that reuse the previous token's experts with probability ``locality`` per slot."""
    experts = np.empty((num_tokens, num_layers, top_k), dtype=np.int16)
    for t in range(num_tokens):
        for layer in range(num_layers):
            chosen: list[int] = []
            previous = list(experts[t - 1, layer]) if t else []
            for _ in range(top_k):
                pool = [e for e in previous if e not in chosen]
                if pool and rng.random() < locality:
                    chosen.append(int(rng.choice(pool)))
                else:
                    rest = [e for e in range(num_experts) if e not in chosen]
                    chosen.append(int(rng.choice(rest)))
            experts[t, layer] = chosen
    seq_ids = np.sort(rng.integers(0, num_seqs, num_tokens))
    return Trace.from_arrays(experts, num_experts=num_experts, seq_ids=seq_ids, model="synthetic-test")


def make_inputs(
    trace: Trace,
    *,
    capacity: int,
    layout: str = "pool",
    eviction: str = "lru",
    eviction_params: dict | None = None,
    batch_size: int = 1,
    dense_s: float = 1e-3,
    head_s: float = 2e-4,
    combine_s: float = 1e-5,
    expert_gpu_s: tuple[float, float] = (1e-4, 1e-5),  # fixed + per token
    expert_cpu_s: tuple[float, float] = (5e-4, 1e-4),
    expert_bytes: int = 1_000_000,
    act_bytes_per_token: int = 4096,
    bandwidth_bps: float = 1e9,
    latency_s: float = 1e-5,
    d2h: bool = True,
    channels: int = 1,
    miss: str = "fetch",
    predictor: str = "none",
    lookahead: int = 1,
    max_experts: int | None = None,
    chunk_bytes: int | None = None,
    host_capacity: int | None = None,
    host_eviction: str = "lru",
    ssd_bandwidth_bps: float = 2e8,
    ssd_latency_s: float = 1e-4,
    ssd_direct: bool = False,
    preload_keys: np.ndarray | None = None,
    prefill: bool = True,
) -> SimInputs:
    plan = plan_run(trace, batch_size=batch_size, prefill=prefill, prefill_chunk=64, max_steps=None)
    num_steps, num_layers = plan.num_steps, trace.num_layers
    tokens = plan.demand_tokens.astype(np.float64)
    link = LinkParams(name="h2d", bandwidth_bps=bandwidth_bps, latency_s=latency_s, channels=channels)
    return SimInputs(
        num_steps=num_steps,
        num_layers=num_layers,
        num_experts=trace.num_experts,
        top_k=trace.top_k,
        step_phase=plan.step_phase,
        step_num_tokens=np.diff(plan.step_offsets).astype(np.int32),
        step_row_offsets=plan.step_offsets,
        step_rows=plan.step_rows,
        demand_offsets=plan.demand_offsets,
        demand_ids=plan.demand_ids,
        demand_tokens=plan.demand_tokens,
        predicted_offsets=plan.predicted_offsets,
        predicted_ids=plan.predicted_ids,
        dense_s=np.full((num_steps, num_layers), dense_s),
        head_s=np.full(num_steps, head_s),
        combine_s=combine_s,
        expert_gpu_s=expert_gpu_s[0] + expert_gpu_s[1] * tokens,
        expert_cpu_s=expert_cpu_s[0] + expert_cpu_s[1] * tokens,
        activation_bytes=plan.demand_tokens.astype(np.int64) * act_bytes_per_token,
        expert_bytes=expert_bytes,
        h2d=link,
        d2h=LinkParams(name="d2h", bandwidth_bps=bandwidth_bps, latency_s=latency_s, channels=channels) if d2h else None,
        ssd=LinkParams(name="ssd", bandwidth_bps=ssd_bandwidth_bps, latency_s=ssd_latency_s)
        if host_capacity is not None else None,
        cache=CacheParams(capacity_experts=capacity, layout=layout, eviction=eviction,
                          eviction_params=dict(eviction_params or {}),
                          preload_keys=np.zeros(0, np.int64) if preload_keys is None else preload_keys),
        host=HostParams(capacity_experts=host_capacity, eviction=host_eviction, ssd_direct=ssd_direct),
        prefetch=PrefetchParams(predictor=predictor, lookahead_layers=lookahead, max_experts=max_experts,
                                chunk_bytes=chunk_bytes),
        miss=miss,
        **dict(zip(("release_offsets", "release_keys", "release_counts"), activation_releases(trace, plan))),
    )
