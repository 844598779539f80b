"""Eviction policies in step form: an expert cache driven one request or one group at a time.

:class:`ExpertCache` is the shared mechanism, written once (libCacheSim's ``cache_get_base``):
hit -> touch; miss -> evict while full -> insert, never evicting a pinned key (the group being
served, transfers in flight). A policy supplies only its decision hooks and is registered by name::

    @register_eviction("lru")
    class LRU(EvictionPolicy): ...

    cache = ExpertCache(capacity_experts=64, policy="sch", params={"segment": 16}, future=stream)
    hits = cache.request_group([3, 17, 42, 5])        # pinned accounting: one MoE layer's lookup

Semantics equal the kernels' (:mod:`moesim.kernels.cache_common`): ``request_group`` is pinned
accounting, ``request`` per-request accounting, both with cold misses counted as misses; the hit
sequences are identical (tests/test_eviction_policies.py). Belady and SCH read the future: they take
the request stream at construction and must then be driven in exactly that order (``insert``
without a request, e.g. a prefetch, is allowed at any point).

Costs: LRU and FIFO O(1) per request (ordered dicts; a victim search skips at most the pinned
keys); LFU, Belady and SCH O(log n) amortised (heaps with lazy invalidation).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from moesim.errors import ConfigError
from moesim.policies.registry import Registry

if TYPE_CHECKING:
    from moesim.metrics.hit_curve import RequestStream

EVICTION: Registry[type[EvictionPolicy]] = Registry("eviction policy")
register_eviction = EVICTION.register

_NO_PINS: frozenset[int] = frozenset()


# ---------------------------------------------------------------------- parameters
@dataclass(frozen=True, kw_only=True)
class NoParams:
    """Parameters of a policy that has none (LRU, LFU, FIFO, Belady)."""


@dataclass(frozen=True, kw_only=True)
class SCHParams:
    """SCH: ``segment`` = window length in tokens (>= 1), the current token included."""

    segment: int

    def __post_init__(self) -> None:
        value = self.segment
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(
                f"eviction_params.segment: expected SCH's window length in tokens, an integer >= 1 "
                f"such as 16, got {value!r}"
            )


# ---------------------------------------------------------------------- the future
class _Future:
    """Cursor over the request stream a future-aware policy was built with."""

    def __init__(self, stream: RequestStream):
        self.keys = np.asarray(stream.keys).tolist()
        self.group_offsets = np.asarray(stream.group_offsets).tolist()
        self.group_token = np.asarray(stream.group_token).tolist()
        seq_group_offsets = np.asarray(stream.seq_group_offsets)
        self.group_seq = np.repeat(np.arange(len(seq_group_offsets) - 1), np.diff(seq_group_offsets)).tolist()
        self.cursor = 0  # index of the next request to serve
        self.group = -1  # group of the request being served

    def begin(self, key: int) -> bool:
        """Check ``key`` is the next request of the stream; True if it starts a new group."""
        if self.cursor >= len(self.keys):
            raise ConfigError(
                f"eviction policy: request for key {key} after the end of the future stream "
                f"({len(self.keys)} requests); build the policy with the stream you will drive"
            )
        expected = self.keys[self.cursor]
        if key != expected:
            raise ConfigError(
                f"eviction policy: request {self.cursor} is for key {key} but the future stream has key "
                f"{expected} there; drive the cache in exactly the order of the stream it was built with"
            )
        new_group = self.group < 0 or self.cursor >= self.group_offsets[self.group + 1]
        if new_group:
            self.group += 1
            while self.cursor >= self.group_offsets[self.group + 1]:  # skip empty groups
                self.group += 1
        return new_group


# ---------------------------------------------------------------------- hooks
class EvictionPolicy:
    """Decision hooks of an eviction policy; :class:`ExpertCache` runs the mechanism.

    Call order for a request of ``key``: :meth:`begin_request`; on a miss :meth:`victim` /
    :meth:`on_evict` while the cache is full, then :meth:`on_insert`; finally :meth:`on_served`.
    A load without a request (prefetch) calls only the eviction hooks and :meth:`on_insert`.
    """

    Params: ClassVar[type] = NoParams
    needs_future: ClassVar[bool] = False
    has_kernel: ClassVar[bool] = True  # a hit-curve kernel computes the same hits (moesim.kernels)
    name: ClassVar[str] = ""

    def __init__(self, params: Any = None, future: RequestStream | None = None):
        self.params = params if params is not None else self.Params()
        self.clock = 0  # requests served so far

    def begin_request(self, key: int) -> None:
        self.clock += 1

    def on_insert(self, key: int) -> None:
        raise NotImplementedError

    def on_served(self, key: int) -> None:
        raise NotImplementedError

    def on_evict(self, key: int) -> None:
        raise NotImplementedError

    def on_bypassed(self, key: int) -> None:
        """A request served without ``key`` entering the cache (run on the CPU, or fetched into a
        transient buffer because every slot was pinned). It still counts as a request: LFU counts
        it, Belady/SCH advance through the future. Default: as :meth:`on_served`, which leaves a
        non-resident key's residency alone."""
        self.on_served(key)

    def victim(self, pinned: Collection[int]) -> int | None:
        """The resident to evict, never one in ``pinned``; None if every resident is pinned."""
        raise NotImplementedError


