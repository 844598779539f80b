"""Expert tiers as the simulator sees them: the GPU expert cache and CPU memory (backed by SSD).

Both wrap :class:`moesim.policies.eviction.ExpertCache` (the shared step-form mechanism and policy
hooks) and add what only a timed model has: experts whose transfer is *in flight* occupy a slot but
are not yet usable, and are never evicted; experts *pinned* by the layer being served are never
evicted either (the metrics' ``pinned`` accounting).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from moesim.policies.eviction import ExpertCache, make_policy
from moesim.sim.inputs import SimInputs

ABSENT, RESIDENT, IN_FLIGHT = 0, 1, 2


def demand_stream(inputs: SimInputs, layer: int | None):
    """The simulator's own request stream (for Belady/SCH): every demand group in the order the
    engine serves them; one 'token' per step. ``layer=None``: all layers (pool), else one layer."""
    from moesim.metrics.hit_curve import RequestStream

    num_steps, num_layers, num_experts = inputs.num_steps, inputs.num_layers, inputs.num_experts
    offsets = inputs.demand_offsets
    group_layer = np.tile(np.arange(num_layers), num_steps)
    sizes = np.diff(offsets)
    key_layer = np.repeat(group_layer, sizes)
    keys = (key_layer * num_experts + inputs.demand_ids).astype(np.int32)
    if layer is None:
        group_offsets = offsets.astype(np.int64)
        group_token = np.repeat(np.arange(num_steps, dtype=np.int64), num_layers)
    else:
        keys = keys[key_layer == layer]
        group_offsets = np.concatenate([[0], np.cumsum(sizes[layer::num_layers])]).astype(np.int64)
        group_token = np.arange(num_steps, dtype=np.int64)
    return RequestStream(
        keys=keys,
        group_offsets=group_offsets,
        group_token=group_token,
        seq_group_offsets=np.array([0, len(group_token)], dtype=np.int64),
        num_keys=num_layers * num_experts,
    )


class Tier:
    """Slots run by an eviction policy, with in-flight loads and pins. One or several caches
    (per-layer quota: one per MoE layer, chosen by ``key // num_experts``)."""

    def __init__(self, caches: list[ExpertCache], num_experts: int):
        self.caches = caches
        self.num_experts = num_experts
        self.in_flight: dict[int, Any] = {}  # key -> the transfer bringing it in
        self.pinned: set[int] = set()

    def cache_of(self, key: int) -> ExpertCache:
        return self.caches[0] if len(self.caches) == 1 else self.caches[key // self.num_experts]

    def status(self, key: int) -> int:
        if key in self.in_flight:
            return IN_FLIGHT
        return RESIDENT if key in self.cache_of(key) else ABSENT

    def can_take(self, key: int, also: set[int] | frozenset[int] = frozenset()) -> bool:
        """A slot is free or can be freed without touching pinned or in-flight experts (or ``also``)."""
        cache = self.cache_of(key)
        if len(cache) < cache.capacity_experts:
            return True
        return cache.policy.victim(self._protected(also)) is not None

    def _protected(self, also: set[int] | frozenset[int] = frozenset()) -> set[int]:
        protected = self.pinned.union(self.in_flight) if self.in_flight else self.pinned
        return protected.union(also) if also else protected

    def reserve(self, key: int, transfer: Any, also: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """Take a slot for ``key`` (evicting by the policy, never a pinned or in-flight expert nor one
        in ``also``) and mark it in flight; returns the evicted keys."""
        evicted = self.cache_of(key).insert(key, pinned=self._protected(also))
        self.in_flight[key] = transfer
        return evicted

    def arrived(self, key: int) -> None:
        self.in_flight.pop(key, None)

    # -- request bookkeeping for the policy (recency, counts, the future's cursor), in the order
    # ExpertCache.request uses: begin, then (evict and) insert on a load, then served or bypassed.
    def begin(self, key: int) -> None:
        self.cache_of(key).policy.begin_request(key)

    def served(self, key: int) -> None:
        """The request of ``key`` was served from this tier (hit, late prefetch, or loaded for it)."""
        self.cache_of(key).policy.on_served(key)

    def bypassed(self, key: int) -> None:
        """The request of ``key`` was served without it entering this tier (CPU, staging)."""
        self.cache_of(key).policy.on_bypassed(key)

    def preload(self, keys: np.ndarray) -> None:
        for key in np.asarray(keys, dtype=np.int64).tolist():
            cache = self.cache_of(key)
            if key not in cache and len(cache) < cache.capacity_experts:
                cache.insert(key)


def gpu_tier(inputs: SimInputs) -> Tier:
    params = inputs.cache
    num_caches = inputs.num_layers if params.layout == "per_layer" else 1
    caches = []
    for index in range(num_caches):
        layer = index if num_caches > 1 else None
        future = demand_stream(inputs, layer) if _needs_future(params.eviction) else None
        if params.eviction == "activation":
            future = activation_feed(inputs, future, layer)
        policy = make_policy(params.eviction, params.eviction_params, future=future, field="cache.eviction")
        caches.append(ExpertCache(params.capacity_experts, policy))
    tier = Tier(caches, inputs.num_experts)
    tier.preload(params.preload_keys)
    return tier


def activation_feed(inputs: SimInputs, stream, layer: int | None):
    """The activation-aware policy's view of one cache: request token counts and, per group, the
    activations of departed sequences (only this cache's keys)."""
    from moesim.policies.eviction import ActivationFeed

    num_layers, num_experts, num_steps = inputs.num_layers, inputs.num_experts, inputs.num_steps
    tokens = inputs.demand_tokens.astype(np.int64)
    offsets, keys, counts = inputs.release_offsets, inputs.release_keys, inputs.release_counts
    if offsets is None:
        offsets, keys, counts = np.zeros(num_steps + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    release_step = np.repeat(np.arange(num_steps), np.diff(offsets))
    if layer is not None:
        group_layer = np.repeat(np.tile(np.arange(num_layers), num_steps), np.diff(inputs.demand_offsets))
        tokens = tokens[group_layer == layer]
        mine = keys // num_experts == layer
        keys, counts, release_step = keys[mine], counts[mine], release_step[mine]
        group_of_release, num_groups = release_step, num_steps
    else:
        group_of_release, num_groups = release_step * num_layers, num_steps * num_layers
    group_offsets = np.searchsorted(group_of_release, np.arange(num_groups + 1)).astype(np.int64)
    return ActivationFeed(stream=stream, request_tokens=tokens, release_offsets=group_offsets,
                          release_keys=keys, release_counts=counts)


def host_tier(inputs: SimInputs) -> Tier | None:
    """CPU memory as a cache over SSD, or None when it holds every expert."""
    params = inputs.host
    if params.capacity_experts is None:
        return None
    policy = make_policy(params.eviction, {}, field="offload.host_eviction")
    tier = Tier([ExpertCache(params.capacity_experts, policy)], inputs.num_experts)
    tier.preload(params.preload_keys)
    return tier


def _needs_future(name: str) -> bool:
    from moesim.policies.eviction import EVICTION

    return bool(getattr(EVICTION.get(name, field="cache.eviction"), "needs_future", False))
