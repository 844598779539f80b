"""Memory planning: how many experts the GPU (and CPU memory) can hold for a scenario.

GPU memory = non-expert weights + KV cache for the batch at its longest context + staging buffers
(``top_k`` experts, for misses that find every slot pinned) + a reserve for activations and
workspace + the expert cache. ``capacity = "auto"`` gives the cache whatever is left. The same
planner serves the simulator, ``moesim run`` output and the scaling studies.
"""

from __future__ import annotations

from dataclasses import dataclass

from moesim.errors import ConfigError
from moesim.units import format_bytes


@dataclass(frozen=True, kw_only=True)
class MemoryPlan:
    """Bytes by use on the GPU and in CPU memory, and the resulting expert capacities."""

    gpu_bytes: int
    non_expert_bytes: int
    kv_cache_bytes: int
    staging_bytes: int
    reserve_bytes: int
    expert_bytes: int  # one routed expert
    total_experts: int  # routed experts in the model (all MoE layers)
    cache_slots: int  # GPU expert slots in total
    capacity_experts: int  # per cache: the pool, or each layer's quota
    layout: str
    host_bytes: int
    host_reserve_bytes: int
    host_slots: int | None  # None: CPU memory holds every expert

    @property
    def cache_bytes(self) -> int:
        return self.cache_slots * self.expert_bytes

    @property
    def gpu_free_bytes(self) -> int:
        return self.gpu_bytes - self.non_expert_bytes - self.kv_cache_bytes - self.staging_bytes - self.reserve_bytes - self.cache_bytes

    @property
    def fits_entirely(self) -> bool:
        return self.cache_slots >= self.total_experts

    def as_dict(self) -> dict[str, int | str | None]:
        return {
            "gpu_bytes": self.gpu_bytes,
            "non_expert_bytes": self.non_expert_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "staging_bytes": self.staging_bytes,
            "reserve_bytes": self.reserve_bytes,
            "expert_bytes": self.expert_bytes,
            "cache_slots": self.cache_slots,
            "capacity_experts": self.capacity_experts,
            "layout": self.layout,
            "total_experts": self.total_experts,
            "host_bytes": self.host_bytes,
            "host_slots": self.host_slots,
        }


def plan_memory(model, hardware, *, capacity: int | str, layout: str, reserve_bytes: int,
                batch_size: int, max_context: int, kv_format: str,
                host_capacity: int | str, host_reserve_bytes: int, has_ssd: bool) -> MemoryPlan:
    """Size the GPU expert cache and the CPU-memory tier; ConfigError when something cannot fit."""
    expert_bytes = model.expert_bytes()
    num_layers = model.num_moe_layers
    total_experts = model.num_experts * num_layers
    gpu_bytes = int(hardware.gpu.hbm_bytes)
    non_expert = int(model.non_expert_bytes())
    kv_cache = int(batch_size * model.kv_bytes(max_context, kv_format))
    staging = model.top_k * expert_bytes
    taken = non_expert + kv_cache + staging + reserve_bytes
    free = gpu_bytes - taken
    per_cache_max = model.num_experts if layout == "per-layer" else total_experts
    caches = num_layers if layout == "per-layer" else 1
    breakdown = (
        f"{hardware.gpu.name} has {format_bytes(gpu_bytes)}: non-expert weights {format_bytes(non_expert)}, "
        f"KV cache {format_bytes(kv_cache)} (batch {batch_size} x {max_context} tokens), staging "
        f"{format_bytes(staging)}, reserve {format_bytes(reserve_bytes)}"
    )
    fit = max(free, 0) // expert_bytes // caches
    if capacity == "auto":
        if fit < model.top_k:
            raise ConfigError(
                f"cache.capacity: 'auto' leaves room for {fit} experts{' per layer' if caches > 1 else ''}, "
                f"fewer than top_k ({model.top_k}); {breakdown}; lower the batch, context or cache.reserve, "
                f"use a smaller weight format, or a larger GPU"
            )
        per_cache = min(fit, per_cache_max)
    else:
        per_cache = int(capacity)
        if per_cache > per_cache_max:
            raise ConfigError(
                f"cache.capacity: {per_cache} exceeds the {per_cache_max} experts "
                f"{'of one layer' if caches > 1 else 'of the model'}; use at most {per_cache_max}"
            )
        if per_cache < model.top_k:
            raise ConfigError(
                f"cache.capacity: {per_cache} is below top_k ({model.top_k}); a layer's experts must fit "
                f"at once (use >= {model.top_k})"
            )
        if per_cache > fit:
            raise ConfigError(
                f"cache.capacity: {per_cache} experts{' per layer' if caches > 1 else ''} need "
                f"{format_bytes(per_cache * caches * expert_bytes)} but only {fit * caches} fit; {breakdown}"
            )
    host_bytes = int(hardware.cpu.dram_bytes)
    host_fit = max(host_bytes - host_reserve_bytes, 0) // expert_bytes
    if host_capacity == "all":
        if host_fit < total_experts:
            raise ConfigError(
                f"offload.host_capacity: 'all' needs {format_bytes(total_experts * expert_bytes)} for "
                f"{total_experts} experts but CPU memory has {format_bytes(host_bytes)} minus a "
                f"{format_bytes(host_reserve_bytes)} reserve; use 'auto' with an SSD tier or more memory"
            )
        host_slots = None
    else:
        host_slots = host_fit if host_capacity == "auto" else int(host_capacity)
        if host_capacity != "auto" and host_slots > host_fit:
            raise ConfigError(
                f"offload.host_capacity: {host_slots} experts need {format_bytes(host_slots * expert_bytes)} "
                f"but CPU memory holds {host_fit} after the reserve"
            )
        if host_slots >= total_experts:
            host_slots = None
        elif not has_ssd:
            raise ConfigError(
                f"offload.host_capacity: CPU memory holds {host_slots} of {total_experts} experts and "
                f"the hardware has no SSD for the rest; pick hardware with an ssd or more memory"
            )
        elif host_slots < 1:
            raise ConfigError("offload.host_capacity: CPU memory holds no expert; lower offload.host_reserve")
    return MemoryPlan(
        gpu_bytes=gpu_bytes,
        non_expert_bytes=non_expert,
        kv_cache_bytes=kv_cache,
        staging_bytes=staging,
        reserve_bytes=reserve_bytes,
        expert_bytes=expert_bytes,
        total_experts=total_experts,
        cache_slots=per_cache * caches,
        capacity_experts=per_cache,
        layout=layout,
        host_bytes=host_bytes,
        host_reserve_bytes=host_reserve_bytes,
        host_slots=host_slots,
    )