class _OrderedPolicy(EvictionPolicy):
    """Residents in an ordered dict, victim = first unpinned from the old end (LRU, FIFO)."""

    def __init__(self, params: Any = None, future: RequestStream | None = None):
        super().__init__(params, future)
        self._order: OrderedDict[int, None] = OrderedDict()

    def on_insert(self, key: int) -> None:
        self._order[key] = None

    def on_evict(self, key: int) -> None:
        del self._order[key]

    def on_bypassed(self, key: int) -> None:
        pass  # recency and insertion order concern residents only

    def victim(self, pinned: Collection[int]) -> int | None:
        for key in self._order:
            if key not in pinned:
                return key
        return None


@register_eviction("lru")
class LRU(_OrderedPolicy):
    """Least recently used: a request makes its key the most recent (a group in list order)."""

    def on_served(self, key: int) -> None:
        self._order.move_to_end(key)


@register_eviction("fifo")
class FIFO(_OrderedPolicy):
    """First in, first out: the earliest inserted goes; hits do not refresh."""

    def on_served(self, key: int) -> None:
        pass


class _HeapPolicy(EvictionPolicy):
    """Residents ranked by a priority tuple (smallest evicted) in a heap with lazy invalidation."""

    def __init__(self, params: Any = None, future: RequestStream | None = None):
        super().__init__(params, future)
        self._resident: dict[int, tuple] = {}  # key -> current priority
        self._heap: list[tuple] = []

    def priority(self, key: int) -> tuple:
        raise NotImplementedError

    def _refresh(self, key: int) -> None:
        if key in self._resident:
            rank = self.priority(key)
            self._resident[key] = rank
            heapq.heappush(self._heap, (rank, key))
            if len(self._heap) > 4 * len(self._resident) + 64:
                self._heap = [(rank, k) for k, rank in self._resident.items()]
                heapq.heapify(self._heap)

    def on_insert(self, key: int) -> None:
        self._resident[key] = ()
        self._refresh(key)

    def on_evict(self, key: int) -> None:
        del self._resident[key]

    def victim(self, pinned: Collection[int]) -> int | None:
        heap, resident = self._heap, self._resident
        skipped = []
        found = None
        while heap:
            rank, key = heap[0]
            if resident.get(key) != rank:
                heapq.heappop(heap)  # stale entry
            elif key in pinned:
                skipped.append(heapq.heappop(heap))
            else:
                found = key
                break
        for entry in skipped:
            heapq.heappush(heap, entry)
        return found


