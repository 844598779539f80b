"""The SimPy engine against closed forms, invariants and the metrics' pinned hit counts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.metrics.hit_curve import hit_curve
from moesim.sim.des import run_des
from tests.sim_support import make_inputs, random_trace


def _trace(seed=0, **kwargs):
    params = dict(num_tokens=30, num_layers=3, num_experts=8, top_k=2, locality=0.5)
    params.update(kwargs)
    return random_trace(np.random.default_rng(seed), **params)


def _steps(result, name):
    return result.steps.column(name).to_numpy()


def test_infinite_bandwidth_and_zero_latency_give_compute_time_only():
    trace = _trace()
    inputs = make_inputs(trace, capacity=2, bandwidth_bps=1e30, latency_s=0.0)
    result = run_des(inputs)
    per_step = np.zeros(inputs.num_steps)
    for step in range(inputs.num_steps):
        per_step[step] = inputs.dense_s[step].sum() + inputs.head_s[step] + inputs.num_layers * inputs.combine_s
        for layer in range(inputs.num_layers):
            per_step[step] += inputs.expert_gpu_s[inputs.group(step, layer)].sum()
    np.testing.assert_allclose(_steps(result, "latency_s"), per_step, rtol=1e-12)
    assert _steps(result, "stall_s").max() < 1e-15
    assert result.summary["misses"] > 0  # the link was used, it was just free


def test_per_layer_quota_of_k_matches_the_closed_form():
    """Quota k per layer (LRU, pinned): the cache holds the previous token's experts; misses stream
    over one FIFO link back to back, kernels run in arrival order after the hits."""
    trace = _trace(seed=3, num_tokens=25)
    bw, lat, size = 2e9, 3e-5, 1_000_000
    inputs = make_inputs(trace, capacity=2, layout="per_layer", bandwidth_bps=bw, latency_s=lat, expert_bytes=size)
    result = run_des(inputs)
    transfer = lat + size / bw
    expected = []
    now = 0.0
    for step in range(inputs.num_steps):
        start = now
        for layer in range(inputs.num_layers):
            now += inputs.dense_s[step, layer]
            group = inputs.group(step, layer)
            ids = inputs.demand_ids[group].tolist()
            previous = set(trace.experts[step - 1, layer].tolist()) if step else set()
            gpu_free = now
            arrivals = []
            for offset, expert in enumerate(ids):
                kernel = inputs.expert_gpu_s[group.start + offset]
                if expert in previous:
                    gpu_free += kernel
                else:
                    arrivals.append(((len(arrivals) + 1) * transfer + now, kernel))
            for arrival, kernel in arrivals:
                gpu_free = max(gpu_free, arrival) + kernel
            now = gpu_free + inputs.combine_s
        now += inputs.head_s[step]
        expected.append(now - start)
    np.testing.assert_allclose(_steps(result, "latency_s"), expected, rtol=1e-12)


@settings(max_examples=25)
@given(seed=st.integers(0, 2**16), policy=st.sampled_from(["lru", "lfu", "fifo", "belady", "sch"]),
       per_layer=st.booleans(), extra=st.integers(0, 6), top_k=st.integers(1, 3))
def test_demand_hits_equal_pinned_kernel(seed, policy, per_layer, extra, top_k):
    """Prefetch off, batch 1: the simulator's hits are the metrics' pinned, cold-miss hit counts."""
    trace = _trace(seed, num_tokens=20, num_layers=3, num_experts=7, top_k=top_k, locality=0.4)
    capacity = top_k + extra if per_layer else min(top_k + 3 * extra, 21)
    params = {"segment": 4} if policy == "sch" else {}
    inputs = make_inputs(trace, capacity=capacity, layout="per_layer" if per_layer else "pool",
                         eviction=policy, eviction_params=params)
    result = run_des(inputs)
    segment = 4 if policy == "sch" else None
    if per_layer:
        for layer in range(trace.num_layers):
            curve = hit_curve(trace, policy, level="layer", layer=layer, segment=segment,
                              accounting="pinned", cold_fill="miss")
            got = result.layers.column("hits").to_numpy()[layer]
            assert got == curve.hits[0, min(capacity, trace.num_experts) - 1], (layer, capacity)
    else:
        curve = hit_curve(trace, policy, level="model", segment=segment, accounting="pinned", cold_fill="miss")
        assert result.summary["hits"] == curve.hits[0, capacity - 1]


def test_bytes_moved_equal_misses_and_prefetches_times_expert_bytes():
    trace = _trace(seed=5)
    inputs = make_inputs(trace, capacity=5, predictor="oracle", lookahead=2)
    result = run_des(inputs)
    s = result.summary
    assert s["prefetch"]["issued"] > 0
    assert s["h2d_bytes"] == (s["misses"] + s["prefetch"]["issued"]) * inputs.expert_bytes
    assert s["d2h_bytes"] == 0


def test_cache_holding_every_expert_only_pays_the_cold_start():
    trace = _trace(seed=6, num_tokens=40)
    inputs = make_inputs(trace, capacity=trace.num_experts * trace.num_layers)
    result = run_des(inputs)
    distinct = len({(layer, int(e)) for layer in range(trace.num_layers) for e in trace.experts[:, layer].ravel()})
    assert result.summary["misses"] == distinct
    assert result.summary["h2d_bytes"] == distinct * inputs.expert_bytes
    late_steps = _steps(result, "misses")[np.cumsum(_steps(result, "misses")) == distinct]
    assert late_steps[1:].sum() == 0


def test_oracle_prefetch_with_ample_bandwidth_removes_stall_after_the_first_layer():
    trace = _trace(seed=7, num_tokens=30)
    inputs = make_inputs(trace, capacity=trace.num_experts * trace.num_layers, predictor="oracle",
                         bandwidth_bps=1e12, latency_s=1e-6, eviction="belady")
    result = run_des(inputs)
    stall = result.layers.column("stall_s").to_numpy()
    assert stall[0] > 0 and stall[1:].sum() == 0
    demand = run_des(make_inputs(trace, capacity=inputs.cache.capacity_experts, bandwidth_bps=1e12, latency_s=1e-6))
    assert result.summary["total_time_s"] < demand.summary["total_time_s"]


def test_oracle_prefetch_cannot_beat_demand_fetching_on_a_saturated_link():
    trace = _trace(seed=8, num_tokens=30)
    common = dict(capacity=6, bandwidth_bps=1e8, latency_s=1e-4, dense_s=0.0, head_s=0.0, combine_s=0.0,
                  expert_gpu_s=(0.0, 0.0), eviction="belady")
    demand = run_des(make_inputs(trace, **common))
    oracle = run_des(make_inputs(trace, predictor="oracle", **common))
    per_fetch = 1e-4 + 1_000_000 / 1e8
    assert demand.summary["total_time_s"] == pytest.approx(demand.summary["misses"] * per_fetch, rel=1e-12)
    assert oracle.summary["total_time_s"] >= demand.summary["total_time_s"] * (1 - 1e-12)


@settings(max_examples=30)
@given(seed=st.integers(0, 2**16), miss=st.sampled_from(["fetch", "cpu", "best"]),
       predictor=st.sampled_from(["none", "oracle", "previous-token", "popularity"]),
       batch=st.integers(1, 3), chunk=st.sampled_from([None, 300_000]), channels=st.sampled_from([1, 2]),
       host=st.sampled_from([None, 5]), d2h=st.booleans())
def test_invariants_hold_for_any_configuration(seed, miss, predictor, batch, chunk, channels, host, d2h):
    trace = _trace(seed, num_tokens=16, num_seqs=3)
    inputs = make_inputs(trace, capacity=5, batch_size=batch, miss=miss, predictor=predictor,
                         chunk_bytes=chunk, channels=channels, host_capacity=host, d2h=d2h)
    result = run_des(inputs)
    s = result.summary
    total = s["total_time_s"]
    for name, value in s["utilisation"].items():
        assert value != value or 0 <= value <= 1 + 1e-12, name
    latency = _steps(result, "latency_s")
    parts = sum(_steps(result, c) for c in ("dense_s", "expert_gpu_s", "overhead_s", "stall_s"))
    np.testing.assert_allclose(latency, parts, rtol=1e-9, atol=1e-15)
    assert latency.sum() == pytest.approx(total, rel=1e-12)
    assert s["demands"] == len(inputs.demand_ids)
    assert s["hits"] + s["misses"] + s["late_prefetches"] == s["demands"]
    if miss == "fetch":
        assert s["cpu_experts"] == 0
    if miss == "cpu":
        assert s["cpu_experts"] == s["misses"]
    assert s["prefetch"]["useful"] + s["prefetch"]["wasted"] <= s["prefetch"]["issued"]
    again = run_des(inputs)
    assert again.steps.equals(result.steps)


def test_cpu_fallback_moves_activations_both_ways():
    """miss = cpu never fills the GPU cache: every demand runs on the CPU with its activations sent
    over d2h and the result back over h2d; with free links the layer takes max(GPU, CPU) work."""
    trace = _trace(seed=9, num_tokens=12)
    inputs = make_inputs(trace, capacity=2, miss="cpu")
    result = run_des(inputs)
    s = result.summary
    assert s["hits"] == 0 and s["cpu_experts"] == s["demands"] == len(inputs.demand_ids)
    assert s["d2h_bytes"] == s["h2d_bytes"] == int(inputs.activation_bytes.sum())
    free = run_des(make_inputs(trace, capacity=2, miss="cpu", bandwidth_bps=1e30, latency_s=0.0))
    for step in range(inputs.num_steps):
        expected = inputs.head_s[step]
        for layer in range(inputs.num_layers):
            expected += inputs.dense_s[step, layer] + inputs.expert_cpu_s[inputs.group(step, layer)].sum()
            expected += inputs.combine_s
        assert free.steps.column("latency_s")[step].as_py() == pytest.approx(expected, rel=1e-12)


def test_static_placement_serves_misses_around_a_frozen_cache():
    trace = _trace(seed=10, num_tokens=20)
    preload = np.array([0, 1, 8, 9, 16, 17], dtype=np.int64)  # experts 0 and 1 of each layer
    inputs = make_inputs(trace, capacity=6, eviction="static", preload_keys=preload)
    result = run_des(inputs)
    layer_of = np.repeat(np.tile(np.arange(trace.num_layers), inputs.num_steps), np.diff(inputs.demand_offsets))
    keys = layer_of * trace.num_experts + inputs.demand_ids
    resident = np.isin(keys, preload)
    s = result.summary
    assert s["hits"] == int(resident.sum())
    assert s["staged_experts"] == s["misses"] == int((~resident).sum())
    assert s["h2d_bytes"] == s["misses"] * inputs.expert_bytes


def _naive_activation_hits(trace, inputs, capacity):
    """Pinned, cold-miss cache over the simulator's demand stream, evicting the key the sequences
    in the batch activated least (ties: least recently used); batch 1 so one sequence at a time."""
    counts, last, cache, hits, clock = {}, {}, set(), 0, 0
    num_layers, num_experts = inputs.num_layers, inputs.num_experts
    seq_of_step = trace.seq_ids[inputs.step_rows]
    for step in range(inputs.num_steps):
        if step and seq_of_step[step] != seq_of_step[step - 1]:
            counts = {}  # the previous sequence left the batch
        for layer in range(num_layers):
            group = inputs.group(step, layer)
            keys = [layer * num_experts + int(e) for e in inputs.demand_ids[group]]
            present = [k in cache for k in keys]
            for key, tokens, hit in zip(keys, inputs.demand_tokens[group], present):
                clock += 1
                if hit:
                    hits += 1
                elif len(cache) >= capacity:
                    victim = min((k for k in cache if k not in keys), key=lambda k: (counts.get(k, 0), last.get(k, 0)))
                    cache.remove(victim)
                if not hit:
                    cache.add(key)
                    last.setdefault(key, clock)
                counts[key] = counts.get(key, 0) + int(tokens)
                last[key] = clock
    return hits


@pytest.mark.parametrize("seed", range(4))
def test_activation_aware_policy_follows_the_sequences_in_the_batch(seed):
    trace = _trace(seed, num_tokens=40, num_seqs=4, num_experts=6, top_k=2)
    inputs = make_inputs(trace, capacity=7, eviction="activation")
    result = run_des(inputs)
    assert result.summary["hits"] == _naive_activation_hits(trace, inputs, 7)
