"""The reference engine: a SimPy discrete-event model of one MoE inference run.

Semantics (``/docs`` in README "How the simulator models a step"; both engines implement them):

* Resources: ``gpu`` (one compute stream) and ``cpu`` are FIFO servers; ``h2d``/``d2h`` (host<->GPU,
  one server per direction, or one shared server when the link is half duplex) and ``ssd`` are
  :class:`~moesim.sim.components.Link` s: demand transfers before prefetches not yet started, each
  class in issue order; a transfer of ``b`` bytes takes ``latency_s + b / bandwidth_bps``.
* A step runs each MoE layer in order: its dense work on the GPU; then its demand set D_l is known.
  Each expert of D_l, in first-appearance order: resident (transfer complete) -> a hit, its kernel is
  ready at once; in flight as a prefetch -> a *late prefetch* (promoted to demand priority), its
  kernel waits for the transfer; absent -> a miss, handled by the miss policy: ``fetch`` reserves a
  slot (evicting by the policy among experts neither in D_l nor in flight; with no such slot the
  expert is *staged*: fetched into a transient buffer and not cached) and its kernel waits for the
  transfer (from CPU memory, after an SSD read when CPU memory lacks it); ``cpu`` sends the
  activations to the CPU, runs the expert there and sends the result back. Resident kernels run while
  misses stream in. Then prefetches are issued for the predictor's target layer, in prediction
  order, each reserving a slot by the policy among experts that are neither pinned, in flight nor
  predicted in the same batch (none free: the rest are skipped). The layer ends when
  all of D_l is done, plus ``combine_s`` on the GPU. The step ends after the head work.
* Hit accounting equals the metrics' ``pinned`` mode; the eviction policy sees the same call
  sequence as :meth:`moesim.policies.eviction.ExpertCache.request_group`.
* GPU idle time inside a step is *stall*, charged to what the GPU waited for (a transfer, or a CPU
  result), so ``latency = dense + expert kernels + overhead + stall`` for every step.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
import simpy

from moesim.policies import miss as miss_policy
from moesim.policies.prefetch import make_predictor
from moesim.sim.components import DEMAND, PREFETCH, ComputeUnit, Link, Transfer
from moesim.sim.inputs import LinkParams, SimInputs
from moesim.sim.result import Result, StepColumns, Totals, build_result
from moesim.sim.tiers import ABSENT, IN_FLIGHT, RESIDENT, Tier, gpu_tier, host_tier


@dataclass
class Fetch:
    """An expert on its way to the GPU: one or more transfer stages (SSD read, host->GPU copy)."""

    key: int
    priority_class: int
    cached: bool
    issued_s: float
    done: simpy.Event
    stages: list[tuple[Link, Transfer]] = field(default_factory=list)


def _link(env: simpy.Environment, params: LinkParams, chunk_bytes: int | None) -> Link:
    return Link(
        env,
        params.name,
        bandwidth_bps=params.bandwidth_bps,
        latency_s=params.latency_s,
        channels=params.channels,
        chunk_bytes=chunk_bytes,
    )


class DesEngine:
    """Runs :class:`SimInputs` through SimPy; :meth:`run` returns the :class:`Result`."""

    name = "des"

    def __init__(self, inputs: SimInputs):
        self.inputs = inputs
        env = self.env = simpy.Environment()
        chunk = inputs.prefetch.chunk_bytes
        self.gpu = ComputeUnit(env, "gpu")
        self.cpu = ComputeUnit(env, "cpu")
        self.h2d = _link(env, inputs.h2d, chunk)
        self.d2h = _link(env, inputs.d2h, None) if inputs.d2h is not None else self.h2d
        self.ssd = _link(env, inputs.ssd, chunk) if inputs.ssd is not None else None
        self.cache: Tier = gpu_tier(inputs)
        self.host: Tier | None = host_tier(inputs)
        self.predictor = make_predictor(inputs)
        # The registry's name: an unknown or differently spelled one would otherwise route to the CPU.
        self.miss = miss_policy.MISS.canonical(inputs.miss, field="offload.miss")
        self.columns = StepColumns(inputs.num_steps, inputs.num_layers)
        self.step = 0
        self.prefetched_unused: set[int] = set()
        self.horizon = {"h2d": 0.0, "d2h": 0.0, "cpu": 0.0, "ssd": 0.0}
        self.demand_fetches = 0
        self.demand_fetch_wait_s = 0.0
        self.host_loads: dict[int, simpy.Event] = {}

    # ------------------------------------------------------------------ run
    def run(self) -> Result:
        # Stop when the last step ends: prefetches still in flight then are wasted work, not time.
        self.env.run(until=self.env.process(self.serve()))
        inputs = self.inputs
        totals = Totals(
            total_time_s=float(self.env.now),
            gpu_busy_s=self.gpu.busy_s,
            cpu_busy_s=self.cpu.busy_s,
            h2d_busy_s=self.h2d.busy_time_s(),
            d2h_busy_s=self.d2h.busy_time_s() if self.d2h is not self.h2d else 0.0,
            ssd_busy_s=self.ssd.busy_time_s() if self.ssd is not None else 0.0,
            prefetched_never_used=len(self.prefetched_unused),
            demand_fetches=self.demand_fetches,
            demand_fetch_wait_s=self.demand_fetch_wait_s,
        )
        return build_result(self.columns, totals, engine=self.name, moe_layers=tuple(range(inputs.num_layers)))

    def serve(self) -> Generator:
        for step in range(self.inputs.num_steps):
            yield from self.decode_step(step)

    # ------------------------------------------------------------------ one step
    def decode_step(self, step: int) -> Generator:
        inputs, gpu, steps = self.inputs, self.gpu, self.columns.steps
        self.step = step
        start_s = self.env.now
        busy0 = gpu.busy_s
        kinds0 = dict(gpu.busy_by_kind_s)
        stall0 = dict(gpu.stall_by_reason_s)
        for layer in range(inputs.num_layers):
            yield from gpu.run(float(inputs.dense_s[step, layer]), "dense")
            stall_before = sum(gpu.stall_by_reason_s.values())
            yield from self.serve_layer(step, layer)
            self.columns.layers["stall_s"][layer] += sum(gpu.stall_by_reason_s.values()) - stall_before
        yield from gpu.run(float(inputs.head_s[step]), "overhead")
        end_s = self.env.now

        def delta(now: dict, before: dict, key: str) -> float:
            return now.get(key, 0.0) - before.get(key, 0.0)

        steps["phase"][step] = inputs.step_phase[step]
        steps["num_tokens"][step] = inputs.step_num_tokens[step]
        steps["start_s"][step] = start_s
        steps["end_s"][step] = end_s
        steps["latency_s"][step] = end_s - start_s
        steps["gpu_busy_s"][step] = gpu.busy_s - busy0
        steps["dense_s"][step] = delta(gpu.busy_by_kind_s, kinds0, "dense")
        steps["expert_gpu_s"][step] = delta(gpu.busy_by_kind_s, kinds0, "expert")
        steps["overhead_s"][step] = delta(gpu.busy_by_kind_s, kinds0, "overhead")
        steps["stall_fetch_s"][step] = delta(gpu.stall_by_reason_s, stall0, "fetch")
        steps["stall_cpu_s"][step] = delta(gpu.stall_by_reason_s, stall0, "cpu")
        steps["stall_s"][step] = steps["stall_fetch_s"][step] + steps["stall_cpu_s"][step]

    def _count(self, column: str, amount: int = 1, layer: int | None = None) -> None:
        self.columns.steps[column][self.step] += amount
        if layer is not None and column in self.columns.layers:
            self.columns.layers[column][layer] += amount

    # ------------------------------------------------------------------ one MoE layer
    def serve_layer(self, step: int, layer: int) -> Generator:
        inputs, cache = self.inputs, self.cache
        group = inputs.group(step, layer)
        ids = inputs.demand_ids[group]
        keys = [layer * inputs.num_experts + int(e) for e in ids]
        statuses = [cache.status(key) for key in keys]  # judged before any load (pinned accounting)
        cache.pinned = set(keys)
        self.predictor.observe(step, layer, ids.astype(np.int64))
        pending = []
        for offset, key in enumerate(keys):
            demand = group.start + offset
            cache.begin(key)
            status = statuses[offset]
            if status == RESIDENT:
                self._count("hits", layer=layer)
                cache.served(key)
                self._used(key)
                pending.append(self.env.process(self.run_expert(demand, None)))
            elif status == IN_FLIGHT:
                self._count("late_prefetches", layer=layer)
                cache.served(key)
                self._used(key)
                fetch = cache.in_flight[key]
                self._promote(fetch)
                pending.append(self.env.process(self.run_expert(demand, fetch.done)))
            else:
                self._count("misses", layer=layer)
                route = self._route(demand, key)
                if route == miss_policy.FETCH:
                    if cache.can_take(key):
                        fetch = self._new_fetch(key, DEMAND, cached=True)
                        self._evicted(cache.reserve(key, fetch))
                        cache.served(key)
                    else:
                        fetch = self._new_fetch(key, DEMAND, cached=False)
                        cache.bypassed(key)
                        self._count("staged_experts")
                    self._start_fetch(fetch, layer)
                    pending.append(self.env.process(self.run_expert(demand, fetch.done)))
                else:
                    cache.bypassed(key)
                    self._count("cpu_experts", layer=layer)
                    pending.append(self.env.process(self.run_on_cpu(demand, key)))
        self.issue_prefetches(step, layer)
        yield self.env.all_of(pending)
        yield from self.gpu.run(inputs.combine_s, "overhead", waited_on="cpu")
        cache.pinned = set()

    def run_expert(self, demand: int, ready: simpy.Event | None) -> Generator:
        if ready is not None:
            yield ready
        yield from self.gpu.run(float(self.inputs.expert_gpu_s[demand]), "expert",
                                waited_on=None if ready is None else "fetch")

    def run_on_cpu(self, demand: int, key: int) -> Generator:
        inputs = self.inputs
        act_bytes = int(inputs.activation_bytes[demand])
        if self.host is not None and self.host.status(key) != RESIDENT:
            yield from self.load_into_host(key, DEMAND)
        elif self.host is not None:
            self.host.begin(key)
            self.host.served(key)
        outbound = self.d2h.new_transfer(act_bytes, DEMAND, "activations")
        self._count("d2h_bytes", act_bytes)
        yield from self.d2h.send(outbound)
        yield from self.cpu.run(float(inputs.expert_cpu_s[demand]), "expert")
        inbound = self.h2d.new_transfer(act_bytes, DEMAND, "result")
        self._count("h2d_bytes", act_bytes)
        yield from self.h2d.send(inbound)

    # ------------------------------------------------------------------ transfers
    def _new_fetch(self, key: int, priority_class: int, *, cached: bool) -> Fetch:
        return Fetch(key, priority_class, cached, self.env.now, self.env.event())

    def _start_fetch(self, fetch: Fetch, layer: int | None) -> None:
        self.env.process(self.fetch_expert(fetch, layer))

    def fetch_expert(self, fetch: Fetch, layer: int | None) -> Generator:
        inputs, key = self.inputs, fetch.key
        size = inputs.expert_bytes
        host = self.host
        direct = False
        if host is not None:
            if host.status(key) == RESIDENT:
                host.begin(key)
                host.served(key)
            elif inputs.host.ssd_direct:
                direct = True
                host.begin(key)
                host.bypassed(key)
                yield from self._send(self.ssd, fetch, size, "ssd_bytes")
            else:
                yield from self.load_into_host(key, fetch.priority_class, fetch)
        if not direct:
            if layer is not None:
                self.columns.layers["h2d_bytes"][layer] += size
            yield from self._send(self.h2d, fetch, size, "h2d_bytes")
        if fetch.cached:
            self.cache.arrived(key)
        if fetch.priority_class == DEMAND:
            self.demand_fetches += 1
            self.demand_fetch_wait_s += self.env.now - fetch.issued_s
        fetch.done.succeed()

    def _send(self, link: Link, fetch: Fetch, size: int, column: str) -> Generator:
        transfer = link.new_transfer(size, fetch.priority_class, "expert")
        fetch.stages.append((link, transfer))
        self._count(column, size)
        yield from link.send(transfer)

    def load_into_host(self, key: int, priority_class: int, fetch: Fetch | None = None) -> Generator:
        """SSD -> CPU memory for ``key`` (caching it there when a slot can be freed)."""
        host = self.host
        assert host is not None and self.ssd is not None
        if host.status(key) == IN_FLIGHT:
            host.begin(key)
            host.served(key)
            yield self.host_loads[key]
            return
        host.begin(key)
        carrier = fetch or self._new_fetch(key, priority_class, cached=False)
        if host.can_take(key):
            host.reserve(key, carrier)
            host.served(key)
            arrived = self.env.event()
            self.host_loads[key] = arrived
            yield from self._send(self.ssd, carrier, self.inputs.expert_bytes, "ssd_bytes")
            host.arrived(key)
            del self.host_loads[key]
            arrived.succeed()
        else:
            host.bypassed(key)
            yield from self._send(self.ssd, carrier, self.inputs.expert_bytes, "ssd_bytes")

    def _promote(self, fetch: Fetch) -> None:
        if fetch.priority_class == DEMAND:
            return
        fetch.priority_class = DEMAND
        for link, transfer in fetch.stages:
            link.promote(transfer)

    # ------------------------------------------------------------------ decisions
    def _route(self, demand: int, key: int) -> str:
        """fetch or cpu for one miss (see moesim.policies.miss for the estimate)."""
        inputs = self.inputs
        policy = self.miss
        if policy != "best":
            return policy
        now, h = self.env.now, self.horizon
        ready = now
        in_host = self.host is None or self.host.status(key) == RESIDENT
        if not in_host:
            ready = max(now, h["ssd"]) + inputs.ssd.duration_s(inputs.expert_bytes, inputs.prefetch.chunk_bytes)
        h2d, d2h = inputs.h2d, inputs.d2h or inputs.h2d
        fetch_arrival = max(ready, h["h2d"]) + h2d.duration_s(inputs.expert_bytes, inputs.prefetch.chunk_bytes)
        fetch_done = fetch_arrival + float(inputs.expert_gpu_s[demand])
        act = int(inputs.activation_bytes[demand])
        d2h_key = "d2h" if inputs.d2h is not None else "h2d"
        sent = max(now, h[d2h_key]) + d2h.duration_s(act)
        computed = max(sent, h["cpu"], ready) + float(inputs.expert_cpu_s[demand])
        h2d_after_send = h["h2d"] if d2h_key == "d2h" else sent
        returned = max(computed, h2d_after_send) + h2d.duration_s(act)
        route = miss_policy.choose(policy, fetch_done, returned)
        if not in_host:
            h["ssd"] = ready
        if route == miss_policy.FETCH:
            h["h2d"] = fetch_arrival
        else:
            h[d2h_key] = sent
            h["cpu"] = computed
            h["h2d"] = returned
        return route

    def issue_prefetches(self, step: int, layer: int) -> None:
        proposal = self.predictor.propose(step, layer)
        if proposal is None:
            return
        target_layer, ids = proposal
        cache = self.cache
        # A prediction never evicts its own members: loading one predicted expert must not push out
        # another that is already resident.
        predicted = {target_layer * self.inputs.num_experts + int(e) for e in ids.tolist()}
        for expert in ids.tolist():
            key = target_layer * self.inputs.num_experts + int(expert)
            if cache.status(key) != ABSENT or not cache.can_take(key, predicted):
                continue
            fetch = self._new_fetch(key, PREFETCH, cached=True)
            self._evicted(cache.reserve(key, fetch, predicted))
            self.prefetched_unused.add(key)
            self._count("prefetches_issued")
            self._start_fetch(fetch, None)

    def _used(self, key: int) -> None:
        if key in self.prefetched_unused:
            self.prefetched_unused.discard(key)
            self._count("useful_prefetches")

    def _evicted(self, keys: list[int]) -> None:
        for key in keys:
            if key in self.prefetched_unused:
                self.prefetched_unused.discard(key)
                self._count("wasted_prefetches")


def run_des(inputs: SimInputs) -> Result:
    return DesEngine(inputs).run()