@register_eviction("lfu")
class LFU(_HeapPolicy):
    """Perfect LFU: fewest requests since the start (kept across evictions), ties to the older
    last request."""

    def __init__(self, params: Any = None, future: RequestStream | None = None):
        super().__init__(params, future)
        self._count: dict[int, int] = {}
        self._last: dict[int, int] = {}

    def priority(self, key: int) -> tuple:
        return (self._count.get(key, 0), self._last.get(key, 0))

    def on_insert(self, key: int) -> None:
        self._last.setdefault(key, self.clock)
        super().on_insert(key)

    def on_served(self, key: int) -> None:
        self._count[key] = self._count.get(key, 0) + 1
        self._last[key] = self.clock
        self._refresh(key)


class _FuturePolicy(_HeapPolicy):
    needs_future = True

    def __init__(self, params: Any = None, future: RequestStream | None = None):
        super().__init__(params, future)
        if future is None:
            raise ConfigError(
                f"eviction policy '{self.name}' reads the future: pass future=RequestStream(...) with "
                f"the requests the cache will serve, in order"
            )
        self.future = _Future(future)


@register_eviction("belady")
class Belady(_FuturePolicy):
    """Belady's MIN: evict the key whose next request is farthest away (never-again keys first)."""

    def __init__(self, params: Any = None, future: RequestStream | None = None):
        super().__init__(params, future)
        self._occurrences: dict[int, list[int]] = {}
        for index, key in enumerate(self.future.keys):
            self._occurrences.setdefault(key, []).append(index)
        self._next: dict[int, int] = {}

    def _next_from(self, key: int, position: int) -> int:
        occurrences = self._occurrences.get(key, [])
        i = bisect_left(occurrences, position)
        return occurrences[i] if i < len(occurrences) else len(self.future.keys) + 1 + key

    def priority(self, key: int) -> tuple:
        return (-self._next[key],)

    def begin_request(self, key: int) -> None:
        super().begin_request(key)
        self.future.begin(key)

    def on_insert(self, key: int) -> None:
        self._next[key] = self._next_from(key, self.future.cursor)
        super().on_insert(key)

    def on_served(self, key: int) -> None:
        self.future.cursor += 1
        self._next[key] = self._next_from(key, self.future.cursor)
        self._refresh(key)


@register_eviction("sch")
class SCH(_FuturePolicy):
    """Segment cache (Liang et al. 2025, spec 3.2): evict the key with the fewest requests still
    to come in the window of ``segment`` tokens starting at the current one (served requests do
    not count; the window stops at the end of the sequence), ties to the least recent."""

    Params = SCHParams

    def __init__(self, params: Any = None, future: RequestStream | None = None):
        super().__init__(params, future)
        self._window: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._window_end = 0  # first group not yet counted in the window

    def priority(self, key: int) -> tuple:
        return (self._window.get(key, 0), self._last.get(key, 0))

    def begin_request(self, key: int) -> None:
        super().begin_request(key)
        future = self.future
        if future.begin(key):
            g = future.group
            seq, limit = future.group_seq[g], future.group_token[g] + self.params.segment
            # Groups before g that were never counted are empty (or end a sequence): skip them.
            end = max(self._window_end, g)
            while end < len(future.group_token) and future.group_seq[end] == seq and future.group_token[end] < limit:
                for y in future.keys[future.group_offsets[end] : future.group_offsets[end + 1]]:
                    self._window[y] = self._window.get(y, 0) + 1
                    self._refresh(y)
                end += 1
            self._window_end = end

    def on_insert(self, key: int) -> None:
        self._last.setdefault(key, self.clock)
        super().on_insert(key)

    def on_served(self, key: int) -> None:
        self.future.cursor += 1
        self._window[key] = self._window.get(key, 0) - 1
        self._last[key] = self.clock
        self._refresh(key)


@dataclass(frozen=True, eq=False)
class ActivationFeed:
    """What the activation-aware policy reads besides the request stream.

    ``request_tokens`` int64[N]: how many tokens of the batch chose each request's expert;
    ``release_offsets`` int64[G+1] with ``release_keys``/``release_counts``: activation counts to
    drop before each group, those of sequences that left the batch before it.
    """

    stream: RequestStream
    request_tokens: np.ndarray
    release_offsets: np.ndarray
    release_keys: np.ndarray
    release_counts: np.ndarray


