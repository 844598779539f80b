"""SimPy components: a compute unit and a transfer link. Each takes ``(env, ...)`` and is used
directly with SimPy (DESIGN section 6). Times are float seconds, sizes int bytes, rates bytes/s.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator
from dataclasses import dataclass, field

import simpy

DEMAND = 0
PREFETCH = 1


class ComputeUnit:
    """One FIFO server (the GPU stream, or the CPU taken as one server).

    Work items run one at a time in the order they request it. Besides busy time, the unit keeps
    *stall* time: gaps during which it had nothing to run, each charged to the reason the next item
    was late (``"fetch"``: waiting for a transfer; ``"cpu"``: waiting for a CPU result).
    """

    def __init__(self, env: simpy.Environment, name: str):
        self.env = env
        self.name = name
        self.resource = simpy.Resource(env, capacity=1)
        self.busy_s = 0.0
        self.busy_by_kind_s: dict[str, float] = {}
        self.stall_by_reason_s: dict[str, float] = {}
        self.last_end_s = 0.0

    def run(self, duration_s: float, kind: str, waited_on: str | None = None) -> Generator:
        """Occupy the unit for ``duration_s``; ``waited_on`` labels the gap before it, if any."""
        with self.resource.request() as request:
            yield request
            start = self.env.now
            gap = start - self.last_end_s
            if gap > 0 and waited_on is not None:
                self.stall_by_reason_s[waited_on] = self.stall_by_reason_s.get(waited_on, 0.0) + gap
            if duration_s > 0:
                yield self.env.timeout(duration_s)
            self.busy_s += duration_s
            self.busy_by_kind_s[kind] = self.busy_by_kind_s.get(kind, 0.0) + duration_s
            self.last_end_s = self.env.now

    def mark_idle_start(self) -> None:
        """Declare 'now' as the end of the last work (e.g. a step starts after an idle period)."""
        self.last_end_s = self.env.now


@dataclass
class Transfer:
    """One transfer on a link; ``priority_class`` may be raised to DEMAND while it waits."""

    num_bytes: int
    priority_class: int
    order: int
    label: str = ""
    started: bool = False
    done: simpy.Event | None = field(default=None, repr=False)
    promoted: simpy.Event | None = field(default=None, repr=False)


class Link:
    """A host<->GPU, SSD or similar link: ``latency_s + bytes / bandwidth_bps`` per transfer.

    ``channels`` transfers may run at once; with more than one, concurrent transfers share the
    bandwidth equally (processor sharing), each paying its own latency first. Waiting transfers are
    served demand first, then prefetch, each class in issue order. With ``chunk_bytes`` a transfer
    is split into chunks (each a separate copy paying ``latency_s``) and a started prefetch yields to
    a waiting demand transfer at the next chunk boundary.
    """

    def __init__(
        self,
        env: simpy.Environment,
        name: str,
        *,
        bandwidth_bps: float,
        latency_s: float,
        channels: int = 1,
        chunk_bytes: int | None = None,
    ):
        self.env = env
        self.name = name
        self.bandwidth_bps = float(bandwidth_bps)
        self.latency_s = float(latency_s)
        self.channels = int(channels)
        self.chunk_bytes = int(chunk_bytes) if chunk_bytes else None
        self.slots = simpy.PriorityResource(env, capacity=self.channels)
        self.busy_s = 0.0  # time with at least one transfer in progress
        self.bytes_moved = 0
        self._active = 0
        self._busy_since = 0.0
        self._order = itertools.count()
        self._sharing = _BandwidthShare(env, self.bandwidth_bps) if self.channels > 1 else None

    def busy_time_s(self) -> float:
        """Busy time so far, counting a transfer still in progress up to now."""
        return self.busy_s + (self.env.now - self._busy_since if self._active else 0.0)

    def duration_s(self, num_bytes: int) -> float:
        """Time one transfer of ``num_bytes`` takes on an idle link (all chunks)."""
        if num_bytes <= 0:
            return 0.0
        if self.chunk_bytes is None:
            return self.latency_s + num_bytes / self.bandwidth_bps
        full, rest = divmod(num_bytes, self.chunk_bytes)
        chunks = full + (1 if rest else 0)
        return chunks * self.latency_s + num_bytes / self.bandwidth_bps

    def new_transfer(self, num_bytes: int, priority_class: int, label: str = "") -> Transfer:
        return Transfer(
            int(num_bytes), priority_class, next(self._order), label,
            done=self.env.event(), promoted=self.env.event(),
        )

    def promote(self, transfer: Transfer) -> None:
        """Give a prefetch demand priority: a waiting request is re-queued among the demands (in
        promotion order); a started one keeps its slot and requests its later chunks as demand."""
        if transfer.priority_class != DEMAND:
            transfer.priority_class = DEMAND
            transfer.order = next(self._order)
            if not transfer.promoted.triggered:
                transfer.promoted.succeed()

    def send(self, transfer: Transfer) -> Generator:
        """Carry out ``transfer``; its ``done`` event fires when the last byte has arrived."""
        remaining = transfer.num_bytes
        chunk = self.chunk_bytes or max(remaining, 1)
        while True:
            size = min(chunk, remaining)
            request = self.slots.request(priority=(transfer.priority_class, transfer.order))
            if transfer.priority_class != DEMAND:
                yield request | transfer.promoted
                if not request.triggered:  # promoted while waiting: re-queue as a demand
                    request.cancel()
                    request = self.slots.request(priority=(transfer.priority_class, transfer.order))
                    yield request
            else:
                yield request
            transfer.started = True
            if self._active == 0:
                self._busy_since = self.env.now
            self._active += 1
            if self._sharing is None:
                yield self.env.timeout(self.latency_s + size / self.bandwidth_bps)
            else:
                if self.latency_s > 0:
                    yield self.env.timeout(self.latency_s)
                yield from self._sharing.serve(size)
            self._active -= 1
            if self._active == 0:
                self.busy_s += self.env.now - self._busy_since
            self.bytes_moved += size
            self.slots.release(request)
            remaining -= size
            if remaining <= 0:
                break
        transfer.done.succeed()


class _BandwidthShare:
    """Processor sharing of one bandwidth among the transfers currently moving bytes."""

    def __init__(self, env: simpy.Environment, bandwidth_bps: float):
        self.env = env
        self.bandwidth_bps = bandwidth_bps
        self.active: dict[int, list] = {}  # id -> [remaining_bytes, size_bytes, event]
        self._ids = itertools.count()
        self._last_s = 0.0
        self._wakeup: simpy.Event | None = None
        self._controller = env.process(self._control())

    def _advance(self) -> None:
        now = self.env.now
        if self.active:
            served = (now - self._last_s) * self.bandwidth_bps / len(self.active)
            for entry in self.active.values():
                entry[0] -= served
        self._last_s = now

    def serve(self, num_bytes: int) -> Generator:
        self._advance()
        done = self.env.event()
        self.active[next(self._ids)] = [float(num_bytes), float(num_bytes), done]
        self._poke()
        yield done

    def _poke(self) -> None:
        if self._wakeup is not None and not self._wakeup.triggered:
            self._wakeup.succeed()

    def _control(self) -> Generator:
        while True:
            self._wakeup = self.env.event()
            if not self.active:
                yield self._wakeup
                continue
            share = self.bandwidth_bps / len(self.active)
            key = min(self.active, key=lambda k: (self.active[k][0], k))
            timer = self.env.timeout(max(self.active[key][0], 0.0) / share)
            yield timer | self._wakeup
            self._advance()
            if timer.triggered:
                self.active[key][0] = 0.0
            # Transfers whose remainder is rounding noise finish together with the first.
            finished = [k for k, (rem, size, _) in self.active.items() if rem <= 1e-9 * size]
            for k in finished:
                event = self.active.pop(k)[2]
                event.succeed()

