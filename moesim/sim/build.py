"""From (trace, scenario) to the engine-agnostic :class:`~moesim.sim.inputs.SimInputs`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.errors import ConfigError
from moesim.scenario import Scenario
from moesim.sim import costs
from moesim.sim.inputs import CacheParams, HostParams, LinkParams, PrefetchParams, SimInputs
from moesim.sim.memory import MemoryPlan, plan_memory
from moesim.trace import Trace


@dataclass(frozen=True)
class Plan:
    """The batch schedule of a run (which trace rows each step processes) and its demand sets."""

    step_offsets: np.ndarray
    step_rows: np.ndarray
    step_phase: np.ndarray
    demand_offsets: np.ndarray
    demand_ids: np.ndarray
    demand_tokens: np.ndarray
    predicted_offsets: np.ndarray | None
    predicted_ids: np.ndarray | None

    @property
    def num_steps(self) -> int:
        return len(self.step_phase)


def check_trace_matches_model(trace: Trace, model) -> None:
    problems = []
    if trace.num_layers != model.num_moe_layers:
        problems.append(f"{trace.num_layers} MoE layers vs the model's {model.num_moe_layers}")
    if trace.num_experts != model.num_experts:
        problems.append(f"E={trace.num_experts} vs the model's {model.num_experts}")
    if trace.top_k != model.top_k:
        problems.append(f"k={trace.top_k} vs the model's {model.top_k}")
    if problems:
        raise ConfigError(
            f"trace: {trace.model or 'the trace'} does not fit model '{model.name}' ({'; '.join(problems)}); "
            f"use the matching model preset, override model.num_experts/top_k/moe_layers, or another trace"
        )


def plan_run(trace: Trace, *, batch_size: int, prefill: bool, prefill_chunk: int, max_steps: int | None) -> Plan:
    """Schedule the trace's rows into steps (continuous batching) and compute the demand sets."""
    from moesim.kernels.plan import demand_sets, schedule_steps

    step_offsets, step_rows, step_phase = schedule_steps(
        trace.seq_offsets, trace.phases, int(batch_size), bool(prefill), int(prefill_chunk)
    )
    if max_steps is not None and len(step_phase) > max_steps:
        step_offsets = step_offsets[: max_steps + 1]
        step_rows = step_rows[: step_offsets[-1]]
        step_phase = step_phase[:max_steps]
    experts = np.ascontiguousarray(trace.experts)
    offsets, ids, tokens = demand_sets(experts, step_offsets, step_rows, trace.num_experts)
    predicted_offsets = predicted_ids = None
    if trace.predicted_experts is not None:
        predicted_offsets, predicted_ids, _ = demand_sets(
            np.ascontiguousarray(trace.predicted_experts), step_offsets, step_rows, trace.num_experts
        )
    return Plan(step_offsets, step_rows, step_phase, offsets, ids, tokens, predicted_offsets, predicted_ids)