@register_eviction("activation", aliases=("moe-infinity",))
class ActivationAware(_FuturePolicy):
    """Activation-aware caching in the spirit of MoE-Infinity (Xue et al. 2024, arXiv 2401.14361):
    evict the expert the sequences being served have activated least (their expert activation
    matrices summed: tokens routed to it since each sequence started), ties to the least recent.
    A sequence's activations stop counting when it leaves the batch. Simulator only: it needs the
    batch composition, so the simulator builds its :class:`ActivationFeed`."""

    has_kernel = False

    def __init__(self, params: Any = None, future: Any = None):
        if not isinstance(future, ActivationFeed):
            raise ConfigError(
                "eviction policy 'activation' needs the batch's activations (an ActivationFeed); "
                "it is available in the simulator, not for hit curves"
            )
        super().__init__(params, future.stream)
        self._tokens = np.asarray(future.request_tokens).tolist()
        self._release_offsets = np.asarray(future.release_offsets).tolist()
        self._release_keys = np.asarray(future.release_keys).tolist()
        self._release_counts = np.asarray(future.release_counts).tolist()
        self._released_through = -1  # last group whose releases were applied
        self._count: dict[int, int] = {}
        self._last: dict[int, int] = {}

    def priority(self, key: int) -> tuple:
        return (self._count.get(key, 0), self._last.get(key, 0))

    def begin_request(self, key: int) -> None:
        super().begin_request(key)
        if self.future.begin(key):
            offsets = self._release_offsets
            for g in range(self._released_through + 1, self.future.group + 1):
                for i in range(offsets[g], offsets[g + 1]):
                    y = self._release_keys[i]
                    self._count[y] = self._count.get(y, 0) - self._release_counts[i]
                    self._refresh(y)
            self._released_through = self.future.group

    def on_insert(self, key: int) -> None:
        self._last.setdefault(key, self.clock)
        super().on_insert(key)

    def on_served(self, key: int) -> None:
        tokens = self._tokens[self.future.cursor]
        self.future.cursor += 1
        self._count[key] = self._count.get(key, 0) + tokens
        self._last[key] = self.clock
        self._refresh(key)


@register_eviction("static")
class Static(EvictionPolicy):
    """Never evicts: the cache keeps what it was preloaded with (static placement of popular
    experts, as in Fiddler or MoE-Lightning) or first filled with. Misses are served around it
    (fetched into a transient buffer, or run on the CPU). Simulator only; no hit-curve kernel."""

    has_kernel = False

    def __init__(self, params: Any = None, future: RequestStream | None = None):
        super().__init__(params, future)
        self._resident: set[int] = set()

    def on_insert(self, key: int) -> None:
        self._resident.add(key)

    def on_served(self, key: int) -> None:
        pass

    def on_evict(self, key: int) -> None:
        self._resident.discard(key)

    def victim(self, pinned: Collection[int]) -> int | None:
        return None


for _name, _cls in EVICTION.items():
    _cls.name = _name


def kernel_policies() -> tuple[str, ...]:
    """Registered policies that also have a hit-curve kernel (the step form must equal it)."""
    return tuple(name for name, cls in EVICTION.items() if cls.has_kernel)


# ---------------------------------------------------------------------- construction
def make_policy(
    name: str,
    params: Mapping[str, Any] | Any | None = None,
    *,
    future: RequestStream | None = None,
    field: str = "eviction",
) -> EvictionPolicy:
    """A fresh policy by registered name; ``params`` is a mapping of its fields or its Params."""
    cls = EVICTION.get(name, field=field)
    if params is None or isinstance(params, Mapping):
        given = dict(params or {})
        valid = [f.name for f in fields(cls.Params)]
        unknown = sorted(set(given) - set(valid))
        if unknown:
            raise ConfigError(
                f"{field}_params: unknown field {unknown[0]!r} for eviction policy '{cls.name}'; "
                f"it takes {', '.join(valid) if valid else 'no parameters'}"
            )
        missing = [f for f in valid if f not in given]
        if missing:
            raise ConfigError(f"{field}_params.{missing[0]}: eviction policy '{cls.name}' needs it (e.g. 16)")
        params = cls.Params(**given)
    elif not isinstance(params, cls.Params):
        raise ConfigError(
            f"{field}_params: expected a mapping or {cls.Params.__name__} for '{cls.name}', got {type(params).__name__}"
        )
    return cls(params, future)


# ---------------------------------------------------------------------- the mechanism
class ExpertCache:
    """A cache of ``capacity_experts`` slots run by an eviction policy.

    Parameters
    ----------
    capacity_experts : int
        Slots (>= 1).
    policy : str or EvictionPolicy
        A registered name (see ``EVICTION.names()``) or a fresh policy object.
    params : mapping or Params, optional
        The policy's parameters when ``policy`` is a name (SCH: ``{"segment": m}``).
    future : RequestStream, optional
        The requests the cache will serve, in order (Belady, SCH).
    """

    def __init__(
        self,
        capacity_experts: int,
        policy: str | EvictionPolicy = "lru",
        *,
        params: Mapping[str, Any] | Any | None = None,
        future: RequestStream | None = None,
    ):
        whole = isinstance(capacity_experts, (int, np.integer)) and not isinstance(capacity_experts, bool)
        if not whole or capacity_experts < 1:
            raise ConfigError(f"capacity_experts: expected an integer >= 1, got {capacity_experts!r}")
        self.capacity_experts = int(capacity_experts)
        self.policy = policy if isinstance(policy, EvictionPolicy) else make_policy(policy, params, future=future)
        self._resident: set[int] = set()

    def __contains__(self, key: object) -> bool:
        return key in self._resident

    def __len__(self) -> int:
        return len(self._resident)

    @property
    def residents(self) -> frozenset[int]:
        return frozenset(self._resident)

    def _make_room(self, pinned: Collection[int]) -> list[int]:
        evicted = []
        while len(self._resident) >= self.capacity_experts:
            victim = self.policy.victim(pinned)
            if victim is None:
                raise ConfigError(
                    f"cache: all {self.capacity_experts} slots hold pinned experts, nothing can be evicted; "
                    f"capacity_experts must be at least the experts one group needs plus those in flight"
                )
            self._resident.remove(victim)
            self.policy.on_evict(victim)
            evicted.append(victim)
        return evicted

    def insert(self, key: int, *, pinned: Collection[int] = _NO_PINS) -> list[int]:
        """Load ``key`` without a request (e.g. a prefetch); returns the evicted keys."""
        if key in self._resident:
            return []
        evicted = self._make_room(pinned)
        self._resident.add(key)
        self.policy.on_insert(key)
        return evicted

    def discard(self, key: int) -> bool:
        """Drop ``key`` if resident (e.g. a cancelled load); True if it was."""
        if key not in self._resident:
            return False
        self._resident.remove(key)
        self.policy.on_evict(key)
        return True

    def request(self, key: int, *, pinned: Collection[int] = _NO_PINS) -> bool:
        """Serve one request (per-request accounting); True on a hit. A miss loads ``key``."""
        policy = self.policy
        policy.begin_request(key)
        hit = key in self._resident
        if not hit:
            self.insert(key, pinned=pinned)
        policy.on_served(key)
        return hit

    def request_group(self, keys: Sequence[int] | Iterable[int], *, pinned: Collection[int] = _NO_PINS) -> list[bool]:
        """Serve a group looked up together (pinned accounting): hits are judged before any load,
        misses are loaded in order without evicting any key of the group (or of ``pinned``)."""
        keys = list(keys)
        hits = [key in self._resident for key in keys]
        protect = set(keys).union(pinned)
        for key in keys:
            self.request(key, pinned=protect)
        return hits