def activation_releases(trace: Trace, plan: Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step, the (key, count) activations of sequences whose last scheduled row was in an
    earlier step: what leaves the batch's expert activation matrix at that step's start.
    Keys are ``layer * E + expert``; counts are tokens. Returns (offsets [S+1], keys, counts)."""
    num_steps = plan.num_steps
    step_of_row = np.repeat(np.arange(num_steps, dtype=np.int64), np.diff(plan.step_offsets))
    seq_of_row = trace.seq_ids[plan.step_rows]
    _, seq_index = np.unique(seq_of_row, return_inverse=True)
    last_step = np.full(seq_index.max() + 1 if len(seq_index) else 0, -1, dtype=np.int64)
    np.maximum.at(last_step, seq_index, step_of_row)
    release_step = last_step[seq_index] + 1  # per scheduled row
    experts = trace.experts[plan.step_rows]  # [R, L, k]
    num_layers = experts.shape[1]
    keys = (np.arange(num_layers)[None, :, None] * trace.num_experts + experts).reshape(len(experts), -1)
    valid = (experts >= 0).reshape(len(experts), -1) & (release_step < num_steps)[:, None]
    steps = np.broadcast_to(release_step[:, None], keys.shape)[valid]
    keys = keys[valid]
    combined = steps * (num_layers * trace.num_experts) + keys
    unique, counts = np.unique(combined, return_counts=True)
    rel_steps = unique // (num_layers * trace.num_experts)
    offsets = np.searchsorted(rel_steps, np.arange(num_steps + 1)).astype(np.int64)
    return offsets, (unique % (num_layers * trace.num_experts)).astype(np.int64), counts.astype(np.int64)


def _popular_keys(plan: Plan, num_layers: int, num_experts: int, capacity: int, per_layer: bool) -> np.ndarray:
    group_layer = np.tile(np.arange(num_layers), plan.num_steps)
    keys = np.repeat(group_layer, np.diff(plan.demand_offsets)) * num_experts + plan.demand_ids
    counts = np.bincount(keys, minlength=num_layers * num_experts)
    order = np.lexsort((np.arange(len(counts)), -counts))  # most demanded, then lowest key
    order = order[counts[order] > 0]
    if not per_layer:
        return order[:capacity].astype(np.int64)
    chosen = [order[order // num_experts == layer][:capacity] for layer in range(num_layers)]
    return np.concatenate(chosen).astype(np.int64) if chosen else np.zeros(0, dtype=np.int64)


def _link(name: str, spec) -> LinkParams:
    return LinkParams(name=name, bandwidth_bps=float(spec.effective_bps), latency_s=float(spec.latency_s),
                      channels=int(spec.channels))


def build_inputs(trace: Trace, scenario: Scenario) -> tuple[SimInputs, MemoryPlan]:
    """Resolve ``scenario`` against ``trace``: schedule, costs, memory plan and policies."""
    model, hw, work = scenario.model, scenario.hardware, scenario.workload
    if scenario.trace.max_sequences is not None and scenario.trace.max_sequences < trace.num_sequences:
        trace = trace.select(seqs=trace.sequence_ids[: scenario.trace.max_sequences])
    check_trace_matches_model(trace, model)
    plan = plan_run(trace, batch_size=work.batch_size, prefill=work.prefill, prefill_chunk=work.prefill_chunk,
                    max_steps=work.max_steps)
    if plan.num_steps == 0:
        raise ConfigError(
            "trace: nothing to simulate (no decode rows"
            + (")" if work.prefill else "; the trace may hold only prefill rows: set workload.prefill = true)")
        )
    shape = costs.step_shape(trace.positions, trace.seq_ids, plan.step_offsets, plan.step_rows, plan.step_phase)
    gpu, cpu = hw.gpu, hw.cpu
    gpu_flops = gpu.flops_for(work.compute_dtype)
    dense_s, head_s = costs.dense_times_s(model, shape, gpu_flops=gpu_flops, hbm_bps=gpu.hbm_bps,
                                          launch_s=gpu.launch_s, kv_format=work.kv_format)
    head_s = head_s + scenario.timing.sampling_s
    expert_bytes = model.expert_bytes()
    tokens = plan.demand_tokens.astype(np.float64)
    expert_flops = tokens * model.expert_flops_per_token
    expert_gpu_s = costs.gpu_time_s(expert_flops, np.full(len(tokens), float(expert_bytes)), gpu_flops,
                                    gpu.hbm_bps, gpu.launch_s)
    expert_cpu_s = np.maximum(expert_flops / cpu.flops_for(work.compute_dtype), expert_bytes / cpu.dram_bps)
    activation_bytes = plan.demand_tokens.astype(np.int64) * model.hidden_size * work.activation_bytes

    max_context = int(trace.positions.max()) + 1 if trace.num_tokens else 1
    memory = plan_memory(
        model, hw, capacity=scenario.cache.capacity, layout=scenario.cache.layout,
        reserve_bytes=scenario.cache.reserve_bytes, batch_size=work.batch_size, max_context=max_context,
        kv_format=work.kv_format, host_capacity=scenario.offload.host_capacity,
        host_reserve_bytes=scenario.offload.host_reserve_bytes, has_ssd=hw.ssd is not None,
    )
    per_layer = scenario.cache.layout == "per-layer"
    num_layers, num_experts = model.num_moe_layers, model.num_experts
    preload = np.zeros(0, dtype=np.int64)
    if scenario.cache.preload == "popular":
        preload = _popular_keys(plan, num_layers, num_experts, memory.capacity_experts, per_layer)
    host_preload = np.zeros(0, dtype=np.int64)
    if memory.host_slots is not None:
        if scenario.offload.host_preload == "ordered":
            host_preload = np.arange(memory.host_slots, dtype=np.int64)
        elif scenario.offload.host_preload == "popular":
            host_preload = _popular_keys(plan, num_layers, num_experts, memory.host_slots, False)

    ssd = None
    if memory.host_slots is not None:
        if scenario.offload.ssd_direct:
            if hw.ssd_gpu_link is None:
                raise ConfigError(
                    f"offload.ssd_direct: hardware '{hw.name}' has no SSD -> GPU path (ssd_gpu_link); "
                    f"set ssd_direct = false or add hardware.ssd_gpu_link"
                )
            bps = min(hw.ssd.read_bps, hw.ssd_gpu_link.effective_bps)
            latency = hw.ssd.latency_s + hw.ssd_gpu_link.latency_s
        else:
            bps, latency = hw.ssd_read_bps, hw.ssd.latency_s + hw.ssd_link.latency_s
        ssd = LinkParams(name="ssd", bandwidth_bps=float(bps), latency_s=float(latency), channels=1)

    inputs = SimInputs(
        num_steps=plan.num_steps,
        num_layers=num_layers,
        num_experts=num_experts,
        top_k=model.top_k,
        step_phase=plan.step_phase,
        step_num_tokens=shape.num_tokens.astype(np.int32),
        step_row_offsets=plan.step_offsets,
        step_rows=plan.step_rows,
        demand_offsets=plan.demand_offsets,
        demand_ids=plan.demand_ids,
        demand_tokens=plan.demand_tokens,
        predicted_offsets=plan.predicted_offsets,
        predicted_ids=plan.predicted_ids,
        dense_s=dense_s,
        head_s=head_s,
        combine_s=scenario.timing.combine_s,
        expert_gpu_s=expert_gpu_s,
        expert_cpu_s=expert_cpu_s,
        activation_bytes=activation_bytes,
        expert_bytes=int(expert_bytes),
        h2d=_link("h2d", hw.h2d),
        d2h=_link("d2h", hw.d2h) if hw.h2d.duplex else None,
        ssd=ssd,
        cache=CacheParams(capacity_experts=memory.capacity_experts, layout=scenario.cache.layout.replace("-", "_"),
                          eviction=scenario.cache.eviction, eviction_params=dict(scenario.cache.eviction_params),
                          preload_keys=preload),
        host=HostParams(capacity_experts=memory.host_slots, eviction=scenario.offload.host_eviction,
                        preload_keys=host_preload, ssd_direct=scenario.offload.ssd_direct),
        prefetch=PrefetchParams(predictor=scenario.prefetch.predictor, lookahead_layers=scenario.prefetch.lookahead,
                                max_experts=scenario.prefetch.max_experts, chunk_bytes=scenario.prefetch.chunk_bytes),
        miss=scenario.offload.miss,
        seed=scenario.seed,
        **dict(zip(("release_offsets", "release_keys", "release_counts"), activation_releases(trace, plan))),
    )
    return inputs, memory
